"""A subscriber client process: holds its share of the subscriptions on one asyncio loop
(uvloop) and records, for every message, which subscriber got which post and when.

It talks to the bench over a pipe. It sends `("tick", worker, delivered, open, primed)` every
`TICK` seconds, `("connected", worker, ConnectReport)` once every subscriber made its first
attempt, and `("result", WorkerResult)` after `"stop"`; `"go"` marks the start of the
measured phase (for the CPU figure). A subscription that fails or is closed by the edge is
counted as an error and opened again, fresh, after `RECONNECT_DELAY`: the gap is recorded, so
posts accepted while it was away are not expected from it.
"""

from __future__ import annotations

import asyncio
import resource
import signal
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from urllib.parse import quote

import uvloop
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import WebSocketException
from websockets.typing import Subprotocol

from threadcast.bench.http1 import Endpoint, HttpError, read_body, read_head, request, stream_body
from threadcast.bench.protocols import ProtocolError, SseParser, meta_frame_payload, post_id
from threadcast.bench.workload import SubscriberSpec

TICK = 0.25
RECONNECT_DELAY = 0.5
CONNECT_TIMEOUT = 10.0
META_SUBPROTOCOL = Subprotocol("ws+meta.nchan")


@dataclass(frozen=True)
class WorkerJob:
    worker: int
    edge: Endpoint
    channels: list[str]
    """The channel of each thread index."""
    specs: list[SubscriberSpec]
    connect_concurrency: int


@dataclass(frozen=True)
class ConnectReport:
    """The connect phase of one process: subscribers whose first attempt succeeded, when the
    first attempt began and the last one ended, and the CPU time it took."""

    ok: int
    started: float
    finished: float
    cpu_seconds: float


@dataclass
class WorkerResult:
    """Everything one client process saw. Receipts are three parallel arrays; `intervals` are
    the (from, to) times each subscriber was subscribed, `to` None meaning until the end."""

    worker: int
    receipt_subscriber: array
    receipt_post: array
    receipt_time: array
    intervals: dict[int, list[tuple[float, float | None]]]
    errors: dict[str, int]
    cpu_seconds: float
    """User + system CPU from "go" to "stop"."""
    measured_seconds: float
    max_rss_kb: int


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Recorder:
    """Receipts, subscription intervals and errors of one client process."""

    receipt_subscriber: array = field(default_factory=lambda: array("l"))
    receipt_post: array = field(default_factory=lambda: array("q"))
    receipt_time: array = field(default_factory=lambda: array("d"))
    intervals: dict[int, list[tuple[float, float | None]]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    primed: set[int] = field(default_factory=set)
    """Subscribers that received a priming message (post id 0 or less): surely subscribed."""
    open: int = 0

    @property
    def delivered(self) -> int:
        return len(self.receipt_time)

    def opened(self, index: int) -> None:
        self.intervals.setdefault(index, []).append((time.monotonic(), None))
        self.open += 1

    def closed(self, index: int) -> None:
        start, _ = self.intervals[index][-1]
        self.intervals[index][-1] = (start, time.monotonic())
        self.open -= 1

    def received(self, index: int, payload: bytes, at: float) -> None:
        try:
            post = post_id(payload)
        except ProtocolError:
            self.errors["unreadable message"] += 1
            return
        if post <= 0:
            self.primed.add(index)
            return
        self.receipt_subscriber.append(index)
        self.receipt_post.append(post)
        self.receipt_time.append(at)


Transport = Callable[[Endpoint, str, int, Recorder, Callable[[], None]], Awaitable[None]]


async def sse(edge: Endpoint, path: str, index: int, recorder: Recorder, established: Callable[[], None]) -> None:
    reader, writer = await asyncio.wait_for(edge.connect(), CONNECT_TIMEOUT)
    try:
        writer.write(request("GET", path, edge, {"Accept": "text/event-stream"}))
        head = await asyncio.wait_for(read_head(reader), CONNECT_TIMEOUT)
        if head.status != 200:
            raise HttpError(f"HTTP {head.status}")
        established()
        parser = SseParser()
        async for data in stream_body(reader, head):
            now = time.monotonic()
            for event in parser.feed(data):
                recorder.received(index, event, now)
    finally:
        writer.close()


async def longpoll(edge: Endpoint, path: str, index: int, recorder: Recorder, established: Callable[[], None]) -> None:
    """One request at a time on a keep-alive connection; each answer's `Etag` and
    `Last-Modified` ask for the message after it (so nothing is missed between requests).
    When the edge closes the connection after an answer (nginx's `keepalive_requests`), the
    next request goes out on a new one, as a browser's would."""
    validators: dict[str, str] = {}
    while True:
        reader, writer = await asyncio.wait_for(edge.connect(), CONNECT_TIMEOUT)
        try:
            writer.write(request("GET", path, edge, validators))
            if not validators:
                established()  # the first request is out: the edge holds it until the next message
            while True:
                head = await read_head(reader)
                body = await read_body(reader, head)
                now = time.monotonic()
                if head.status == 200:
                    recorder.received(index, body, now)
                    validators = {
                        name: head.headers[header]
                        for name, header in (("If-None-Match", "etag"), ("If-Modified-Since", "last-modified"))
                        if header in head.headers
                    }
                elif head.status not in (304, 408):  # a timed-out wait just asks again
                    raise HttpError(f"HTTP {head.status}")
                if head.headers.get("connection", "").lower() == "close":
                    break
                writer.write(request("GET", path, edge, validators))
        finally:
            writer.close()


async def websocket(edge: Endpoint, path: str, index: int, recorder: Recorder, established: Callable[[], None]) -> None:
    url = f"ws://{edge.host}:{edge.port}{path}"
    async with ws_connect(
        url,
        subprotocols=[META_SUBPROTOCOL],
        compression=None,
        max_size=None,
        ping_interval=None,
        open_timeout=CONNECT_TIMEOUT,
    ) as connection:
        established()
        async for frame in connection:
            now = time.monotonic()
            try:
                payload = meta_frame_payload(frame.encode() if isinstance(frame, str) else frame)
            except ProtocolError:
                recorder.errors["unreadable message"] += 1
                continue
            recorder.received(index, payload, now)


TRANSPORTS: dict[str, Transport] = {"sse": sse, "websocket": websocket, "longpoll": longpoll}


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "connect timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, HttpError):
        return f"http: {exc}"
    if isinstance(exc, WebSocketException):
        return f"websocket: {type(exc).__name__}"
    return f"connection: {type(exc).__name__}"


class Worker:
    """The subscriptions of one process, kept open until "stop"."""

    def __init__(self, job: WorkerJob, conn: Connection) -> None:
        self.job = job
        self.conn = conn
        self.recorder = Recorder()
        self.slots = asyncio.Semaphore(job.connect_concurrency)
        self.first_attempts_left = len(job.specs)
        self.connected = 0
        self.all_attempted = asyncio.Event()
        self.stop = asyncio.Event()
        self.connect_started = (time.monotonic(), cpu_seconds())
        self.connect_report: ConnectReport | None = None
        self.go_at: tuple[float, float] | None = None

    def first_attempt(self, ok: bool) -> None:
        self.connected += ok
        self.first_attempts_left -= 1
        if not self.first_attempts_left:
            started, cpu = self.connect_started
            self.connect_report = ConnectReport(self.connected, started, time.monotonic(), cpu_seconds() - cpu)
            self.all_attempted.set()

    async def keep_subscribed(self, spec: SubscriberSpec) -> None:
        path = "/sub/" + quote(self.job.channels[spec.thread], safe=":")
        transport = TRANSPORTS[spec.transport]
        first = True
        while True:
            await self.slots.acquire()
            holding = True

            def established() -> None:
                nonlocal holding, first
                self.recorder.opened(spec.index)
                self.slots.release()
                holding = False
                if first:
                    first = False
                    self.first_attempt(True)

            try:
                await transport(self.job.edge, path, spec.index, self.recorder, established)
                self.recorder.errors["closed by the edge"] += 1
            except (OSError, TimeoutError, HttpError, WebSocketException) as exc:
                self.recorder.errors[error_kind(exc)] += 1
            finally:
                if holding:
                    self.slots.release()
            if not holding:  # it was established: this subscription's interval ends now
                self.recorder.closed(spec.index)
            if first:
                first = False
                self.first_attempt(False)
            await asyncio.sleep(RECONNECT_DELAY)

    async def ticks(self) -> None:
        """Report every `TICK` seconds and take the bench's commands."""
        while not self.stop.is_set():
            r = self.recorder
            self.conn.send(("tick", self.job.worker, r.delivered, r.open, len(r.primed)))
            await asyncio.sleep(TICK)
            while self.conn.poll():
                command = self.conn.recv()
                if command == "go":
                    self.go_at = (time.monotonic(), cpu_seconds())
                elif command == "stop":
                    self.stop.set()

    async def run(self) -> WorkerResult:
        tasks = [asyncio.create_task(self.keep_subscribed(spec)) for spec in self.job.specs]
        ticker = asyncio.create_task(self.ticks())
        attempted = asyncio.create_task(self.all_attempted.wait())
        stopped = asyncio.create_task(self.stop.wait())
        await asyncio.wait([attempted, stopped], return_when=asyncio.FIRST_COMPLETED)
        if attempted.done():
            self.conn.send(("connected", self.job.worker, self.connect_report))
        await stopped
        attempted.cancel()
        ended = (time.monotonic(), cpu_seconds())
        for task in [*tasks, ticker]:
            task.cancel()
        await asyncio.gather(*tasks, ticker, return_exceptions=True)
        began = self.go_at or ended
        r = self.recorder
        return WorkerResult(
            worker=self.job.worker,
            receipt_subscriber=r.receipt_subscriber,
            receipt_post=r.receipt_post,
            receipt_time=r.receipt_time,
            intervals=r.intervals,
            errors=dict(r.errors),
            cpu_seconds=ended[1] - began[1],
            measured_seconds=ended[0] - began[0],
            max_rss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        )


def worker_main(job: WorkerJob, conn: Connection) -> None:
    """Process entry point. Ctrl-C is the bench's to handle: it sends "stop"."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def main() -> None:
        result = await Worker(job, conn).run()
        conn.send(("result", result))

    uvloop.run(main())
