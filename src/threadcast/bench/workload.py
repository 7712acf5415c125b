"""Who subscribes to which thread, over which transport, and which thread each post goes to.

Popularity follows Zipf's law: the thread of rank k (1-based) has weight 1 / k**s. The same
weights choose a subscriber's thread and a post's thread, so the popular threads have both
the most readers and the most comments, as on a real site. Everything is drawn from a seeded
generator: the same options give the same workload in every scenario.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SubscriberSpec:
    """One subscriber: its index (unique in the run), transport and thread (an index into the
    scenario's thread list)."""

    index: int
    transport: str
    thread: int


def zipf_weights(count: int, exponent: float) -> list[float]:
    """Normalised weights of `count` ranks; exponent 0 is uniform."""
    raw = [1.0 / rank**exponent for rank in range(1, count + 1)]
    total = sum(raw)
    return [weight / total for weight in raw]


def exact_counts(total: int, shares: Mapping[str, float]) -> dict[str, int]:
    """Split `total` by `shares` into whole numbers that add up to `total` (largest remainder)."""
    floors = {name: int(total * share) for name, share in shares.items()}
    remainders = sorted(shares, key=lambda name: total * shares[name] - floors[name], reverse=True)
    for name in remainders[: total - sum(floors.values())]:
        floors[name] += 1
    return floors


def plan_subscribers(
    count: int, threads: int, exponent: float, mix: Mapping[str, float], seed: int
) -> list[SubscriberSpec]:
    """`count` subscribers: transports in exactly the mix's proportions (shuffled), threads
    drawn by Zipf popularity."""
    rng = random.Random(seed)
    transports = [name for name, n in exact_counts(count, mix).items() for _ in range(n)]
    rng.shuffle(transports)
    chosen = rng.choices(range(threads), weights=zipf_weights(threads, exponent), k=count)
    return [
        SubscriberSpec(index, transport, thread) for index, (transport, thread) in enumerate(zip(transports, chosen))
    ]


def share_out(specs: Sequence[SubscriberSpec], processes: int) -> list[list[SubscriberSpec]]:
    """Deal the subscribers round-robin to `processes` client processes (none left empty)."""
    processes = min(processes, len(specs))
    return [list(specs[start::processes]) for start in range(processes)]


class ThreadChooser:
    """The thread (index) of each successive post, by the same Zipf weights."""

    def __init__(self, threads: int, exponent: float, seed: int) -> None:
        self._cumulative = list(itertools.accumulate(zipf_weights(threads, exponent)))
        self._rng = random.Random(seed + 1)

    def next(self) -> int:
        point = self._rng.random() * self._cumulative[-1]
        return min(bisect.bisect_right(self._cumulative, point), len(self._cumulative) - 1)
