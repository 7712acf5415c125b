"""Apache Storm in local mode with Python bolts over multilang, against the dev Kafka.

A real LocalCluster JVM (jars of dev/storm, THREADCAST_TEST_STORM_LIB) runs the Flux topology
tests/e2e/storm/probe.yaml: Storm's Kafka spout reads a topic of the test's own, two shell bolts
(tests/e2e/storm/probe_bolt.py, on threadcast.stats.storm.multilang) process what it emits and
record it in files. Storm keeps its cluster state in the dev ZooKeeper under a root of the
test's own. Selected when THREADCAST_TEST_BACKENDS names storm; the Kafka and ZooKeeper URLs
must then be set too (`make test` sets all three).
"""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kazoo.client import KazooClient

from tests.conftest import selected_real_backends
from threadcast.bus.kafka_log import parse_kafka_url
from threadcast.stats.storm.local import LocalRun, LocalStorm

PROBE = Path(__file__).parent / "storm"
PARTITIONS = 2
# From the JVM's start: ~7 s for the local cluster, ~8 s more until the workers run.
STARTUP = 120.0

pytestmark = [
    pytest.mark.real,
    pytest.mark.timeout(300),
    pytest.mark.skipif("storm" not in selected_real_backends(), reason="storm not selected (THREADCAST_TEST_BACKENDS)"),
]


class Topic:
    """A fresh topic on the dev Kafka, and the offsets a consumer group committed on it."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.name = f"storm-probe-{uuid.uuid4().hex[:8]}"
        self.group = f"{self.name}-group"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.create_topics([NewTopic(self.name, PARTITIONS, 1)]).values():
            future.result(30)

    def produce(self, records: list[tuple[str, str]]) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap})
        for key, value in records:
            producer.produce(self.name, key=key, value=value)
        assert producer.flush(30) == 0

    def lag(self) -> int:
        """Records not yet covered by the group's committed offsets."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group})
        try:
            partitions = [TopicPartition(self.name, p) for p in range(PARTITIONS)]
            lag = 0
            for committed in consumer.committed(partitions, timeout=10):
                _low, high = consumer.get_watermark_offsets(committed, timeout=10)
                lag += high - max(committed.offset, 0)
            return lag
        finally:
            consumer.close()


class StormRun:
    """One local-mode JVM running probe.yaml on a topic; what its Python bolts recorded."""

    def __init__(self, tmp_path: Path, topic: Topic, zk_base: str, hold: bool = False) -> None:
        name = f"run-{uuid.uuid4().hex[:6]}"
        self.dir = tmp_path / name
        self.out = self.dir / "out"
        self.out.mkdir(parents=True)
        (self.dir / "tmp").mkdir()
        self.log_file = self.dir / "storm.log"
        storm = LocalStorm(
            lib_dir=Path(os.environ["THREADCAST_TEST_STORM_LIB"]),
            zookeeper=urlsplit(os.environ["THREADCAST_TEST_ZK_URL"]).netloc,
            zk_root=f"{zk_base}/{name}",
            log_file=self.log_file,
            tmp_dir=self.dir / "tmp",
        )
        env = {
            **os.environ,
            "PROBE_BOOTSTRAP": topic.bootstrap,
            "PROBE_TOPIC": topic.name,
            "PROBE_GROUP": topic.group,
            "PROBE_PYTHON": sys.executable,
            "PROBE_BOLT": str(PROBE / "probe_bolt.py"),
            "PROBE_OUT": str(self.out),
            "PROBE_HOLD": "1" if hold else "0",
        }
        self.run = LocalRun(storm, PROBE / "probe.yaml", 600, env, self.dir / "java.out")

    def records(self, role: str, event: str) -> list[dict[str, Any]]:
        return [
            record
            for path in sorted(self.out.glob(f"{role}-*.jsonl"))
            for record in map(orjson.loads, path.read_bytes().splitlines())
            if record["event"] == event
        ]

    def words(self, role: str, event: str) -> list[str]:
        return sorted(r["word"] if role == "sink" else r["value"] for r in self.records(role, event))

    def pids(self) -> list[int]:
        return [r["pid"] for role in ("upper", "sink") for r in self.records(role, "start")]

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = STARTUP) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.run.poll() is not None:
                pytest.fail(f"Storm exited ({self.run.poll()}) waiting for {what}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}:\n{self.log_tail()}")
            time.sleep(0.2)

    def wait_exit(self, timeout: float) -> int:
        return self.run.proc.wait(timeout)

    def stop(self) -> None:
        self.run.stop()

    def log_tail(self) -> str:
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return text[-4000:]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def wait_gone(pids: list[int], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"bolt processes still running: {[p for p in pids if alive(p)]}"
        time.sleep(0.2)


@pytest.fixture
def topic() -> Topic:
    return Topic(parse_kafka_url(os.environ["THREADCAST_TEST_KAFKA_URL"]).bootstrap_servers)


@pytest.fixture
def zk_base() -> Iterator[str]:
    """Each run keeps its cluster state under a root of its own below this one."""
    root = f"/threadcast-test-storm-{uuid.uuid4().hex[:8]}"
    yield root
    client = KazooClient(hosts=urlsplit(os.environ["THREADCAST_TEST_ZK_URL"]).netloc)
    client.start(timeout=15)
    try:
        client.delete(root, recursive=True)
    finally:
        client.stop()
        client.close()


@pytest.fixture
def runs(tmp_path: Path, topic: Topic, zk_base: str) -> Iterator[Callable[..., StormRun]]:
    started: list[StormRun] = []

    def start(hold: bool = False) -> StormRun:
        run = StormRun(tmp_path, topic, zk_base, hold=hold)
        started.append(run)
        return run

    yield start
    for run in started:
        run.stop()


def test_python_bolts_get_tuples_and_ticks_and_acks_commit_the_offsets(topic: Topic, runs) -> None:
    records = [(f"k{i % 8}", f"m{i}") for i in range(40)] + [("k0", "fail-once-1"), ("k1", "fail-once-2")]
    topic.produce(records)
    words = sorted(value.upper() for _key, value in records)

    run = runs()
    run.wait_for(lambda: run.words("sink", "ack") == words, "every word acked by the sink")
    run.wait_for(lambda: len(run.records("sink", "tick")) >= 2, "tick tuples at the sink", timeout=30)
    run.wait_for(lambda: topic.lag() == 0, "the spout to commit every offset", timeout=60)

    # A tuple failed downstream of an anchored emit is replayed from the spout.
    assert run.words("sink", "fail") == ["FAIL-ONCE-1", "FAIL-ONCE-2"]
    upper = run.words("upper", "tuple")
    assert upper.count("fail-once-1") == upper.count("fail-once-2") == 2
    assert sorted(set(upper)) == sorted(value for _key, value in records)
    # Fields grouping on the key: each key goes to one of the two upper tasks.
    tasks_by_key: dict[str, set[int]] = {}
    for record in run.records("upper", "tuple"):
        tasks_by_key.setdefault(record["key"], set()).add(record["task"])
    assert all(len(tasks) == 1 for tasks in tasks_by_key.values()), tasks_by_key
    assert len(run.pids()) == 3

    # The bolt processes end with the JVM (their stdin closes).
    pids = run.pids()
    run.stop()
    wait_gone(pids)


def test_a_killed_python_bolt_ends_the_jvm_and_a_new_run_replays_what_was_not_acked(topic: Topic, runs) -> None:
    records = [(f"k{i % 4}", f"m{i}") for i in range(20)] + [("k0", "hold-1"), ("k1", "hold-2")]
    topic.produce(records)

    first = runs(hold=True)
    first.wait_for(lambda: first.words("sink", "hold") == ["HOLD-1", "HOLD-2"], "the sink to hold two words")
    first.wait_for(lambda: len(first.words("sink", "ack")) == 20, "the other words acked", timeout=30)
    [sink] = first.records("sink", "start")
    os.kill(sink["pid"], signal.SIGKILL)
    # Local mode does not restart the bolt: the sink's next tuple (a tick within a second)
    # finds it dead, the worker halts, and with it the whole JVM.
    assert first.wait_exit(timeout=60) != 0
    wait_gone(first.pids())
    assert topic.lag() >= 1

    # A new deployment on the same consumer group starts from the committed offsets.
    second = runs()
    second.wait_for(lambda: topic.lag() == 0, "the second run to commit every offset")
    replayed = second.words("sink", "ack")
    assert {"HOLD-1", "HOLD-2"} <= set(replayed)
    assert set(first.words("sink", "ack")) | set(replayed) == {value.upper() for _key, value in records}
