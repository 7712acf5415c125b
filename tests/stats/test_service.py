"""The `stats` service on the toolkit runner (embedded SQLite log and coordinator, an in-memory
edge), the formatter's delivery reports, and rebuilding windows from the log."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from tests.stats.harness import open_log, run_to_the_end, settings_for
from tests.stats.streams import BASE, DELIVERIES, EVENTS, Stream, append, brute_force, dense_stream
from tests.toolkit.helpers import wait_until
from threadcast.coord import open_coordinator
from threadcast.events import Delivery, Event, decode_push
from threadcast.services import formatter, stats
from threadcast.services.delivery_reports import DeliveryReports
from threadcast.stats.definition import StatsConfig
from threadcast.stats.rebuild import rebuild
from threadcast.stats.results import object_key
from threadcast.toolkit import Backends, Runner, TestKit
from threadcast.toolkit.memory import MemoryEdge, MemoryLog

PARTITIONS = 2
CONFIG = StatsConfig(window=60, lateness=10, idle_timeout=300, tick=0.05)


async def test_the_stats_service_writes_each_window_then_publishes_it_on_the_forum_channel(tmp_path):
    stream = Stream()
    stream.post("p1", "demo", 3, BASE + 5, "ann")
    stream.post("p2", "demo", 3, BASE + 6, "bob", reply=True)
    stream.post("p3", "demo", 8, BASE + 7, "ann")
    stream.vote("v1", "demo", 8, BASE + 8, "cy")
    stream.end(PARTITIONS)
    event_log = await open_log(tmp_path, PARTITIONS)
    await append(event_log, stream.records)
    edge = MemoryEdge()
    settings = settings_for(tmp_path, PARTITIONS)
    coord = open_coordinator(f"sqlite:///{tmp_path / 'coord.db'}")
    runner = Runner([stats.service], Backends(coord=coord, log=event_log, edge=edge), settings=settings,
                    configs={"stats": CONFIG})  # fmt: skip
    await runner.start()
    try:
        await wait_until(lambda: edge.messages("stats:demo"), "the window published", deadline=30)
        assert (tmp_path / "objects" / object_key("forum", "demo", BASE)).is_file()
    finally:
        await runner.stop()
    [raw] = edge.messages("stats:demo")
    message = decode_push(raw)
    assert (message.id, message.type, message.channel, message.seq) == (f"stats:demo:{int(BASE)}", "stats.window", "stats:demo", 0)
    data = message.data
    assert (data["window_start"], data["window_end"]) == ("2027-01-15T08:00:00+00:00", "2027-01-15T08:01:00+00:00")
    assert (data["posts"], data["replies"], data["votes"], data["active_threads"], data["unique_authors"]) == (3, 1, 1, 2, 2)
    assert data["top_threads"] == [{"rank": 1, "thread_id": 3, "posts": 2}, {"rank": 2, "thread_id": 8, "posts": 1}]
    assert data["latency_count"] == 0 and data["latency_p50_ms"] is None
    event_log = await open_log(tmp_path, PARTITIONS)  # the runner closed its backends
    committed = await event_log.committed(EVENTS, "stats")
    await event_log.close()
    assert sum(committed.values()) == sum(1 for r in stream.records if r.topic == EVENTS)


async def test_the_formatter_reports_each_delivery_on_the_deliveries_topic():
    event = Event("e-1", "post.created", 12, "demo", time.time() - 0.25, 1, {"id": 5, "seq": 1, "author_name": "ann"})
    async with TestKit(formatter.service) as kit:
        await kit.send_to_queue("realtime.format", event)
        await kit.drain()
        await wait_for_offset(kit.log, 1)
        [record] = await kit.log.consumer(DELIVERIES, "test").poll(timeout=1)
    report = msgspec.json.decode(record.value, type=Delivery)
    assert record.key == "12"
    assert (report.event_id, report.forum, report.thread_id, report.created_ts) == ("e-1", "demo", 12, event.ts)
    assert 0.25 <= report.published_ts - report.created_ts < 5


async def wait_for_offset(log: MemoryLog, count: int) -> None:
    for _ in range(200):
        if sum((await log.end_offsets(DELIVERIES)).values()) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{await log.end_offsets(DELIVERIES)}: fewer than {count} delivery reports")


async def test_delivery_reports_go_in_batches_and_the_rest_at_close():
    log = MemoryLog()
    reports = DeliveryReports(log, DELIVERIES, interval=60, max_batch=3)
    await reports.start(partitions=1)
    events = [Event(f"e{n}", "post.created", 1, "demo", 1.0, 1, {}) for n in range(4)]
    for event in events[:3]:
        reports.add(event, published_ts=2.0)
    await wait_for_offset(log, 3)
    reports.add(events[3], published_ts=2.0)
    await asyncio.sleep(0.05)
    assert await log.end_offsets(DELIVERIES) == {0: 3}
    await reports.close()
    assert await log.end_offsets(DELIVERIES) == {0: 4}


@pytest.mark.timeout(120)
async def test_a_rebuild_rewrites_the_windows_of_a_time_range_as_they_were(tmp_path):
    base = (int(time.time()) // 60 - 20) * 60  # appended now, created 20 minutes ago
    stream = dense_stream(minutes=6, base=base)
    store = await run_to_the_end(tmp_path, stream, PARTITIONS, CONFIG)
    original = {key: await store.get(key) for key in await store.list("stats/")}
    expected = brute_force(stream.records, PARTITIONS, 60, 10)
    assert {key for key in original if key.startswith("stats/forum/")} == {
        object_key("forum", forum, start) for forum, start in expected
    }
    since, until = base + 120, base + 240
    in_range = sorted(
        key
        for (forum, start) in expected
        if since <= start < until
        for key in (object_key(metric, forum, start) for metric in ("forum", "threads", "top_threads"))
        if key in original
    )
    for key in in_range:
        await store.put(key, b"damaged")
    outside = next(key for key in original if key not in in_range)
    await store.delete(outside)

    written = await rebuild(settings_for(tmp_path, PARTITIONS), since, until, CONFIG)

    assert written == sorted(k for k in in_range if k.startswith("stats/forum/"))
    assert {key: await store.get(key) for key in in_range} == {key: original[key] for key in in_range}
    assert not await store.exists(outside)  # outside the range: left alone


def test_threadcast_stats_rebuild_restores_deleted_windows_from_the_log(tmp_path):
    from click.testing import CliRunner

    from threadcast.cli import main

    base = (int(time.time()) // 60 - 20) * 60
    store = asyncio.run(run_to_the_end(tmp_path, dense_stream(minutes=3, base=base), PARTITIONS, CONFIG))
    forum_keys = asyncio.run(store.list("stats/forum/"))
    for key in forum_keys:
        asyncio.run(store.delete(key))

    result = CliRunner().invoke(main, ["stats", "rebuild", "--since", "30m", "--data-dir", str(tmp_path)])

    assert result.exit_code == 0, result.output
    assert f"{len(forum_keys)} forum windows rewritten" in result.output
    assert asyncio.run(store.list("stats/forum/")) == forum_keys


def test_threadcast_stats_rebuild_says_what_is_wrong_with_its_input(tmp_path):
    from click.testing import CliRunner

    from threadcast.cli import main

    runner = CliRunner()
    bad_duration = runner.invoke(main, ["stats", "rebuild", "--since", "soon", "--data-dir", str(tmp_path)])
    no_log = runner.invoke(main, ["stats", "rebuild", "--since", "1h", "--data-dir", str(tmp_path)])

    assert bad_duration.exit_code == 2 and "unknown duration" in bad_duration.output
    assert no_log.exit_code == 2 and "no topic" in no_log.output
