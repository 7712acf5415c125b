"""A threadcast bolt as a Storm shell bolt (threadcast.stats.storm.bolt), fed the messages Storm
writes; a real Storm runs it in tests/e2e/test_storm_stats.py."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest

from threadcast.events import Event, encode
from threadcast.stats.storm.bolt import ShellBolt, bolt_conf
from threadcast.stats.storm.multilang import Collector, Setup, ShellBoltAdapter
from threadcast.stats.topology import Bolt, TopologyContext, Tuple

PID = 4242


class Recorder(Bolt):
    """Emits (key, VALUE) anchored to its input; async; remembers what it was given."""

    outputs: ClassVar[Mapping[str, tuple[str, ...]]] = {"default": ("key", "upper")}
    made: ClassVar[list[Recorder]] = []

    def prepare(self, conf: Mapping[str, Any], context: TopologyContext, collector: Any) -> None:
        super().prepare(conf, context, collector)
        self.seen: list[Tuple] = []
        self.ticks: list[float] = []
        Recorder.made.append(self)

    async def process(self, tup: Tuple) -> None:
        await asyncio.sleep(0)
        self.seen.append(tup)
        if tup["value"] == "boom":
            raise RuntimeError("boom")
        self.collector.emit([tup["key"], tup["value"].upper()], anchors=[tup])
        self.collector.ack(tup)
        self.collector.ack(tup)  # a second ack goes nowhere (Storm would kill the bolt)

    def tick(self, now: float) -> None:
        self.ticks.append(now)


def frames(*messages: Any) -> bytes:
    return b"".join(orjson.dumps(message) + b"\nend\n" for message in messages)


def handshake(pid_dir: Path, task: int = 6) -> dict[str, Any]:
    return {
        "conf": {
            "topology.name": "stats-x",
            "threadcast": {
                "name": "stats-x",
                "conf": {"window": 60, "store_url": "nope"},
                "bolts": {"rec": {"window": 5}},
                "outputs": {"log": {"default": ["topic", "partition", "offset", "key", "value"]}, "rec": {}},
            },
        },
        "context": {"taskid": task, "task->component": {"2": "log", "5": "rec", "6": "rec", "7": "rec"}, "componentid": "rec"},
        "pidDir": str(pid_dir),
    }


def record(tuple_id: str, value: str) -> dict[str, Any]:
    return {"id": tuple_id, "comp": "log", "stream": "default", "task": 2, "tuple": ["events", 0, 7, "k1", value]}


def run(tmp_path: Path, *messages: Any) -> list[dict[str, Any]]:
    Recorder.made.clear()
    stdin = io.BytesIO(frames(handshake(tmp_path), *messages))
    stdout = io.BytesIO()

    def make(collector: Collector, setup: Setup) -> ShellBolt:
        return ShellBolt(Recorder, collector, setup)

    ShellBoltAdapter(make, stdin, stdout, clock=lambda: 1700000000.5, pid=PID).run()
    return [orjson.loads(part) for part in stdout.getvalue().split(b"\nend\n") if part]


def test_the_bolt_is_prepared_with_its_conf_and_its_place_in_the_component(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("THREADCAST_STORE_URL", "s3://bucket/p")
    assert run(tmp_path) == [{"pid": PID}]
    [bolt] = Recorder.made
    assert bolt.conf == {"window": 5, "store_url": "s3://bucket/p"}
    assert bolt.context == TopologyContext("stats-x", "rec", task=6, task_index=1, parallelism=3)


def test_tuples_come_with_field_names_emits_are_anchored_and_acks_go_once(tmp_path: Path) -> None:
    out = run(tmp_path, record("-11", "hello"))
    assert out[1:] == [
        {"command": "emit", "anchors": ["-11"], "tuple": ["k1", "HELLO"], "need_task_ids": False, "stream": "default"},
        {"command": "ack", "id": "-11"},
    ]
    [bolt] = Recorder.made
    [tup] = bolt.seen
    assert (tup.id, tup.component, tup.stream, tup.task) == ("-11", "log", "default", 2)
    assert tup["offset"] == 7 and tup.values[4] == "hello"


def test_an_exception_is_reported_and_fails_the_tuple_and_the_bolt_goes_on(tmp_path: Path) -> None:
    out = run(tmp_path, record("1", "boom"), record("2", "fine"))
    error, fail, emit, ack = out[1:]
    assert error["command"] == "error" and "RuntimeError: boom" in error["msg"]
    assert fail == {"command": "fail", "id": "1"}
    assert (emit["tuple"], ack) == (["k1", "FINE"], {"command": "ack", "id": "2"})


def test_ticks_reach_tick(tmp_path: Path) -> None:
    out = run(tmp_path, {"id": "-5", "comp": "__system", "stream": "__tick", "task": -1, "tuple": [1]})
    assert out[1:] == [{"command": "ack", "id": "-5"}]
    assert Recorder.made[0].ticks == [1700000000.5]


def test_conf_layers_topology_then_bolt_then_environment() -> None:
    threadcast = {"conf": {"a": 1, "b": 1, "store_url": ""}, "bolts": {"x": {"b": 2}}}
    assert bolt_conf(threadcast, "x", {}) == {"a": 1, "b": 2, "store_url": ""}
    assert bolt_conf(threadcast, "y", {"THREADCAST_STORE_URL": "/s"}) == {"a": 1, "b": 1, "store_url": "/s"}


def test_the_module_runs_the_real_parse_bolt(tmp_path: Path) -> None:
    """`python -m threadcast.stats.storm.bolt threadcast.stats.parse:ParseBolt`, as Storm starts it."""
    event = Event("e1", "post.created", 12, "demo", 1_800_000_001.5, 1, {"author_name": "ann", "parent_id": None})
    conf = {
        "window": 60, "lateness": 10.0, "idle_timeout": 5.0, "deliveries_topic": "deliveries",
        "sources": ["events/0"], "store_root": str(tmp_path),
    }  # fmt: skip
    message = handshake(tmp_path)
    message["conf"]["threadcast"] = {
        "name": "stats",
        "conf": conf,
        "bolts": {"parse": {}},
        "outputs": {"log": {"default": ["topic", "partition", "offset", "key", "value"]}},
    }
    message["context"] = {"taskid": 3, "task->component": {"2": "log", "3": "parse"}, "componentid": "parse"}
    tup = {"id": "9", "comp": "log", "stream": "default", "task": 2, "tuple": ["events", 0, 4, "12", encode(event).decode()]}
    done = subprocess.run(
        [sys.executable, "-m", "threadcast.stats.storm.bolt", "threadcast.stats.parse:ParseBolt"],
        input=frames(message, tup),
        capture_output=True,
        timeout=60,
        check=True,
        env={**os.environ, "THREADCAST_STORE_URL": ""},
    )
    [pid, emit, ack] = [orjson.loads(part) for part in done.stdout.split(b"\nend\n") if part]
    assert pid["pid"] > 0
    assert emit == {
        "command": "emit",
        "anchors": ["9"],
        "tuple": ["demo", "post", "e1", 12, "ann", False, 1_800_000_001.5, 0.0, "events/0", 1_799_999_991.5, "on_time"],
        "need_task_ids": False,
        "stream": "default",
    }
    assert ack == {"command": "ack", "id": "9"}


def test_the_module_wants_one_bolt_class() -> None:
    done = subprocess.run([sys.executable, "-m", "threadcast.stats.storm.bolt"], capture_output=True, timeout=60)
    assert done.returncode != 0 and b"usage" in done.stderr


@pytest.fixture(autouse=True)
def _forget_store_url(monkeypatch) -> None:
    monkeypatch.delenv("THREADCAST_STORE_URL", raising=False)
