"""The parse bolt: decodes log records into facts for the window bolt, and keeps each log
partition's event-time clock.

Input: the log spout's `(topic, partition, offset, key, value)`, grouped by `(topic, partition)`,
so one task sees all of a partition, in offset order. For each record it knows the partition's
clock before it: the newest event time of the records before it (`high`). With `lateness` L:

- `too_late`: the record's window ended at or before `high - L` (the partition's watermark);
- `late`: it ended at or before `high`, but within the lateness;
- `on_time`: otherwise.

The status depends only on the partition's content, never on how partitions interleave or how
many tasks run, so a replay classifies every record the same way (see docs/stats.md for the one
exception after a crash).

Output, stream `default` (grouped by forum downstream): `PARSED_FIELDS`, one tuple per post,
vote (`vote.created`) and delivery report, anchored to the record. Each carries the watermark of
its partition after it. Stream `watermarks` (to every window task): `(source, watermark)` of
each partition whose clock moved, on every tick, so a window task hears from partitions that
carry none of its forums. Other event types only move the clock; undecodable records are
logged and counted. Both are acked at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec

from threadcast.events import decode_delivery, decode_event
from threadcast.stats import metrics
from threadcast.stats.topology import Bolt, Collector, TopologyContext, Tuple

PARSED_FIELDS = (
    "forum", "kind", "event_id", "thread_id", "author", "reply", "ts", "latency_ms", "source", "watermark", "status",
)  # fmt: skip
WATERMARK_FIELDS = ("source", "watermark")
WATERMARK_STREAM = "watermarks"
COUNTED_EVENTS = {"post.created": "post", "vote.created": "vote"}


def source_name(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


def window_end(ts: float, window: int) -> float:
    return (math.floor(ts / window) + 1) * window


class ParseBolt(Bolt):
    outputs = {"default": PARSED_FIELDS, WATERMARK_STREAM: WATERMARK_FIELDS}

    def prepare(self, conf: Mapping[str, Any], context: TopologyContext, collector: Collector) -> None:
        super().prepare(conf, context, collector)
        self.window = int(conf["window"])
        self.lateness = float(conf["lateness"])
        self.deliveries_topic = conf["deliveries_topic"]
        self.high: dict[str, float] = {}
        """source -> newest event time seen in it"""
        self._moved: set[str] = set()

    def process(self, tup: Tuple) -> None:
        topic, partition, _offset, _key, value = tup.values
        source = source_name(topic, partition)
        try:
            fact = self._decode(topic, value)
        except (msgspec.DecodeError, msgspec.ValidationError, KeyError, TypeError, ValueError) as exc:
            metrics.DROPPED.labels("undecodable").inc()
            self.collector.log(f"undecodable record {source}@{_offset}: {exc}", level="warn")
            self.collector.ack(tup)
            return
        ts = fact[6]
        before = self.high.get(source, -math.inf)
        if ts > before:
            self.high[source] = ts
            self._moved.add(source)
        if fact[1] is None:
            metrics.DROPPED.labels("unknown").inc()
        else:
            end = window_end(ts, self.window)
            status = "too_late" if end <= before - self.lateness else "late" if end <= before else "on_time"
            watermark = self.high[source] - self.lateness
            self.collector.emit([*fact, source, watermark, status], anchors=(tup,))
        self.collector.ack(tup)

    def tick(self, now: float) -> None:
        for source in sorted(self._moved):
            self.collector.emit([source, self.high[source] - self.lateness], stream=WATERMARK_STREAM)
        self._moved.clear()

    def _decode(self, topic: str, value: str) -> list[Any]:
        """(forum, kind, event_id, thread_id, author, reply, ts, latency_ms); kind None for an
        event that is not counted."""
        if topic == self.deliveries_topic:
            report = decode_delivery(value)
            latency = max(0.0, (report.published_ts - report.created_ts) * 1000.0)
            return [report.forum, "delivery", report.event_id, report.thread_id, "", False, report.created_ts, latency]
        event = decode_event(value)
        kind = COUNTED_EVENTS.get(event.type)
        author, reply = "", False
        if kind == "post":
            author = str(event.payload["author_name"])
            reply = event.payload.get("parent_id") is not None
        return [event.forum, kind, event.event_id, event.thread_id, author, reply, event.ts, 0.0]
