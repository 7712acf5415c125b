"""Storm's multilang protocol for Python shell bolts (ShellBolt / FluxShellBolt).

Storm starts the bolt as a subprocess and talks to it over stdin/stdout: each message is one JSON
document followed by a line `end`. The subprocess first receives the handshake (`conf`, `context`,
`pidDir`), creates an empty file named after its pid in `pidDir` and answers `{"pid": ...}`. Then
it receives tuples (`id`, `comp`, `stream`, `task`, `tuple`) and sends commands: `emit` (with
`anchors`, `stream`, `tuple`, `need_task_ids`), `ack`, `fail`, `log`, `error` and `sync`.

Two kinds of tuple come from Storm itself (task -1): heartbeats on stream `__heartbeat`, which
must be answered with `sync` and never acked (Storm does not track them), and tick tuples on
`__tick` (component config `topology.tick.tuple.freq.secs`), which Storm does track: the adapter
acks them after calling the bolt's `tick(now)`. Every other tuple must be acked or failed by the
bolt, once, after any emit anchored to it; Storm kills the bolt on an ack of an unknown id.

The adapter handles one message at a time, so a heartbeat waits while `process` or `tick` runs:
one that takes longer than `topology.subprocess.timeout.secs` (default: the supervisor's worker
timeout, 30 s) gets the bolt killed as hung.

Anything the bolt prints would corrupt the protocol, so `run_bolt` keeps the real stdout for
Storm and points file descriptor 1 and `sys.stdout` at stderr (Storm logs stderr lines under the
component's name). An exception from the bolt is reported with `error` and ends the process;
Storm then treats the bolt as dead (in local mode the whole JVM exits).

Reference: https://storm.apache.org/releases/current/Multilang-protocol.html
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import orjson

HEARTBEAT_STREAM = "__heartbeat"
TICK_STREAM = "__tick"
SYSTEM_TASK = -1
END = b"end"

# The `level` numbers of the `log` command (Storm's ShellLogHandler).
LOG_LEVELS = {"trace": 0, "debug": 1, "info": 2, "warn": 3, "warning": 3, "error": 4}


class StormWentAway(Exception):
    """Storm closed the bolt's stdin (the worker stopped or died)."""


@dataclass(frozen=True, slots=True)
class StormTuple:
    """One input tuple; `values` are in the order of the upstream component's output fields."""

    id: str
    component: str
    stream: str
    task: int
    values: list[Any]

    @property
    def is_heartbeat(self) -> bool:
        return self.task == SYSTEM_TASK and self.stream == HEARTBEAT_STREAM

    @property
    def is_tick(self) -> bool:
        return self.task == SYSTEM_TASK and self.stream == TICK_STREAM


@dataclass(frozen=True, slots=True)
class Setup:
    """What Storm sent in the handshake: the topology config and this task's context."""

    conf: dict[str, Any]
    context: dict[str, Any]
    pid_dir: str

    @property
    def task_id(self) -> int:
        return int(self.context["taskid"])

    @property
    def component_id(self) -> str:
        return str(self.context.get("componentid") or self.context["task->component"][str(self.task_id)])


class Anchor(Protocol):
    """What anchors, acks and fails name: a tuple Storm sent, by its id (a `StormTuple`, or the
    tuple type a bolt wraps it in)."""

    @property
    def id(self) -> str | int: ...


class Bolt(Protocol):
    """A Python bolt: `process` each input tuple; an optional `tick(now)` runs on tick tuples."""

    def process(self, tup: StormTuple) -> None: ...


class Channel:
    """Reads and writes multilang messages (JSON + a line `end`) on a pair of binary streams."""

    def __init__(self, stdin: BinaryIO, stdout: BinaryIO) -> None:
        self._stdin = stdin
        self._stdout = stdout
        # Messages read while waiting for something else (tuples that arrive before the task
        # ids of an emit), handed out by `read` first.
        self._pending: deque[Any] = deque()

    def read_raw(self) -> Any:
        """The next message, whatever its kind; StormWentAway at end of input."""
        lines: list[bytes] = []
        while True:
            line = self._stdin.readline()
            if not line:
                raise StormWentAway
            line = line.rstrip(b"\r\n")
            if line == END:
                break
            lines.append(line)
        return orjson.loads(b"\n".join(lines))

    def read(self) -> Any:
        return self._pending.popleft() if self._pending else self.read_raw()

    def read_task_ids(self) -> list[int]:
        """The reply to an emit with need_task_ids: the first list; other messages wait in line."""
        while True:
            message = self.read_raw()
            if isinstance(message, list):
                return message
            self._pending.append(message)

    def send(self, message: dict[str, Any]) -> None:
        self._stdout.write(orjson.dumps(message) + b"\nend\n")

    def flush(self) -> None:
        self._stdout.flush()


class Collector:
    """The bolt's way back to Storm: emit, ack, fail, log and error."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def emit(
        self,
        values: Sequence[Any],
        anchors: Iterable[Anchor] = (),
        stream: str | None = None,
        need_task_ids: bool = False,
    ) -> list[int] | None:
        """Emit a tuple, anchored to `anchors` (so that a failure downstream replays them).

        With need_task_ids, returns the ids of the tasks the tuple went to (one round trip)."""
        message: dict[str, Any] = {
            "command": "emit",
            "anchors": [tup.id for tup in anchors],
            "tuple": list(values),
            "need_task_ids": need_task_ids,
        }
        if stream is not None:
            message["stream"] = stream
        self._channel.send(message)
        if not need_task_ids:
            return None
        self._channel.flush()
        return self._channel.read_task_ids()

    def ack(self, tup: Anchor) -> None:
        self._channel.send({"command": "ack", "id": tup.id})

    def fail(self, tup: Anchor) -> None:
        self._channel.send({"command": "fail", "id": tup.id})

    def log(self, msg: str, level: str = "info") -> None:
        """A line in the worker's log, under the component's name."""
        self._channel.send({"command": "log", "msg": msg, "level": LOG_LEVELS[level]})

    def error(self, msg: str) -> None:
        """Report an error to Storm (shown with the component's errors; the bolt keeps running)."""
        self._channel.send({"command": "error", "msg": msg})


class ShellBoltAdapter:
    """Runs a Python bolt as a Storm shell bolt: handshake, then one message at a time.

    `make_bolt(collector, setup)` builds the bolt after the handshake, so that it can read the
    topology config and keep the collector. Output is flushed after each handled message."""

    def __init__(
        self,
        make_bolt: Callable[[Collector, Setup], Bolt],
        stdin: BinaryIO,
        stdout: BinaryIO,
        clock: Callable[[], float] = time.time,
        pid: int | None = None,
    ) -> None:
        self._make_bolt = make_bolt
        self._channel = Channel(stdin, stdout)
        self._collector = Collector(self._channel)
        self._clock = clock
        self._pid = os.getpid() if pid is None else pid

    def handshake(self) -> Setup:
        message = self._channel.read()
        setup = Setup(conf=message["conf"], context=message["context"], pid_dir=message["pidDir"])
        # The supervisor finds the subprocesses to kill through these files.
        (Path(setup.pid_dir) / str(self._pid)).touch()
        self._channel.send({"pid": self._pid})
        self._channel.flush()
        return setup

    def run(self) -> None:
        """Until Storm closes stdin; an exception from the bolt is reported, then raised."""
        try:
            setup = self.handshake()
            bolt = self._make_bolt(self._collector, setup)
            tick: Callable[[float], None] | None = getattr(bolt, "tick", None)
            while True:
                tup = _to_tuple(self._channel.read())
                if tup.is_heartbeat:
                    self._channel.send({"command": "sync"})
                elif tup.is_tick:
                    if tick is not None:
                        tick(self._clock())
                    self._collector.ack(tup)
                else:
                    bolt.process(tup)
                self._channel.flush()
        except StormWentAway:
            return
        except Exception:
            self._report(traceback.format_exc())
            raise

    def _report(self, text: str) -> None:
        try:
            self._collector.error(text)
            self._channel.flush()
        except OSError:
            pass


def _to_tuple(message: dict[str, Any]) -> StormTuple:
    return StormTuple(
        id=str(message["id"]),
        component=message["comp"],
        stream=message["stream"],
        task=int(message["task"]),
        values=message["tuple"],
    )


def _protocol_streams() -> tuple[BinaryIO, BinaryIO]:
    """stdin and the real stdout for Storm; fd 1 and sys.stdout then point at stderr."""
    sys.stdout.flush()
    stdout = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return sys.stdin.buffer, stdout


def run_bolt(make_bolt: Callable[[Collector, Setup], Bolt]) -> None:
    """Entry point for `python -m <module>` of a shell bolt: serve Storm on stdin/stdout."""
    stdin, stdout = _protocol_streams()
    ShellBoltAdapter(make_bolt, stdin, stdout).run()
