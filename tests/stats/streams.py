"""Event streams for the stats tests: generate them, append them to a log, and count what the
stats must say about them by brute force.

A stream is the list of records in the order they are appended (one append per topic, so each
partition holds its records in stream order). The brute force follows the rules of
docs/stats.md directly: per partition, a record is too late when its window ended at least
`lateness` before the newest event time seen in that partition before it, late when its window
ended before that time; events count once per (forum, window) by event id, in partition order.
"""

from __future__ import annotations

import math
import random
import uuid
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from threadcast.bus.log import EventLog, Message
from threadcast.bus.partitioner import partition_for
from threadcast.events import Delivery, Event, encode
from threadcast.stats.query import query
from threadcast.store.objects import ObjectStore

BASE = 1_800_000_000.0
"""A minute boundary (2027-01-15T08:00:00Z)."""
EVENTS, DELIVERIES = "events", "deliveries"
FORUMS = ("demo", "news", "sport")
FAR = BASE + 10 * 365 * 86400
"""The event time of the records that end a stream (their windows never close)."""


@dataclass(frozen=True)
class Rec:
    """One record to append."""

    topic: str
    key: str
    value: bytes


@dataclass
class Stream:
    records: list[Rec] = field(default_factory=list)

    def post(self, event_id: str, forum: str, thread: int, ts: float, author: str, reply: bool = False) -> Event:
        payload = {
            "id": zlib.crc32(event_id.encode()), "thread_id": thread, "parent_id": 1 if reply else None, "seq": 1,
            "author_name": author, "message": "<p>hi</p>", "created_at": "2027-01-15T08:00:00", "version": 1,
        }  # fmt: skip
        return self.event(Event(event_id, "post.created", thread, forum, ts, 1, payload))

    def vote(self, event_id: str, forum: str, thread: int, ts: float, voter: str) -> Event:
        payload = {"id": 7, "post_id": 1, "value": 1, "voter": voter}
        return self.event(Event(event_id, "vote.created", thread, forum, ts, 1, payload))

    def event(self, event: Event) -> Event:
        self.records.append(Rec(EVENTS, str(event.thread_id), encode(event)))
        return event

    def delivery(self, event: Event, latency_ms: float) -> None:
        report = Delivery(event.event_id, event.forum, event.thread_id, event.ts, event.ts + latency_ms / 1000)
        self.records.append(Rec(DELIVERIES, str(event.thread_id), encode(report)))

    def raw(self, topic: str, key: str, value: bytes) -> None:
        self.records.append(Rec(topic, key, value))

    def end(self, partitions: int) -> int:
        """Records far in the future on every partition of both topics: every window of the
        stream closes. Returns how many of them stay held (the delivery ones)."""
        for p in range(partitions):
            key = key_for(p, partitions)
            self.event(Event(f"end-{p}-{uuid.uuid4().hex[:6]}", "stream.end", int(key), "end", FAR, 1, {}))
            self.records.append(Rec(DELIVERIES, key, encode(Delivery(f"end-{p}", "end", int(key), FAR, FAR))))
        return partitions


def key_for(partition: int, partitions: int) -> str:
    """A thread id (as a key) that lands on `partition`."""
    return next(str(k) for k in range(10_000, 20_000) if partition_for(str(k), partitions) == partition)


async def append(event_log: EventLog, records: Sequence[Rec]) -> None:
    for topic in (EVENTS, DELIVERIES):
        messages = [Message(r.value, key=r.key) for r in records if r.topic == topic]
        if messages:
            await event_log.append(topic, messages)


# -- generated streams ---------------------------------------------------------------------------


@st.composite
def streams(draw: st.DrawFn, *, max_events: int = 120) -> Stream:
    """Posts, replies and votes over a few minutes in 1-3 forums; most in time order, some a few
    seconds back (late), some minutes back (beyond the lateness); some appended twice; deliveries
    for some; an undecodable record and an uncounted event type here and there."""
    forums = draw(st.lists(st.sampled_from(FORUMS), min_size=1, max_size=3, unique=True))
    threads = {thread: draw(st.sampled_from(forums)) for thread in range(1, draw(st.integers(1, 12)) + 1)}
    count = draw(st.integers(1, max_events))
    stream = Stream()
    clock = BASE + draw(st.integers(0, 59))
    delayed: list[tuple[int, Event]] = []
    for n in range(count):
        clock += draw(st.sampled_from([0.0, 0.5, 1.0, 2.5, 7.0]))
        back = draw(st.sampled_from([0.0] * 8 + [3.0, 9.0, 45.0, 130.0]))
        thread = draw(st.sampled_from(sorted(threads)))
        kind = draw(st.sampled_from(["post", "post", "reply", "vote", "other"]))
        event_id, ts, forum = f"ev-{n}", clock - back, threads[thread]
        author = f"user{draw(st.integers(0, 20))}"
        if kind == "vote":
            event = stream.vote(event_id, forum, thread, ts, voter=author)
        elif kind == "other":
            event = stream.event(Event(event_id, "post.updated", thread, forum, ts, 2, {"id": 1}))
        else:
            event = stream.post(event_id, forum, thread, ts, author, reply=kind == "reply")
        if draw(st.integers(0, 9)) == 0:
            delayed.append((n + draw(st.integers(0, 30)), event))  # a duplicate, appended later
        if draw(st.booleans()):
            stream.delivery(event, latency_ms=draw(st.floats(0.5, 2000.0, allow_nan=False)))
        if draw(st.integers(0, 40)) == 0:
            stream.raw(EVENTS, str(thread), b"{not json")
        for due, again in [d for d in delayed if d[0] <= n]:
            delayed.remove((due, again))
            stream.event(again)
    for _due, again in delayed:
        stream.event(again)
    return stream


def dense_stream(seed: int = 7, minutes: int = 8, base: float = BASE) -> Stream:
    """Two forums, several posts, replies, votes and deliveries per thread and minute, with late
    events, duplicates and events beyond the lateness (into windows that have on-time events)."""
    rng = random.Random(seed)
    stream = Stream()
    n = 0
    for second in range(0, minutes * 60, 2):
        for forum, threads in (("demo", (1, 2, 3)), ("news", (4, 5))):
            n += 1
            thread, ts = rng.choice(threads), base + second + rng.random()
            back = rng.choice([0.0] * 12 + [4.0, 8.0, 150.0]) if second >= 180 else 0.0
            if rng.random() < 0.2:
                event = stream.vote(f"e{n}", forum, thread, ts - back, voter=f"u{rng.randrange(9)}")
            else:
                event = stream.post(f"e{n}", forum, thread, ts - back, f"u{rng.randrange(15)}", reply=rng.random() < 0.3)
            if rng.random() < 0.6:
                stream.delivery(event, latency_ms=rng.uniform(1, 900))
            if rng.random() < 0.05:
                stream.event(event)
    return stream


# -- brute force ---------------------------------------------------------------------------------


@dataclass
class Expected:
    """One forum window as the stats must report it."""

    forum: str
    start: int
    events: dict[str, tuple[str, int, str, bool, bool]] = field(default_factory=dict)
    """event id -> (kind, thread, author, reply, late)"""
    latencies: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        facts = self.events.values()
        return {
            "posts": sum(kind == "post" for kind, *_ in facts),
            "replies": sum(kind == "post" and reply for kind, _t, _a, reply, _l in facts),
            "votes": sum(kind == "vote" for kind, *_ in facts),
            "active_threads": len({thread for _k, thread, *_ in facts}),
            "late_events": sum(late for *_, late in facts),
            "latency_count": len(self.latencies),
        }

    def authors(self) -> set[str]:
        return {author for kind, _t, author, _r, _l in self.events.values() if kind == "post"}

    def threads(self) -> dict[int, tuple[int, int, int]]:
        counts: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
        for kind, thread, _author, reply, _late in self.events.values():
            counts[thread][0 if kind == "post" else 2] += 1
            counts[thread][1] += kind == "post" and reply
        return {thread: tuple(c) for thread, c in counts.items()}  # type: ignore[misc]


def brute_force(records: Iterable[Rec], partitions: int, window: int, lateness: float) -> dict[tuple[str, int], Expected]:
    """(forum, window start) -> what that window must hold."""
    newest: dict[tuple[str, int], float] = {}
    windows: dict[tuple[str, int], Expected] = {}
    for rec in records:
        fact = _decode(rec)
        if fact is None:
            continue
        kind, event_id, forum, thread, ts, author, reply, latency = fact
        source = (rec.topic, partition_for(rec.key, partitions))
        before = newest.get(source, -math.inf)
        newest[source] = max(before, ts)
        end = (math.floor(ts / window) + 1) * window
        if kind is None or end <= before - lateness or forum == "end":
            continue
        start = end - window
        expected = windows.setdefault((forum, start), Expected(forum, start))
        if kind == "delivery":
            expected.latencies.setdefault(event_id, latency)
        else:
            expected.events.setdefault(event_id, (kind, thread, author, reply, end <= before))
    return windows


def _decode(rec: Rec) -> tuple[Any, ...] | None:
    import msgspec

    try:
        if rec.topic == DELIVERIES:
            d = msgspec.json.decode(rec.value, type=Delivery)
            return ("delivery", d.event_id, d.forum, d.thread_id, d.created_ts, "", False,
                    max(0.0, (d.published_ts - d.created_ts) * 1000))  # fmt: skip
        e = msgspec.json.decode(rec.value, type=Event)
    except msgspec.DecodeError:
        return None
    kind = {"post.created": "post", "vote.created": "vote"}.get(e.type)
    author = e.payload.get("author_name", "") if kind == "post" else ""
    reply = kind == "post" and e.payload.get("parent_id") is not None
    return (kind, e.event_id, e.forum, e.thread_id, e.ts, author, reply, 0.0)


# -- results -------------------------------------------------------------------------------------


def results(store: ObjectStore, metric: str) -> list[dict[str, Any]]:
    """Every row of a metric, in key order, with window_start as epoch seconds."""
    columns, rows = query(store, f"SELECT * EXCLUDE (dt, hour, minute) FROM {metric} ORDER BY ALL")
    found = [dict(zip(columns, row, strict=True)) for row in rows]
    for row in found:
        for name in ("window_start", "window_end"):
            if name in row:
                row[name] = int(row[name].timestamp())
    return found
