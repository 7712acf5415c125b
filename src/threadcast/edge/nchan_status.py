"""Nchan's figures (`nchan_stub_status` on each edge) as Prometheus metrics of the publisher.

The stub status is plain text, one `name: value` line per figure:

    total published messages: 12
    stored messages: 9
    shared memory used: 16K
    channels: 3
    subscribers: 41
    ...

`NchanStatusCollector` fetches it from every Nchan edge on `refresh()` (async, so call it in
the `/metrics` handler just before rendering) and yields, per edge (label `edge`):
`threadcast_nchan_up`, a counter for each `total ...` figure (`threadcast_nchan_published_messages_total`,
...) and a gauge for every other one (`threadcast_nchan_subscribers`,
`threadcast_nchan_shared_memory_used_bytes`, ...). Figures a version of Nchan does not report
are simply absent.

    collector = NchanStatusCollector.for_edges(settings.edge_url)
    registry.register(collector)
    ...
    await collector.refresh()
    body = generate_latest(registry)
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import httpx
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from threadcast.edge.nginx_config import STUB_STATUS_PATH, nchan_edges

_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
_LINE = re.compile(r"^\s*([a-z][a-z ]*[a-z])\s*:\s*([0-9]+(?:\.[0-9]+)?)\s*([KMG]?)\s*$", re.IGNORECASE)


def parse_stub_status(text: str) -> dict[str, float]:
    """`{"total published messages": 12.0, "shared memory used": 16384.0, ...}`: every numeric
    figure, sizes (`16K`) in bytes. Lines without a number (the version) are left out."""
    figures: dict[str, float] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match:
            name, number, unit = match.groups()
            figures[name.lower()] = float(number) * _SIZE_UNITS[unit.upper()]
    return figures


def metric_name(figure: str) -> str:
    """`total published messages` -> `threadcast_nchan_published_messages` (a counter, shown
    with `_total`); `shared memory used` -> `threadcast_nchan_shared_memory_used_bytes`."""
    base = re.sub(r"[^a-z0-9]+", "_", figure.removeprefix("total ")).strip("_")
    if "memory" in base:
        base += "_bytes"
    return f"threadcast_nchan_{base}"


class NchanStatusCollector(Collector):
    def __init__(self, status_urls: dict[str, str], timeout: float = 2.0) -> None:
        """`status_urls`: edge label -> URL of its stub status location."""
        self.status_urls = status_urls
        self.timeout = timeout
        self._figures: dict[str, dict[str, float] | None] = {}

    @classmethod
    def for_edges(cls, edge_url: str) -> NchanStatusCollector:
        """One entry per Nchan edge of `THREADCAST_EDGE_URL` (other edges are skipped)."""
        return cls({base: base + STUB_STATUS_PATH for base in nchan_edges(edge_url)})

    async def refresh(self) -> None:
        """Fetch every edge's figures; an edge that does not answer is reported down."""
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            answers = await asyncio.gather(
                *(client.get(url) for url in self.status_urls.values()), return_exceptions=True
            )
        self._figures = {
            edge: parse_stub_status(answer.text)
            if isinstance(answer, httpx.Response) and answer.status_code == 200
            else None
            for edge, answer in zip(self.status_urls, answers)
        }

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("threadcast_nchan_up", "1 when the edge's Nchan stub status answered", labels=["edge"])
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for edge, figures in self._figures.items():
            up.add_metric([edge], 0.0 if figures is None else 1.0)
            for figure, value in (figures or {}).items():
                name = metric_name(figure)
                if name not in families:
                    kind = CounterMetricFamily if figure.startswith("total ") else GaugeMetricFamily
                    families[name] = kind(name, f"Nchan stub status: {figure}", labels=["edge"])
                families[name].add_metric([edge], value)
        yield up
        yield from families.values()
