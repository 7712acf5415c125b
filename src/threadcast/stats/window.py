"""The window bolt: tumbling event-time windows per forum (fields grouping by forum).

A window `[start, start + window)` of a forum collects the parse bolt's facts whose event time
falls in it: posts and votes by event id (a second copy of an event id is held but not counted),
delivery latencies by event id. It closes once the task's watermark (`watermark.Watermark`)
reaches its end; then its summary is emitted to the sink, anchored to every tuple it held, and
those tuples are acked. So a spout tuple is done only when its window was written: a crash
before that replays it.

- `too_late` records (beyond the lateness in their partition) are acked and counted, except a
  copy of an event the open window already holds (a replay after a timeout), which is held.
- A record on time by its partition but whose window the task already closed (only after an
  idle advance, or when replayed after a failure) goes into a fresh window that closes at the
  next tick: the sink writes it only if that window was never written, else counts it too late.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from threadcast.stats import metrics
from threadcast.stats.parse import WATERMARK_STREAM
from threadcast.stats.summary import Fact, summarize
from threadcast.stats.topology import Bolt, Collector, TopologyContext, Tuple
from threadcast.stats.watermark import Watermark

SUMMARY_FIELDS = ("forum", "window_start", "summary")


@dataclass(eq=False)
class OpenWindow:
    forum: str
    start: int
    events: dict[str, Fact] = field(default_factory=dict)
    latencies: dict[str, float] = field(default_factory=dict)
    held: list[Tuple] = field(default_factory=list)
    reopened: bool = False
    """Opened after the task's watermark had passed its end: closes at the next tick."""


class WindowBolt(Bolt):
    outputs = {"default": SUMMARY_FIELDS}

    def prepare(self, conf: Mapping[str, Any], context: TopologyContext, collector: Collector) -> None:
        super().prepare(conf, context, collector)
        self.window = int(conf["window"])
        self.clock = Watermark(conf.get("sources", ()), float(conf["idle_timeout"]), time.monotonic())
        self.open: dict[tuple[str, int], OpenWindow] = {}
        self._ends: list[tuple[int, str, int]] = []
        """(end, forum, start) of the windows that close by the watermark."""
        self._watermark = metrics.WATERMARK.labels(str(context.task))

    def process(self, tup: Tuple) -> None:
        now = time.monotonic()
        if tup.stream == WATERMARK_STREAM:
            source, mark = tup.values
            self.collector.ack(tup)
            if self.clock.observe(source, mark, now) and self._may_close(mark):
                self._close_due(now)
            return
        forum, kind, event_id, thread_id, author, reply, ts, latency, source, mark, status = tup.values
        moved = self.clock.observe(source, mark, now)
        start = math.floor(ts / self.window) * self.window
        window = self.open.get((forum, start))
        if status == "too_late":
            if window is not None and _holds(window, kind, event_id):
                window.held.append(tup)
            else:
                metrics.DROPPED.labels("too_late").inc()
                self.collector.ack(tup)
        else:
            if window is None:
                window = self._open(forum, start, now)
            _add(window, tup, kind, event_id, thread_id, author, reply, latency, status == "late")
        if moved and self._may_close(mark):
            self._close_due(now)

    def tick(self, now: float) -> None:
        self._close_due(time.monotonic())
        for window in [w for w in self.open.values() if w.reopened]:
            self._close(window)

    def flush(self) -> None:
        for window in sorted(self.open.values(), key=lambda w: (w.start, w.forum)):
            self._close(window)
        self._ends.clear()

    def _open(self, forum: str, start: int, now: float) -> OpenWindow:
        window = self.open[(forum, start)] = OpenWindow(forum, start)
        if start + self.window <= self.clock.current(now):
            window.reopened = True
        else:
            heapq.heappush(self._ends, (start + self.window, forum, start))
        return window

    def _may_close(self, mark: float) -> bool:
        """The watermark is the lowest source mark: it can pass the next end only when the mark
        that just moved has (idle sources drop out on ticks)."""
        return bool(self._ends) and mark >= self._ends[0][0]

    def _close_due(self, now: float) -> None:
        watermark = self.clock.current(now)
        self._watermark.set(watermark if math.isfinite(watermark) else 0)
        ends = self._ends
        while ends and ends[0][0] <= watermark:
            _end, forum, start = heapq.heappop(ends)
            window = self.open.get((forum, start))
            if window is not None and not window.reopened:
                self._close(window)

    def _close(self, window: OpenWindow) -> None:
        del self.open[(window.forum, window.start)]
        summary = summarize(window.forum, window.start, self.window, window.events, window.latencies)
        self.collector.emit([window.forum, window.start, summary], anchors=window.held)
        for tup in window.held:
            self.collector.ack(tup)


def _holds(window: OpenWindow, kind: str, event_id: str) -> bool:
    return event_id in (window.latencies if kind == "delivery" else window.events)


def _add(
    window: OpenWindow, tup: Tuple, kind: str, event_id: str, thread_id: int, author: str, reply: bool,
    latency: float, late: bool,
) -> None:  # fmt: skip
    window.held.append(tup)
    if _holds(window, kind, event_id):
        metrics.DUPLICATES.inc()
    elif kind == "delivery":
        window.latencies[event_id] = latency
    else:
        window.events[event_id] = Fact(kind, thread_id, author, reply, late)
        if late:
            metrics.LATE.inc()
