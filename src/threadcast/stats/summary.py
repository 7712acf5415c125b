"""What one forum's window adds up to: the rows of the `forum`, `threads` and `top_threads`
metrics, as plain JSON-able data (a window bolt emits it, a sink writes it).

Unique authors, top threads and latency percentiles come from Apache DataSketches sketches: HLL
(lg_k 12, about 1.6 % relative standard error), frequent items (exact up to 96 threads per window)
and KLL (k 1000: exact up to 1000 samples, 0.28 % normalized rank error beyond). The sketches are
fed when the window closes, in event-id order: arrival order differs between a run and a replay
(partitions interleave differently), and HLL's estimator and frequent items' purges depend on
the order of updates, so a fixed order makes a replay write the same bytes. KLL also flips coins
when it compacts, so a window with more latency samples than it keeps exactly may get slightly
different percentiles (within its rank error) from one run to the next. A percentile q is the
smallest sample with at least a fraction q of the samples at or below it (KLL's inclusive rank).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from datasketches import frequent_items_error_type, frequent_strings_sketch, hll_sketch, kll_doubles_sketch, tgt_hll_type

HLL_LG_K = 12
KLL_K = 1000
FREQUENT_LG_MAP = 7
TOP = 10
PERCENTILES = {"latency_p50_ms": 0.5, "latency_p90_ms": 0.9, "latency_p99_ms": 0.99}


@dataclass(frozen=True, slots=True)
class Fact:
    """One counted event of a window."""

    kind: str
    """post or vote"""
    thread_id: int
    author: str
    reply: bool
    late: bool


def summarize(
    forum: str, start: int, window: int, events: Mapping[str, Fact], latencies: Mapping[str, float]
) -> dict[str, Any]:
    """`{"forum": row, "threads": [rows], "top_threads": [rows]}`; timestamps as epoch seconds."""
    end = start + window
    threads: dict[int, list[int]] = {}
    authors: set[str] = set()
    posts = replies = votes = late = 0
    for event_id in sorted(events):
        fact = events[event_id]
        counts = threads.setdefault(fact.thread_id, [0, 0, 0])
        late += fact.late
        if fact.kind == "post":
            posts += 1
            counts[0] += 1
            authors.add(fact.author)
            if fact.reply:
                replies += 1
                counts[1] += 1
        else:
            votes += 1
            counts[2] += 1
    row = {
        "window_start": start,
        "window_end": end,
        "forum": forum,
        "posts": posts,
        "replies": replies,
        "votes": votes,
        "active_threads": len(threads),
        "unique_authors": unique_count(authors),
        "late_events": late,
        **latency_row([latencies[event_id] for event_id in sorted(latencies)]),
    }
    thread_rows = [
        {"window_start": start, "window_end": end, "forum": forum, "thread_id": thread,
         "posts": counts[0], "replies": counts[1], "votes": counts[2]}
        for thread, counts in sorted(threads.items())
    ]  # fmt: skip
    top = [
        {"window_start": start, "forum": forum, "rank": rank, "thread_id": thread, "posts": estimate}
        for rank, (thread, estimate) in enumerate(top_threads({t: c[0] for t, c in threads.items() if c[0]}), 1)
    ]
    return {"forum": row, "threads": thread_rows, "top_threads": top}


def unique_count(values: set[str]) -> int:
    sketch = hll_sketch(HLL_LG_K, tgt_hll_type.HLL_8)
    for value in sorted(values):
        sketch.update(value)
    return round(sketch.get_estimate())


def latency_row(samples: list[float]) -> dict[str, Any]:
    if not samples:
        return {"latency_count": 0, "latency_max_ms": None} | {name: None for name in PERCENTILES}
    sketch = kll_doubles_sketch(KLL_K)
    for sample in samples:
        sketch.update(sample)
    quantiles = {name: sketch.get_quantile(rank, True) for name, rank in PERCENTILES.items()}
    return {"latency_count": len(samples), **quantiles, "latency_max_ms": sketch.get_max_value()}


def top_threads(posts: Mapping[int, int], limit: int = TOP) -> list[tuple[int, int]]:
    """The heavy hitters among threads by posts: (thread id, estimated posts), most first,
    ties to the lower thread id."""
    sketch = frequent_strings_sketch(FREQUENT_LG_MAP)
    for thread, count in sorted(posts.items()):
        sketch.update(str(thread), count)
    found = [(int(item), int(estimate)) for item, estimate, _lower, _upper in
             sketch.get_frequent_items(frequent_items_error_type.NO_FALSE_POSITIVES)]  # fmt: skip
    return sorted(found, key=lambda entry: (-entry[1], entry[0]))[:limit]
