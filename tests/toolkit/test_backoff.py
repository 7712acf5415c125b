"""Exponential backoff with full jitter."""

from __future__ import annotations

import random

from threadcast.toolkit import Backoff


class Highest(random.Random):
    """Always draws the top of the range."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_the_ceiling_doubles_per_attempt_up_to_the_cap():
    backoff = Backoff(base=0.5, cap=3.0, rng=Highest())
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_delays_are_drawn_over_the_whole_range():
    backoff = Backoff(base=1.0, cap=100.0, rng=random.Random(7))
    delays = [backoff.delay(4) for _ in range(500)]
    assert all(0.0 <= d <= 8.0 for d in delays)
    assert min(delays) < 1.0 and max(delays) > 7.0  # full jitter, not "ceiling +- a little"
