"""The stats topology on Apache Storm writes to S3 exactly what the embedded runner writes.

A generated stream (tests/stats/streams.py: two forums, late events within and beyond the
lateness, duplicates, votes, deliveries) goes into fresh Kafka topics. The embedded runner reads
it to the end (a bounded run) into one S3 prefix; Storm reads the same topics as a group of its
own into another, through `threadcast stats storm local` (local mode: one JVM) or `threadcast
stats storm submit` (the dev cluster of dev/storm/service: nimbus, a supervisor, its workers).
Every object (forum, threads, top_threads; HLL estimates included) must be byte for byte the
same. On the cluster, a Python bolt is killed (-9) mid-run: its worker dies, the supervisor
starts it again, it resumes from the committed offsets, and the results are still exact.

Selected when THREADCAST_TEST_BACKENDS names storm; needs the Kafka, S3, ZooKeeper and Storm
dev services (THREADCAST_TEST_KAFKA_URL, _S3_URL, _ZK_URL, _STORM_LIB, _STORM_NIMBUS,
_STORM_LOGS: `dev/services env`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.conftest import selected_real_backends
from tests.stats.streams import DELIVERIES, EVENTS, Rec, Stream, brute_force, dense_stream
from tests.toolkit.helpers import ROOT, ChildProcess
from threadcast.bus.kafka_log import KafkaLog
from threadcast.bus.log import Message
from threadcast.config import Settings
from threadcast.stats.definition import StatsConfig, log_sources, stats_topology
from threadcast.stats.runner import EmbeddedRunner
from threadcast.stats.spout import LogSpoutSpec
from threadcast.store.objects.s3 import S3Store

PARTITIONS, WINDOW, LATENESS = 2, 60, 10.0
STATS_ENV = {
    "THREADCAST_STATS_WINDOW": str(WINDOW),
    "THREADCAST_STATS_LATENESS": str(LATENESS),
    # No idle advance while the JVM starts or a worker restarts: windows close by the data only.
    "THREADCAST_STATS_IDLE_TIMEOUT": "600",
    "THREADCAST_STATS_TICK": "1",
}
DEADLINE = 180.0
"""Seconds Storm may take to write every window (JVM start ~15 s, a worker restart ~10 s)."""

pytestmark = [
    pytest.mark.real,
    pytest.mark.timeout(420),
    pytest.mark.skipif("storm" not in selected_real_backends(), reason="storm not selected (THREADCAST_TEST_BACKENDS)"),
]


def s3_url(prefix: str) -> str:
    parts = urlsplit(os.environ["THREADCAST_TEST_S3_URL"])
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{prefix}"))


@dataclass
class Run:
    """Fresh topics of the test's own, and where each engine writes."""

    uid: str
    event_log: KafkaLog
    tmp_path: Path
    stores: list[S3Store]

    @property
    def topics(self) -> dict[str, str]:
        return {EVENTS: f"events-{self.uid}", DELIVERIES: f"deliveries-{self.uid}"}

    def settings(self, store_url: str) -> Settings:
        return Settings(
            data_dir=self.tmp_path / "data",
            log_url=os.environ["THREADCAST_TEST_KAFKA_URL"],
            log_partitions=PARTITIONS,
            events_topic=self.topics[EVENTS],
            deliveries_topic=self.topics[DELIVERIES],
            store_url=store_url,
        )

    def url(self, name: str) -> str:
        """The S3 URL (secret included) of the prefix `name`."""
        return s3_url(f"storm-stats-{self.uid}/{name}")

    async def store(self, name: str) -> S3Store:
        store = S3Store(self.url(name))
        await store.start()
        self.stores.append(store)
        return store

    async def append(self, records: list[Rec]) -> None:
        for topic, name in self.topics.items():
            messages = [Message(r.value, key=r.key) for r in records if r.topic == topic]
            if messages:
                await self.event_log.append(name, messages)

    async def embedded(self) -> dict[str, bytes]:
        """The embedded runner over everything in the topics: the objects it wrote."""
        store = await self.store("embedded")
        settings = self.settings(self.url("embedded"))
        names = tuple(self.topics.values())
        spout = LogSpoutSpec(names, f"embedded-{self.uid}", stop_at_end=True)
        config = StatsConfig(window=WINDOW, lateness=LATENESS, idle_timeout=600, tick=1)
        topology = stats_topology(config, settings, await log_sources(self.event_log, names), spout=spout, sink={"publish": False})
        await EmbeddedRunner(topology, self.event_log, resources={"store": store}).run_bounded()
        return await contents(store)

    def storm_env(self, store_url: str, group: str) -> dict[str, str]:
        return {
            **STATS_ENV,
            "THREADCAST_STATS_GROUP": group,
            "THREADCAST_LOG_URL": os.environ["THREADCAST_TEST_KAFKA_URL"],
            "THREADCAST_LOG_PARTITIONS": str(PARTITIONS),
            "THREADCAST_EVENTS_TOPIC": self.topics[EVENTS],
            "THREADCAST_DELIVERIES_TOPIC": self.topics[DELIVERIES],
            "THREADCAST_STORE_URL": store_url,
            "THREADCAST_DATA_DIR": str(self.tmp_path / "data"),
            "THREADCAST_STORM_LIB": os.environ["THREADCAST_TEST_STORM_LIB"],
        }

    async def uncommitted(self, group: str) -> int:
        """Records of the topics that `group` has not committed, besides the last one of each
        partition (the end record, whose window never closes)."""
        left = 0
        for name in self.topics.values():
            committed = await self.event_log.committed(name, group)
            for partition, end in (await self.event_log.end_offsets(name)).items():
                left += max(0, end - 1 - committed.get(partition, 0))
        return left


async def contents(store: S3Store) -> dict[str, bytes]:
    """Every object but those of the end records' forum (their windows close only in a
    bounded run)."""
    return {key: await store.get(key) for key in await store.list("stats/") if not key.endswith("/part-end.parquet")}


def ended(stream: Stream) -> list[Rec]:
    """The stream's records, then one far in the future on every partition: every window closes."""
    copy = Stream(list(stream.records))
    copy.end(PARTITIONS)
    return copy.records


@pytest.fixture
async def run(tmp_path: Path) -> AsyncIterator[Run]:
    event_log = KafkaLog(os.environ["THREADCAST_TEST_KAFKA_URL"])
    await event_log.start()
    run = Run(uuid.uuid4().hex[:8], event_log, tmp_path, [])
    for name in run.topics.values():
        await event_log.create_topic(name, PARTITIONS)
    yield run
    for store in run.stores:
        for key in await store.list():
            await store.delete(key)
        await store.close()
    await event_log.close()


async def wait_for(
    condition: Callable[[], Awaitable[bool]], what: str, gone: Callable[[], str | None] = lambda: None
) -> None:
    """Until `await condition()` is true; fail when `gone()` says why the engine is gone, or
    after DEADLINE seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not await condition():
        why = gone()
        assert why is None, f"waiting for {what}: {why}"
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.5)


def expected_windows(records: list[Rec]) -> int:
    return len(brute_force(records, PARTITIONS, WINDOW, LATENESS))


def forum_keys(objects: dict[str, bytes]) -> set[str]:
    return {key for key in objects if key.startswith("stats/forum/")}


async def test_storm_local_mode_writes_what_the_embedded_runner_writes(run: Run) -> None:
    records = ended(dense_stream())
    await run.append(records)
    expected = await run.embedded()
    assert len(forum_keys(expected)) == expected_windows(records) > 10

    store = await run.store("storm-local")
    group = f"storm-local-{run.uid}"
    zookeeper = urlsplit(os.environ["THREADCAST_TEST_ZK_URL"]).netloc
    child = ChildProcess(
        "threadcast", "stats", "storm", "local", "--no-publish", "--zookeeper", zookeeper, "--every", "2",
        folder=run.tmp_path, env=run.storm_env(run.url("storm-local"), group),
    )  # fmt: skip

    def gone() -> str | None:
        return None if child.proc.poll() is None else f"the CLI exited:\n{child.output.read_text()[-4000:]}"

    async def done() -> bool:
        return set(expected) <= set(await store.list("stats/")) and await run.uncommitted(group) == 0

    try:
        await wait_for(done, "every window from Storm", gone)
    finally:
        status = await child.terminate()
    output = child.output.read_text()
    assert status == 0, output
    assert "committed" in output and output.rstrip().endswith("storm local: stopped"), output
    found = await contents(store)
    assert sorted(found) == sorted(expected)
    assert [key for key in expected if found[key] != expected[key]] == []


def threadcast_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "threadcast", *args], cwd=ROOT, env={**os.environ, **env},
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def bolt_pids(bolt_class: str, store_url: str) -> list[int]:
    """The shell bolt processes of `bolt_class` (module:Class) writing to `store_url`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            if b"threadcast.stats.storm.bolt" not in command or bolt_class.encode() not in command:
                continue
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if f"THREADCAST_STORE_URL={store_url}".encode() in environ:
            found.append(int(proc.name))
    return found


def worker_logs(topology: str) -> str:
    logs = sorted(Path(os.environ["THREADCAST_TEST_STORM_LOGS"]).glob(f"workers-artifacts/{topology}-*/*/worker.log"))
    return "\n".join(f"--- {log}\n{log.read_text(errors='replace')[-3000:]}" for log in logs)


async def test_a_killed_bolt_is_restarted_by_storm_and_the_results_are_still_exact(run: Run) -> None:
    stream = dense_stream()
    cut = len(stream.records) * 2 // 3
    await run.append(stream.records[:cut])

    store, url = await run.store("storm-cluster"), run.url("storm-cluster")
    name, group = f"stats-{run.uid}", f"storm-cluster-{run.uid}"
    env = run.storm_env(url, group)
    nimbus = ["--nimbus", os.environ["THREADCAST_TEST_STORM_NIMBUS"]]
    submitted = threadcast_cli("stats", "storm", "submit", "--no-publish", "--name", name, *nimbus, env=env)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr

    try:
        # Some windows of the first part are written; the later ones are open, their records
        # held in the window bolt, not acked, not committed.
        async def some_written() -> bool:
            return len([k for k in await store.list("stats/forum/") if "part-end" not in k]) >= 3

        await wait_for(some_written, f"windows from the first part\n{worker_logs(name)}")
        [window] = bolt_pids("threadcast.stats.window:WindowBolt", url)
        others = bolt_pids("threadcast.stats.parse:ParseBolt", url) + bolt_pids("threadcast.stats.sink:SinkBolt", url)
        assert await run.uncommitted(group) > 0
        os.kill(window, signal.SIGKILL)

        # Its worker dies with it; the supervisor starts the worker, and its bolts, again.
        async def restarted() -> bool:
            return [pid for pid in bolt_pids("threadcast.stats.window:WindowBolt", url) if pid != window] != []

        await wait_for(restarted, f"a new window bolt\n{worker_logs(name)}")
        assert not set(bolt_pids("threadcast.stats.parse:ParseBolt", url)) & set(others)

        await run.append(ended(stream)[cut:])
        expected = await run.embedded()
        assert len(forum_keys(expected)) == expected_windows(ended(stream)) > 10

        async def done() -> bool:
            return set(expected) <= set(await store.list("stats/")) and await run.uncommitted(group) == 0

        await wait_for(done, f"every window from Storm\n{worker_logs(name)}")
    finally:
        killed = threadcast_cli("stats", "storm", "kill", name, *nimbus, env=env)
        assert killed.returncode == 0, killed.stdout + killed.stderr
    found = await contents(store)
    assert sorted(found) == sorted(expected)
    assert [key for key in expected if found[key] != expected[key]] == []
