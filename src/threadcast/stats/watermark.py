"""A window task's event-time watermark, from the watermarks of the log partitions it reads.

Each source (a partition of `events` or `deliveries`) reports its own watermark: its newest event
time minus the lateness (the parse bolt computes it). The task's watermark is the lowest among
the sources that moved in the last `idle_timeout` seconds (wall clock): a window closes only
when every active partition has gone past its end plus the lateness.

Idle advance: a source that did not move for `idle_timeout` seconds (or was never heard from)
is left out, so an empty or quiet partition does not hold every window open. When all sources
are idle, time moves on by the wall clock from the newest watermark: the watermark becomes the
highest source watermark plus the seconds since any source last moved, as if events had kept
arriving. So the last windows of a quiet site close about `lateness` seconds after their end,
plus `idle_timeout`. The watermark never goes back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


class Watermark:
    def __init__(self, sources: Iterable[str], idle_timeout: float, now: float) -> None:
        self.idle_timeout = idle_timeout
        self.marks: dict[str, float] = {source: -math.inf for source in sources}
        self.moved_at: dict[str, float] = {source: now for source in self.marks}
        self.last_move = now
        self.value = -math.inf

    def observe(self, source: str, mark: float, now: float) -> bool:
        """Take a source's watermark; True when it moved."""
        if mark <= self.marks.get(source, -math.inf):
            return False
        self.marks[source] = mark
        self.moved_at[source] = self.last_move = now
        return True

    def current(self, now: float) -> float:
        cutoff = now - self.idle_timeout
        active = [mark for source, mark in self.marks.items() if self.moved_at[source] > cutoff]
        if active:
            candidate = min(active)
        else:
            candidate = max(self.marks.values(), default=-math.inf) + (now - self.last_move)
        if candidate > self.value:
            self.value = candidate
        return self.value
