"""How many log records per second the embedded runner sustains through the stats topology.

    python -m threadcast.stats.bench [--events 200000] [--forums 10] [--partitions 8] [--parallelism 1]
                                     [--log-url kafka://HOST:PORT]

Appends `events` posts and votes (and one delivery report per post) to a fresh embedded SQLite
log in a temporary folder (or to fresh topics of the log at `--log-url`, deleted afterwards on
Kafka), spread over `forums` forums and a thousand threads at `rate` events per second of event
time, then runs the stats topology over it into a folder store and reports the records done per
second (from the runner's start to the last record's tree done: decoding, windows, sketches and
the Parquet writes included).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from threadcast.bus.factory import open_log
from threadcast.bus.log import EventLog, Message
from threadcast.bus.partitioner import partition_for
from threadcast.config import Settings
from threadcast.events import Delivery, Event, encode
from threadcast.stats.definition import StatsConfig, log_sources, stats_topology, topics
from threadcast.stats.runner import EmbeddedRunner
from threadcast.store.objects import FolderStore

START = 1_800_000_000.0
END = START + 10 * 365 * 86400


def batches(events: int, forums: int, rate: float, seed: int = 1, size: int = 1000) -> list[tuple[str, list[Message]]]:
    """(topic, messages) to append in order: events and their delivery reports in turns, a
    second or two of event time at a time, as a running system appends them."""
    rng = random.Random(seed)
    out: list[tuple[str, list[Message]]] = []
    for first in range(0, events, size):
        posted, delivered = [], []
        for n in range(first, min(first + size, events)):
            thread = rng.randrange(1000)
            forum, ts = f"forum{thread % forums}", START + n / rate
            author = f"u{rng.randrange(5000)}"
            if rng.random() < 0.2:
                event = Event(f"e{n}", "vote.created", thread, forum, ts, 1, {"id": n, "post_id": 1, "value": 1, "voter": author})
            else:
                payload = {"id": n, "thread_id": thread, "parent_id": None, "seq": 1, "author_name": author}
                event = Event(f"e{n}", "post.created", thread, forum, ts, 1, payload)
                report = Delivery(event.event_id, forum, thread, ts, ts + rng.uniform(0.001, 0.5))
                delivered.append(Message(encode(report), key=str(thread)))
            posted.append(Message(encode(event), key=str(thread)))
        out += [("events", posted), ("deliveries", delivered)]
    return out


def end_batches(partitions: int) -> list[tuple[str, list[Message]]]:
    """One record far in the future per partition, so that every window closes."""
    keys = [next(str(k) for k in range(10**6, 2 * 10**6) if partition_for(str(k), partitions) == p) for p in range(partitions)]
    return [
        ("events", [Message(encode(Event(f"end{k}", "bench.end", int(k), "end", END, 1, {})), key=k) for k in keys]),
        ("deliveries", [Message(encode(Delivery(f"end{k}", "end", int(k), END, END)), key=k) for k in keys]),
    ]


def bench_settings(folder: Path, partitions: int, log_url: str | None) -> Settings:
    """An embedded log in `folder`, or topics of their own on the log at `log_url`."""
    if log_url is None:
        return Settings(data_dir=folder, log_partitions=partitions)
    run = uuid.uuid4().hex[:8]
    return Settings(
        data_dir=folder,
        log_url=log_url,
        log_partitions=partitions,
        events_topic=f"stats-bench-events-{run}",
        deliveries_topic=f"stats-bench-deliveries-{run}",
    )


async def measure(
    folder: Path, events: int, forums: int, partitions: int, parallelism: int, rate: float, log_url: str | None = None
) -> dict[str, float]:
    settings = bench_settings(folder, partitions, log_url)
    event_log = open_log(settings.resolved_log_url())
    await event_log.start()
    names = dict(zip(("events", "deliveries"), topics(settings), strict=True))
    try:
        for topic in names.values():
            await event_log.create_topic(topic, partitions)
        appended = batches(events, forums, rate)
        for topic, messages in [*appended, *end_batches(partitions)]:
            await event_log.append(names[topic], messages)
        total = sum(len(messages) for _topic, messages in appended) + partitions  # the end events are acked
        config = StatsConfig(
            idle_timeout=600, parse_parallelism=parallelism, window_parallelism=parallelism, sink_parallelism=parallelism
        )
        topology = stats_topology(config, settings, await log_sources(event_log, topics(settings)))
        runner = EmbeddedRunner(topology, event_log, resources={"store": FolderStore(folder / "objects")})
        began = time.perf_counter()
        await runner.start()
        await runner.until(lambda: runner.done >= total)
        elapsed = time.perf_counter() - began
        await runner.stop()
    finally:
        if log_url is not None:
            await drop_topics(event_log, names.values())
        await event_log.close()
    windows = len(list((folder / "objects" / "stats" / "forum").rglob("*.parquet")))
    return {"records": total, "seconds": elapsed, "records_per_second": total / elapsed, "windows": windows}


async def drop_topics(event_log: EventLog, names: Iterable[str]) -> None:
    """Delete the bench's topics from Kafka (the embedded log goes with its folder)."""
    from threadcast.bus.kafka_log import KafkaLog

    if isinstance(event_log, KafkaLog):
        futures = event_log.admin.delete_topics(list(names))
        await asyncio.gather(*(asyncio.wrap_future(future) for future in futures.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--forums", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument("--rate", type=float, default=500.0, help="events per second of event time")
    parser.add_argument("--log-url", help="an event log to create the bench's topics on (default: embedded)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = asyncio.run(
            measure(Path(folder), args.events, args.forums, args.partitions, args.parallelism, args.rate, args.log_url)
        )
    print(
        f"{result['records']:.0f} records ({args.events} events + delivery reports) in {result['seconds']:.2f} s: "
        f"{result['records_per_second']:,.0f} records/s; {result['windows']:.0f} forum windows written"
    )


if __name__ == "__main__":
    main()
