"""Storm's multilang protocol (threadcast.stats.storm.multilang): byte streams in, exact bytes out.

The input messages are shaped as Storm 2.8's JsonSerializer writes them; a real Storm talks to
the same adapter in tests/e2e/test_storm_local.py."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest

from threadcast.stats.storm.multilang import Collector, Setup, ShellBoltAdapter, StormTuple

PID = 4242


def frames(*messages: Any) -> bytes:
    return b"".join(orjson.dumps(message) + b"\nend\n" for message in messages)


def handshake(pid_dir: Path) -> dict[str, Any]:
    return {
        "conf": {"topology.name": "probe", "topology.tick.tuple.freq.secs": 1},
        "context": {"taskid": 3, "task->component": {"3": "upper", "4": "kafka"}, "componentid": "upper"},
        "pidDir": str(pid_dir),
    }


def data(tuple_id: str, *values: Any) -> dict[str, Any]:
    return {"id": tuple_id, "comp": "kafka", "stream": "default", "task": 4, "tuple": list(values)}


def heartbeat(tuple_id: str = "-6955786537413359385") -> dict[str, Any]:
    return {"id": tuple_id, "comp": None, "stream": "__heartbeat", "task": -1, "tuple": []}


def tick(tuple_id: str) -> dict[str, Any]:
    return {"id": tuple_id, "comp": "__system", "stream": "__tick", "task": -1, "tuple": [1]}


class Upper:
    """Emits each value upper-cased, anchored to its input, then acks; records what it saw."""

    def __init__(self, collector: Collector, setup: Setup) -> None:
        self.collector = collector
        self.setup = setup
        self.seen: list[StormTuple] = []
        self.ticks: list[float] = []

    def process(self, tup: StormTuple) -> None:
        self.seen.append(tup)
        self.collector.emit([tup.values[0].upper()], anchors=[tup])
        self.collector.ack(tup)

    def tick(self, now: float) -> None:
        self.ticks.append(now)


class Run:
    """One adapter run over a given input; keeps the bolt it built."""

    def __init__(self, tmp_path: Path, make_bolt=Upper) -> None:
        self.pid_dir = tmp_path / "pids"
        self.pid_dir.mkdir()
        self.make_bolt = make_bolt
        self.bolt: Any = None

    def __call__(self, *messages: Any, raw: bytes = b"") -> bytes:
        stdin = io.BytesIO(frames(handshake(self.pid_dir), *messages) + raw)
        stdout = io.BytesIO()

        def build(collector: Collector, setup: Setup) -> Any:
            self.bolt = self.make_bolt(collector, setup)
            return self.bolt

        ShellBoltAdapter(build, stdin, stdout, clock=lambda: 1700000000.5, pid=PID).run()
        return stdout.getvalue()


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return Run(tmp_path)


PID_REPLY = b'{"pid":4242}\nend\n'


def test_handshake_writes_the_pid_file_and_answers_the_pid(run: Run) -> None:
    assert run() == PID_REPLY
    assert [p.name for p in run.pid_dir.iterdir()] == [str(PID)]
    assert run.bolt.setup.task_id == 3
    assert run.bolt.setup.component_id == "upper"
    assert run.bolt.setup.conf["topology.name"] == "probe"


def test_tuple_is_processed_with_an_anchored_emit_then_ack(run: Run) -> None:
    out = run(data("7", "hello"))
    assert out == PID_REPLY + (
        b'{"command":"emit","anchors":["7"],"tuple":["HELLO"],"need_task_ids":false}\nend\n'
        b'{"command":"ack","id":"7"}\nend\n'
    )
    [tup] = run.bolt.seen
    assert tup == StormTuple(id="7", component="kafka", stream="default", task=4, values=["hello"])


def test_heartbeat_is_answered_with_sync_and_not_shown_to_the_bolt(run: Run) -> None:
    out = run(heartbeat(), data("8", "a"), heartbeat("99"))
    assert out == PID_REPLY + (
        b'{"command":"sync"}\nend\n'
        b'{"command":"emit","anchors":["8"],"tuple":["A"],"need_task_ids":false}\nend\n'
        b'{"command":"ack","id":"8"}\nend\n'
        b'{"command":"sync"}\nend\n'
    )
    assert [t.id for t in run.bolt.seen] == ["8"]


def test_tick_calls_tick_with_the_clock_and_is_acked(run: Run) -> None:
    out = run(tick("-1234"))
    assert out == PID_REPLY + b'{"command":"ack","id":"-1234"}\nend\n'
    assert run.bolt.ticks == [1700000000.5]
    assert run.bolt.seen == []


def test_tick_is_acked_for_a_bolt_without_tick(tmp_path: Path) -> None:
    class NoTick:
        def __init__(self, collector: Collector, setup: Setup) -> None:
            self.collector = collector

        def process(self, tup: StormTuple) -> None:
            self.collector.ack(tup)

    out = Run(tmp_path, NoTick)(tick("5"), data("6", "x"))
    assert out == PID_REPLY + b'{"command":"ack","id":"5"}\nend\n{"command":"ack","id":"6"}\nend\n'


def test_emit_on_a_stream_fail_log_and_error(tmp_path: Path) -> None:
    class Chatty:
        def __init__(self, collector: Collector, setup: Setup) -> None:
            self.collector = collector

        def process(self, tup: StormTuple) -> None:
            self.collector.emit(["late", 3], stream="late")
            self.collector.log("dropping late event", level="warn")
            self.collector.error("late by 3 minutes")
            self.collector.fail(tup)

    out = Run(tmp_path, Chatty)(data("11", "x"))
    assert out == PID_REPLY + (
        b'{"command":"emit","anchors":[],"tuple":["late",3],"need_task_ids":false,"stream":"late"}\nend\n'
        b'{"command":"log","msg":"dropping late event","level":3}\nend\n'
        b'{"command":"error","msg":"late by 3 minutes"}\nend\n'
        b'{"command":"fail","id":"11"}\nend\n'
    )


def test_emit_with_task_ids_reads_the_reply_and_keeps_messages_that_came_first(tmp_path: Path) -> None:
    class WantsTasks:
        def __init__(self, collector: Collector, setup: Setup) -> None:
            self.collector = collector
            self.tasks: list[list[int] | None] = []

        def process(self, tup: StormTuple) -> None:
            self.tasks.append(self.collector.emit(tup.values, anchors=[tup], need_task_ids=True))
            self.collector.ack(tup)

    run = Run(tmp_path, WantsTasks)
    # Storm's writer thread may send a heartbeat before the task ids of the emit.
    out = run(data("1", "a"), heartbeat("hb"), [5, 6], data("2", "b"), [7])
    assert run.bolt.tasks == [[5, 6], [7]]
    assert out == PID_REPLY + (
        b'{"command":"emit","anchors":["1"],"tuple":["a"],"need_task_ids":true}\nend\n'
        b'{"command":"ack","id":"1"}\nend\n'
        b'{"command":"sync"}\nend\n'
        b'{"command":"emit","anchors":["2"],"tuple":["b"],"need_task_ids":true}\nend\n'
        b'{"command":"ack","id":"2"}\nend\n'
    )


def test_a_message_may_span_several_lines(run: Run) -> None:
    raw = b'{"id": "9", "comp": "kafka",\n "stream": "default", "task": 4,\n "tuple": ["multi"]}\nend\n'
    out = run(raw=raw)
    assert out.endswith(b'{"command":"ack","id":"9"}\nend\n')
    assert run.bolt.seen[0].values == ["multi"]


def test_end_of_input_mid_message_ends_the_run_quietly(run: Run) -> None:
    out = run(data("1", "a"), raw=b'{"id": "2", "comp"')
    assert out.endswith(b'{"command":"ack","id":"1"}\nend\n')


def test_an_exception_in_the_bolt_is_reported_then_raised(tmp_path: Path) -> None:
    class Broken:
        def __init__(self, collector: Collector, setup: Setup) -> None:
            pass

        def process(self, tup: StormTuple) -> None:
            raise ValueError("bad tuple " + tup.id)

    stdout = io.BytesIO()
    stdin = io.BytesIO(frames(handshake(tmp_path), data("3", "x"), data("4", "y")))
    with pytest.raises(ValueError, match="bad tuple 3"):
        ShellBoltAdapter(Broken, stdin, stdout, pid=PID).run()
    [pid_reply, error, tail] = stdout.getvalue().split(b"\nend\n")
    assert orjson.loads(pid_reply) == {"pid": PID}
    message = orjson.loads(error)
    assert message["command"] == "error"
    assert "ValueError: bad tuple 3" in message["msg"]
    assert tail == b""


BOLT_THAT_PRINTS = textwrap.dedent(
    """
    from threadcast.stats.storm.multilang import run_bolt

    class Printer:
        def __init__(self, collector, setup):
            self.collector = collector
            print("hello from", setup.component_id)

        def process(self, tup):
            print("processing", tup.id)
            self.collector.ack(tup)

    run_bolt(Printer)
    """
)


def test_run_bolt_keeps_prints_off_the_protocol(tmp_path: Path) -> None:
    stdin = frames(handshake(tmp_path), data("5", "x"), heartbeat())
    done = subprocess.run(
        [sys.executable, "-c", BOLT_THAT_PRINTS], input=stdin, capture_output=True, timeout=30, check=True
    )
    [pid_file] = tmp_path.iterdir()
    assert done.stdout == (
        f'{{"pid":{pid_file.name}}}\nend\n'.encode() + b'{"command":"ack","id":"5"}\nend\n{"command":"sync"}\nend\n'
    )
    assert done.stderr.decode().splitlines() == ["hello from upper", "processing 5"]
