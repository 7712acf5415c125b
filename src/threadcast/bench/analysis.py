"""From raw records to figures: every receipt is matched to its post by the post id.

- expected: for each subscriber, the posts to its thread accepted while it was subscribed;
- received: the first receipt of an expected post. Its latency is receipt time - accepted time
  (the POST's response arrived), and also receipt time - sent time: Nchan fans a message out
  before it answers the publisher, so raw Nchan's latency from accepted is about 0 or below;
- lost: expected - received;
- duplicates: receipts of a post the same subscriber already had;
- unexpected: first receipts of posts not expected from that subscriber (accepted just before
  it (re)subscribed, or a post whose response never came back). Not errors, not counted as loss.

All times are `time.monotonic()` readings, one clock for every process on the machine (Linux).
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from threadcast.bench.poster import PosterResult
from threadcast.bench.subscribers import WorkerResult
from threadcast.bench.workload import SubscriberSpec

CDF_POINTS = 201


@dataclass
class Matched:
    expected: int = 0
    received: int = 0
    duplicates: int = 0
    unexpected: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    from_sent_ms: list[float] = field(default_factory=list)
    by_transport: dict[str, list[float]] = field(default_factory=dict)
    """Latencies from accepted, per transport."""
    expected_by_transport: Counter[str] = field(default_factory=Counter)
    received_by_transport: Counter[str] = field(default_factory=Counter)

    @property
    def lost(self) -> int:
        return self.expected - self.received

    def transports(self) -> dict[str, dict[str, int]]:
        """Expected, received and lost per transport."""
        return {
            name: {
                "expected": n,
                "received": self.received_by_transport[name],
                "lost": n - self.received_by_transport[name],
            }
            for name, n in self.expected_by_transport.items()
        }


def covered(intervals: Sequence[tuple[float, float | None]], at: float) -> bool:
    return any(start <= at and (end is None or at <= end) for start, end in intervals)


def match(
    specs: Sequence[SubscriberSpec],
    workers: Iterable[WorkerResult],
    poster: PosterResult,
    ignored: Collection[int] = (),
) -> Matched:
    """`ignored`: post ids sent before the measurement (the warm-up), left out altogether."""
    workers = list(workers)
    posts = {
        int(pid): (int(thread), accepted, sent)
        for pid, thread, accepted, sent in zip(poster.post_id, poster.thread, poster.accepted, poster.sent)
    }
    accepted_by_thread: dict[int, list[float]] = {}
    for thread, accepted, _ in posts.values():
        accepted_by_thread.setdefault(thread, []).append(accepted)
    for times in accepted_by_thread.values():
        times.sort()
    by_index = {spec.index: spec for spec in specs}
    intervals: dict[int, list[tuple[float, float | None]]] = {}
    for worker in workers:
        intervals.update(worker.intervals)

    result = Matched(by_transport={spec.transport: [] for spec in specs})
    for index, spans in intervals.items():
        spec = by_index[index]
        times = accepted_by_thread.get(spec.thread, [])
        for start, end in spans:
            expected = bisect.bisect_right(times, math.inf if end is None else end) - bisect.bisect_left(times, start)
            result.expected += expected
            result.expected_by_transport[spec.transport] += expected

    seen: set[tuple[int, int]] = set()
    for worker in workers:
        for index, post, at in zip(worker.receipt_subscriber, worker.receipt_post, worker.receipt_time):
            if post in ignored:
                continue
            if (index, post) in seen:
                result.duplicates += 1
                continue
            seen.add((index, post))
            spec = by_index[index]
            known = posts.get(post)
            if known is None or known[0] != spec.thread or not covered(intervals[index], known[1]):
                result.unexpected += 1
                continue
            result.received += 1
            result.received_by_transport[spec.transport] += 1
            latency = (at - known[1]) * 1000.0
            result.latencies_ms.append(latency)
            result.from_sent_ms.append((at - known[2]) * 1000.0)
            result.by_transport[spec.transport].append(latency)
    return result


def summary(values_ms: Sequence[float]) -> dict[str, float] | None:
    """p50, p90, p99, max and mean, in milliseconds; None without values."""
    if not values_ms:
        return None
    values = np.asarray(values_ms)
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        "p50": round(float(p50), 2),
        "p90": round(float(p90), 2),
        "p99": round(float(p99), 2),
        "max": round(float(values.max()), 2),
        "mean": round(float(values.mean()), 2),
    }


def cdf(values_ms: Sequence[float], points: int = CDF_POINTS) -> list[float]:
    """The latency at fractions 0, 1/(points-1), ..., 1 of the deliveries (for plots)."""
    if not values_ms:
        return []
    return [round(float(v), 3) for v in np.quantile(np.asarray(values_ms), np.linspace(0.0, 1.0, points))]


def rate_series(times: Iterable[float], start: float, end: float, bucket: float) -> list[float]:
    """Events per second in consecutive buckets of `bucket` seconds from `start` to `end`."""
    buckets = max(1, math.ceil((end - start) / bucket))
    counts, _ = np.histogram(np.fromiter(times, dtype=float), bins=buckets, range=(start, start + buckets * bucket))
    return [round(float(c) / bucket, 1) for c in counts]


def count_between(times: Iterable[float], start: float, end: float) -> int:
    values = np.fromiter(times, dtype=float)
    return int(np.count_nonzero((values >= start) & (values <= end)))
