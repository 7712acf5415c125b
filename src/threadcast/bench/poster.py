"""The poster process: sends posts to Zipf-chosen threads and records, for each, when it was
sent and when it was accepted (the response arrived), with the post id the response names.

Against threadcast it POSTs comments to the API. Against raw Nchan it publishes a message of the
same shape straight to Nchan's `/pub/thread:{id}` and numbers the posts itself.

With a rate, post n is due at start + n / rate (open loop) and waits for one of `inflight`
keep-alive connections; posts still waiting at the end count as `not_sent`. With no rate
(`max`), each connection posts back to back (closed loop). It sends `("tick", "poster",
accepted, attempted)` every `TICK` seconds and `("result", PosterResult)` at the end.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import orjson
import uvloop

from threadcast.bench.http1 import Endpoint, HttpError, read_body, read_head, request
from threadcast.bench.subscribers import TICK, cpu_seconds
from threadcast.bench.workload import ThreadChooser

REQUEST_TIMEOUT = 10.0
JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class PosterJob:
    target: Endpoint
    raw_nchan: bool
    """Publish to Nchan's /pub/ (the ceiling) instead of POSTing to the threadcast API."""
    thread_ids: list[int]
    zipf: float
    seed: int
    rate: float | None
    inflight: int
    duration: float


@dataclass
class PosterResult:
    """One entry per accepted post in the four arrays (`thread` is the thread index)."""

    post_id: array = field(default_factory=lambda: array("q"))
    thread: array = field(default_factory=lambda: array("l"))
    sent: array = field(default_factory=lambda: array("d"))
    accepted: array = field(default_factory=lambda: array("d"))
    attempted: int = 0
    not_sent: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    started: float = 0.0
    finished: float = 0.0
    cpu_seconds: float = 0.0


def post_request(job: PosterJob, number: int, thread_id: int) -> tuple[bytes, int | None]:
    """The request for post `number` and, for raw Nchan, the post id it carries (threadcast
    gives the id in its response)."""
    message = f"bench post {number}"
    if not job.raw_nchan:
        body = orjson.dumps({"author_name": "bench", "message": message})
        return request("POST", f"/api/v1/threads/{thread_id}/posts", job.target, JSON, body), None
    channel = f"thread:{thread_id}"
    post = {
        "id": number,
        "thread_id": thread_id,
        "parent_id": None,
        "seq": number,
        "author_name": "bench",
        "message": message,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "version": 1,
    }
    push = {
        "id": f"bench-{number}",
        "type": "post.created",
        "channel": channel,
        "ts": time.time(),
        "seq": number,
        "data": post,
    }
    return request("POST", f"/pub/{channel}", job.target, JSON, orjson.dumps(push)), number


class Poster:
    def __init__(self, job: PosterJob, conn: Connection) -> None:
        self.job = job
        self.conn = conn
        self.chooser = ThreadChooser(len(job.thread_ids), job.zipf, job.seed)
        self.numbers = itertools.count(1)
        self.result = PosterResult()
        self.queue: asyncio.Queue[int | None] = asyncio.Queue()
        self.deadline = 0.0

    async def post(self, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter], number: int) -> bool:
        """Send post `number`, record it once accepted; False when the server closes the
        connection after answering (nginx's `keepalive_requests`)."""
        thread = self.chooser.next()
        raw, known_id = post_request(self.job, number, self.job.thread_ids[thread])
        reader, writer = connection
        sent = time.monotonic()
        writer.write(raw)
        head = await read_head(reader)
        body = await read_body(reader, head)
        accepted = time.monotonic()
        if 200 <= head.status < 300:
            r = self.result
            r.post_id.append(known_id if known_id is not None else int(orjson.loads(body)["id"]))
            r.thread.append(thread)
            r.sent.append(sent)
            r.accepted.append(accepted)
        else:
            self.result.errors[f"HTTP {head.status}"] += 1
        return head.headers.get("connection", "").lower() != "close"

    async def next_due(self) -> int | None:
        return await self.queue.get()

    async def next_now(self) -> int | None:
        return next(self.numbers) if time.monotonic() < self.deadline else None

    async def connection_loop(self, take: Callable[[], Awaitable[int | None]]) -> None:
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while (number := await take()) is not None:
            self.result.attempted += 1
            try:
                if connection is None:
                    connection = await asyncio.wait_for(self.job.target.connect(), REQUEST_TIMEOUT)
                if not await asyncio.wait_for(self.post(connection, number), REQUEST_TIMEOUT):
                    connection[1].close()
                    connection = None
            except (OSError, TimeoutError, HttpError, ValueError, KeyError) as exc:
                self.result.errors[f"post: {type(exc).__name__}"] += 1
                if connection is not None:
                    connection[1].close()
                connection = None
        if connection is not None:
            connection[1].close()

    async def schedule(self, start: float, rate: float) -> None:
        """Put each post on the queue when it is due; at the deadline, drop what still waits."""
        for number in self.numbers:
            due = start + (number - 1) / rate
            if due >= self.deadline:
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            self.queue.put_nowait(number)
        await asyncio.sleep(max(0.0, self.deadline - time.monotonic()))
        while not self.queue.empty():
            self.queue.get_nowait()
            self.result.not_sent += 1
        for _ in range(self.job.inflight):
            self.queue.put_nowait(None)

    async def ticks(self) -> None:
        while True:
            self.conn.send(("tick", "poster", len(self.result.accepted), self.result.attempted))
            await asyncio.sleep(TICK)

    async def run(self) -> PosterResult:
        r = self.result
        r.started = time.monotonic()
        cpu_before = cpu_seconds()
        self.deadline = r.started + self.job.duration
        ticker = asyncio.create_task(self.ticks())
        take = self.next_now
        scheduler = None
        if self.job.rate is not None:
            take = self.next_due
            scheduler = asyncio.create_task(self.schedule(r.started, self.job.rate))
        await asyncio.gather(*(self.connection_loop(take) for _ in range(self.job.inflight)))
        if scheduler is not None:
            await scheduler
        ticker.cancel()
        r.finished = time.monotonic()
        r.cpu_seconds = cpu_seconds() - cpu_before
        return r


def poster_main(job: PosterJob, conn: Connection) -> None:
    """Process entry point; Ctrl-C is the bench's to handle (it ends this process)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def main() -> None:
        result = await Poster(job, conn).run()
        conn.send(("result", result))

    uvloop.run(main())
