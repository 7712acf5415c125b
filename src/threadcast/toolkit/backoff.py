"""Retry delays: exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Backoff:
    """The delay before retry `n` is drawn uniformly from [0, min(cap, base * 2**(n-1))]
    ("full jitter": retries of many failed messages spread out instead of arriving together)."""

    base: float = 0.2
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0:
            raise ValueError("backoff base and cap must not be negative")

    def ceiling(self, attempt: int) -> float:
        """The longest delay after failed attempt number `attempt` (1-based)."""
        return min(self.cap, self.base * 2 ** max(0, attempt - 1))

    def delay(self, attempt: int) -> float:
        return self.rng.uniform(0.0, self.ceiling(attempt))
