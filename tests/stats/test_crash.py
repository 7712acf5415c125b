"""`threadcast run stats` in a child process over the embedded SQLite log: killed with SIGKILL
while windows are open, then restarted, it writes the same objects, byte for byte, as a clean
run over the same log."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import free_port
from tests.stats.harness import open_log
from tests.stats.streams import Stream, append, brute_force, dense_stream
from tests.toolkit.helpers import ChildProcess
from threadcast.stats.results import object_key
from threadcast.store.objects import FolderStore

PARTITIONS, WINDOW, LATENESS = 2, 60, 10.0
DEADLINE = 90.0


def stats_process(data_dir: Path) -> ChildProcess:
    env = {
        "THREADCAST_DATA_DIR": str(data_dir),
        "THREADCAST_LOG_PARTITIONS": str(PARTITIONS),
        "THREADCAST_COORD_URL": f"sqlite:///{data_dir / 'coord.db'}?session_timeout=2",
        "THREADCAST_EDGE_URL": f"http://127.0.0.1:{free_port()}",  # nobody: publishing fails, results are kept
        "THREADCAST_STATS_WINDOW": str(WINDOW),
        "THREADCAST_STATS_LATENESS": str(LATENESS),
        "THREADCAST_STATS_IDLE_TIMEOUT": "600",
        "THREADCAST_STATS_TICK": "0.1",
    }
    return ChildProcess("threadcast", "run", "stats", folder=data_dir, env=env)


async def wait_for_keys(store: FolderStore, keys: set[str], child: ChildProcess) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not keys <= set(await store.list("stats/")):
        assert child.proc.poll() is None, child.output.read_text()[-3000:]
        assert loop.time() < end, f"missing {sorted(keys - set(await store.list('stats/')))[:5]}"
        await asyncio.sleep(0.05)


async def contents(store: FolderStore) -> dict[str, bytes]:
    return {key: await store.get(key) for key in await store.list("stats/")}


async def run_clean(data_dir: Path, stream: Stream, keys: set[str]) -> dict[str, bytes]:
    event_log = await open_log(data_dir, PARTITIONS)
    await append(event_log, stream.records)
    await event_log.close()
    child = stats_process(data_dir)
    store = FolderStore(data_dir / "objects")
    await wait_for_keys(store, keys, child)
    assert await child.terminate() == 0
    return await contents(store)


async def test_killed_mid_window_and_restarted_it_writes_what_a_clean_run_writes(tmp_path):
    stream = dense_stream()
    cut = len(stream.records) * 2 // 3
    first, rest = stream.records[:cut], stream.records[cut:]
    ended = Stream(list(stream.records))
    ended.end(PARTITIONS)
    expected = brute_force(ended.records, PARTITIONS, WINDOW, LATENESS)
    keys = {object_key("forum", forum, start) for forum, start in expected}

    crashed = tmp_path / "crashed"
    crashed.mkdir()
    event_log = await open_log(crashed, PARTITIONS)
    await append(event_log, first)
    store = FolderStore(crashed / "objects")
    child = stats_process(crashed)
    await wait_for_keys(store, set(sorted(keys)[:3]), child)
    child.kill()  # the last windows of the first part are open, their records not committed
    written_before = set(await store.list("stats/"))
    assert not keys <= written_before
    committed = sum((await event_log.committed("events", "stats")).values())
    assert committed < sum(1 for r in first if r.topic == "events")

    await append(event_log, rest + ended.records[len(stream.records) :])
    await event_log.close()
    restarted = stats_process(crashed)
    await wait_for_keys(store, keys, restarted)
    assert await restarted.terminate() == 0
    after_crash = await contents(store)

    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    clean = await run_clean(clean_dir, ended, keys)
    assert sorted(after_crash) == sorted(clean)
    assert [key for key in clean if after_crash[key] != clean[key]] == []
