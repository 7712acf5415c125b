"""The sink bolt: writes each closed window to the object store, then announces it on the push
edge, then acks it (which completes the trees of every record the window held).

A window whose `forum` object already exists is final (written before a crash, or before an
idle advance closed it a second time): the summary is dropped and its events counted too late.
With `overwrite` (a rebuild) it is written again. Writes are retried with backoff until they
succeed, holding the topology back meanwhile; a failed announcement is logged and counted (the
results are in the store; the page reads them there on its next load).

Conf: `store_url` and `store_root` (`open_object_store`), unless the runner shares a `store`
resource; `edge_urls` for publishing from a Storm worker, unless the runner shares an `edge`;
`publish` (default true); `overwrite` (default false); `windows` ([since, until) in epoch
seconds: write only the windows that start within, for a rebuild).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from threadcast.edge.publisher import EdgePublisher
from threadcast.stats import metrics
from threadcast.stats.results import WRITE_ORDER, ParquetWriter, live_message, object_key
from threadcast.stats.topology import Bolt, Collector, TopologyContext, Tuple
from threadcast.store.objects import ObjectStore, open_object_store
from threadcast.toolkit.backoff import Backoff

log = structlog.get_logger("threadcast.stats")

RETRY = Backoff(base=0.5, cap=30.0)


class SinkBolt(Bolt):
    outputs: dict[str, tuple[str, ...]] = {}

    async def prepare(self, conf: Mapping[str, Any], context: TopologyContext, collector: Collector) -> None:
        super().prepare(conf, context, collector)
        self._owned: list[Any] = []
        self.store: ObjectStore = context.resources.get("store") or self._own(
            open_object_store(conf.get("store_url", ""), Path(conf["store_root"]))
        )
        self.edge: EdgePublisher | None = None
        if conf.get("publish", True):
            self.edge = context.resources.get("edge") or self._edge_from(conf)
        self.overwrite = bool(conf.get("overwrite", False))
        self.windows: tuple[float, float] | None = tuple(conf["windows"]) if conf.get("windows") else None  # type: ignore[assignment]
        self.writer = ParquetWriter()
        for owned in self._owned:
            await owned.start()

    async def process(self, tup: Tuple) -> None:
        forum, start, summary = tup.values
        if self.windows is not None and not self.windows[0] <= start < self.windows[1]:
            self.collector.ack(tup)
            return
        if not self.overwrite and await self.store.exists(object_key("forum", forum, start)):
            row = summary["forum"]
            metrics.DROPPED.labels("too_late").inc(row["posts"] + row["votes"] + row["latency_count"])
            self.collector.ack(tup)
            return
        await self._write(forum, start, summary)
        metrics.WINDOWS_WRITTEN.inc()
        if self.edge is not None:
            await self._announce(summary)
        self.collector.ack(tup)

    async def cleanup(self) -> None:
        self.writer.close()
        for owned in self._owned:
            await owned.close()

    async def _write(self, forum: str, start: int, summary: dict[str, Any]) -> None:
        attempt = 0
        while True:
            try:
                for metric in WRITE_ORDER:
                    rows = [summary["forum"]] if metric == "forum" else summary[metric]
                    if rows:
                        data = await asyncio.to_thread(self.writer.parquet, metric, rows)
                        await self.store.put(object_key(metric, forum, start), data, "application/vnd.apache.parquet")
                return
            except Exception:
                attempt += 1
                metrics.WRITE_ERRORS.inc()
                log.exception("writing a stats window failed; retrying", forum=forum, window_start=start, attempt=attempt)
                await asyncio.sleep(RETRY.delay(attempt))

    async def _announce(self, summary: dict[str, Any]) -> None:
        assert self.edge is not None
        channel, message, message_id = live_message(summary)
        try:
            await self.edge.publish(channel, message, message_id=message_id)
        except Exception as exc:
            metrics.PUBLISH_ERRORS.inc()
            log.warning("publishing a stats window failed", channel=channel, error=repr(exc))

    def _own(self, resource: Any) -> Any:
        self._owned.append(resource)
        return resource

    def _edge_from(self, conf: Mapping[str, Any]) -> EdgePublisher | None:
        urls = conf.get("edge_urls")
        if not urls:
            return None
        from threadcast.edge.http_publisher import HttpEdgePublisher

        return self._own(HttpEdgePublisher(list(urls)))
