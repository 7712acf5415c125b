"""Push edge contract: the embedded edge (served by uvicorn here) and nginx + Nchan (when
`THREADCAST_TEST_BACKENDS` names nchan; `THREADCAST_TEST_NCHAN_URL` is its base URL) behave the
same for SSE, WebSocket and long-poll subscribers of `threadcast.edge.subscriber`.

A fresh subscriber cannot tell when the edge registered it, so `Reader.prime` publishes
"primer" messages until one arrives; tests then ignore primers.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import connect as ws_connect

from tests.conftest import backend_params, free_port
from threadcast.api.edge_auth import build_edge_auth_router
from threadcast.api.rate_limits import RateLimits
from threadcast.config import Settings
from threadcast.coord import LiveConfig
from threadcast.edge import subscriber
from threadcast.edge.app import create_edge_app
from threadcast.edge.auth import sign_subscription
from threadcast.edge.http_publisher import HttpEdgePublisher, edge_base_url
from threadcast.edge.hub import Hub
from threadcast.edge.publisher import EdgeError, EdgePublisher
from threadcast.edge.subscriber import Received, SubscribeError

TRANSPORTS = ["sse", "websocket", "longpoll"]
PRIMER = b'"primer"'
EMBEDDED_BUFFER = 8
DEADLINE = 15.0


@dataclass
class Edge:
    base_url: str
    publisher: EdgePublisher
    secret: str
    buffer_length: int


@asynccontextmanager
async def serving(app: object, port: int | None = None) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on loopback (a free port by default); yield its base URL."""
    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1, ws_ping_interval=None
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started or task.done())
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def wait_until(condition: Callable[[], bool], timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def embedded_edge(longpoll_timeout: float = 30.0, **settings: object) -> AsyncIterator[tuple[Edge, Hub]]:
    """A standalone embedded edge served on loopback, and its hub."""
    config = Settings(channel_buffer_length=EMBEDDED_BUFFER, **settings)  # type: ignore[arg-type]
    hub = Hub(config.channel_buffer_length, config.channel_buffer_ttl)
    async with serving(create_edge_app(hub, config, longpoll_timeout=longpoll_timeout)) as base_url:
        yield Edge(base_url, hub, config.secret, config.channel_buffer_length), hub


@pytest.fixture(params=backend_params("nchan"))
async def edge(request: pytest.FixtureRequest) -> AsyncIterator[Edge]:
    if request.param == "embedded":
        async with embedded_edge() as (embedded, _):
            yield embedded
        return
    url = os.environ["THREADCAST_TEST_NCHAN_URL"]
    publisher = HttpEdgePublisher([url])
    await publisher.start()
    settings = Settings(edge_url=f"nchan+{url}")
    buffer_length = int(os.environ.get("THREADCAST_TEST_NCHAN_BUFFER_LENGTH", settings.channel_buffer_length))
    # nginx asks the API to authorize private channels and to allow resumes: serve that part.
    authorizer = FastAPI()
    authorizer.include_router(build_edge_auth_router(settings, RateLimits(LiveConfig)))
    try:
        async with serving(authorizer, port=int(os.environ["THREADCAST_TEST_NCHAN_API_PORT"])):
            yield Edge(edge_base_url(url), publisher, settings.secret, buffer_length)
    finally:
        await publisher.close()


def unique(prefix: str = "test") -> str:
    return f"{prefix}:{uuid.uuid4().hex[:12]}"


async def publish(edge: Edge, channel: str, data: bytes) -> None:
    await edge.publisher.publish(channel, data, message_id=uuid.uuid4().hex)


class Reader:
    """One subscription on a background task, collecting what it receives."""

    def __init__(
        self,
        transport: str,
        edge: Edge,
        channels: list[str],
        resume: Received | None = None,
        auth: str | None = None,
    ) -> None:
        self.received: list[Received] = []
        self.error: BaseException | None = None
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._run(self._stream(transport, edge.base_url, channels, resume, auth)))

    @staticmethod
    def _stream(
        transport: str, base_url: str, channels: list[str], resume: Received | None, auth: str | None
    ) -> AsyncIterator[Received]:
        if transport == "longpoll":
            etag, last_modified = (resume.id, resume.last_modified) if resume else (None, None)
            return subscriber.longpoll(base_url, channels, etag, last_modified, auth=auth)
        last_event_id = resume.id if resume else None
        return getattr(subscriber, transport)(base_url, channels, last_event_id, auth=auth)

    async def _run(self, stream: AsyncIterator[Received]) -> None:
        try:
            async for item in stream:
                async with self._changed:
                    self.received.append(item)
                    self._changed.notify_all()
        except Exception as exc:  # surfaced to the test by wait_for
            self.error = exc
        async with self._changed:
            self._changed.notify_all()

    @property
    def messages(self) -> list[Received]:
        return [item for item in self.received if item.data != PRIMER]

    async def wait_for(self, count: int, timeout: float = DEADLINE) -> list[bytes]:
        """The data of the first `count` non-primer messages, once they arrived."""

        def done() -> bool:
            return len(self.messages) >= count or self.error is not None or self._task.done()

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(done), timeout)
        if len(self.messages) < count:
            raise AssertionError(f"subscription ended early ({self.error!r}) after {self.messages}")
        return [item.data for item in self.messages]

    async def prime(self, edge: Edge, channel: str) -> None:
        """Publish primers to `channel` until one arrives: then the subscription is live."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            await edge.publisher.publish(channel, PRIMER, message_id=uuid.uuid4().hex)
            try:
                async with self._changed:
                    await asyncio.wait_for(self._changed.wait_for(lambda: bool(self.received) or self._task.done()), 0.05)
            except TimeoutError:
                continue
            if self.error is not None:
                raise self.error
            return
        raise TimeoutError("the subscriber never received a primer")

    async def ended(self) -> BaseException | None:
        await asyncio.wait_for(asyncio.shield(self._task), DEADLINE)
        return self.error

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
async def readers() -> AsyncIterator[Callable[..., Reader]]:
    """`readers(transport, edge, channels, ...)` makes a Reader closed at teardown."""
    made: list[Reader] = []

    def make(*args: object, **kwargs: object) -> Reader:
        reader = Reader(*args, **kwargs)  # type: ignore[arg-type]
        made.append(reader)
        return reader

    yield make
    for reader in made:
        await reader.close()


# -- delivery -----------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_published_message_reaches_subscriber_in_order(edge: Edge, readers, transport: str):
    channel = unique()
    reader = readers(transport, edge, [channel])
    await reader.prime(edge, channel)
    sent = [json.dumps({"n": n}).encode() for n in range(6)]  # fewer than the buffer: long-poll may lag
    for data in sent:
        await publish(edge, channel, data)
    assert await reader.wait_for(len(sent)) == sent


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_several_channels_on_one_connection(edge: Edge, readers, transport: str):
    thread, forum = unique("thread"), unique("forum")
    reader = readers(transport, edge, [thread, forum])
    await reader.prime(edge, thread)
    sent = [(thread, b"t1"), (forum, b"f1"), (forum, b"f2"), (thread, b"t2")]
    for channel, data in sent:
        await publish(edge, channel, data)
    got = await reader.wait_for(4)
    # Order holds per channel; Nchan's long-poll may hand over buffered messages channel by channel.
    assert [d for d in got if d.startswith(b"t")] == [b"t1", b"t2"]
    assert [d for d in got if d.startswith(b"f")] == [b"f1", b"f2"]
    assert len({item.id for item in reader.messages}) == 4


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_utf8_json_payloads_arrive_byte_for_byte(edge: Edge, readers, transport: str):
    channel = unique()
    reader = readers(transport, edge, [channel])
    await reader.prime(edge, channel)
    sent = [
        json.dumps({"text": "héllo wörld ✓ 😀 日本語", "quote": '"', "escaped": "a\nb"}, ensure_ascii=False).encode(),
        b'{"multi":\n"line",\n"payload": [1,\n2]}',
        b"{}",
    ]
    for data in sent:
        await publish(edge, channel, data)
    assert await reader.wait_for(len(sent)) == sent


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_raw_publish_over_http_from_loopback(edge: Edge, readers, transport: str):
    channel = unique()
    reader = readers(transport, edge, [channel])
    await reader.prime(edge, channel)
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{edge.base_url}/pub/{channel}", content=b'{"raw": true}', headers={"X-Message-Id": uuid.uuid4().hex}
        )
    assert answer.status_code in (201, 202), answer.text
    assert await reader.wait_for(1) == [b'{"raw": true}']


# -- resume -------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_resume_gets_exactly_what_was_missed(edge: Edge, readers, transport: str):
    channel = unique()
    first = readers(transport, edge, [channel])
    await first.prime(edge, channel)
    await publish(edge, channel, b"m1")
    await first.wait_for(1)
    last = first.messages[-1]
    await first.close()

    for data in (b"m2", b"m3", b"m4"):
        await publish(edge, channel, data)
    resumed = readers(transport, edge, [channel], resume=last)
    assert await resumed.wait_for(3) == [b"m2", b"m3", b"m4"]
    await publish(edge, channel, b"m5")
    assert await resumed.wait_for(4) == [b"m2", b"m3", b"m4", b"m5"]
    assert not [item for item in resumed.received if item.data == PRIMER]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_resume_across_several_channels(edge: Edge, readers, transport: str):
    a, b = unique("thread"), unique("forum")
    first = readers(transport, edge, [a, b])
    await first.prime(edge, a)
    await publish(edge, b, b"b1")
    await first.wait_for(1)
    last = first.messages[-1]
    await first.close()

    missed = [(a, b"a2"), (b, b"b2"), (a, b"a3")]
    for channel, data in missed:
        await publish(edge, channel, data)
    resumed = readers(transport, edge, [a, b], resume=last)
    assert await resumed.wait_for(3) == [b"a2", b"b2", b"a3"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_resume_from_an_id_that_left_the_buffer_starts_at_the_oldest_left(
    edge: Edge, readers, transport: str
):
    channel = unique()
    first = readers(transport, edge, [channel])
    await first.prime(edge, channel)
    await publish(edge, channel, b"gone")
    await first.wait_for(1)
    last = first.messages[-1]
    await first.close()

    later = [f"m{n}".encode() for n in range(edge.buffer_length + 2)]
    for data in later:
        await publish(edge, channel, data)
    resumed = readers(transport, edge, [channel], resume=last)
    assert await resumed.wait_for(edge.buffer_length) == later[-edge.buffer_length :]


# -- private channels ---------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_private_channel_refused_without_a_valid_token(edge: Edge, transport: str):
    channel = f"user:{uuid.uuid4().int % 10**9}"
    later = int(time.time()) + 600
    valid_elsewhere = sign_subscription(edge.secret, ["user:42"], later)
    genuine = sign_subscription(edge.secret, [channel], later)
    tampered = genuine[:-1] + ("A" if genuine[-1] != "A" else "B")
    expired = sign_subscription(edge.secret, [channel], int(time.time()) - 1)
    for token in (None, valid_elsewhere, tampered, expired, sign_subscription("other-secret", [channel], later)):
        reader = Reader(transport, edge, [channel], auth=token)
        error = await reader.ended()
        assert isinstance(error, SubscribeError) and error.status == 403, (token, error)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_private_channel_with_a_valid_token(edge: Edge, readers, transport: str):
    channel, public = f"user:{uuid.uuid4().int % 10**9}", unique("thread")
    token = sign_subscription(edge.secret, [channel], int(time.time()) + 600)
    reader = readers(transport, edge, [public, channel], auth=token)
    await reader.prime(edge, channel)
    await publish(edge, channel, b'{"notification": 1}')
    assert await reader.wait_for(1) == [b'{"notification": 1}']


# -- embedded edge specifics: the wire format ---------------------------------------------------


async def test_eventsource_wire_format_and_heartbeat():
    async with embedded_edge(heartbeat_interval=0.05) as (edge, hub), httpx.AsyncClient() as client:
        channel = unique()
        url = f"{edge.base_url}/sub/{channel}"
        async with client.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["access-control-allow-origin"] == "*"
            lines = response.aiter_lines()

            async def next_line() -> str:
                return await asyncio.wait_for(anext(lines), DEADLINE)

            assert await next_line() == ": hi"
            await hub.publish(channel, b"line one\nline two", message_id="m1")
            seen = [await next_line()]
            while seen[-1] != "data: line two":
                seen.append(await next_line())
            seen.append(await next_line())
            while seen[-1] != ": ping":  # the heartbeat after the event
                seen.append(await next_line())
    message_id = hub.channel_info(channel).last_message_id
    event = seen.index(f"id: {message_id}")
    assert seen[event : event + 4] == [f"id: {message_id}", "data: line one", "data: line two", ""]


async def test_websocket_without_meta_subprotocol_gets_raw_frames():
    async with embedded_edge() as (edge, hub):
        channel = unique()
        async with ws_connect(f"ws{edge.base_url.removeprefix('http')}/sub/{channel}") as ws:
            assert ws.subprotocol is None
            await hub.publish(channel, '{"plain": "é"}'.encode(), message_id="m1")
            assert await asyncio.wait_for(ws.recv(), DEADLINE) == '{"plain": "é"}'


async def test_longpoll_answers_304_after_its_timeout_and_carries_validators():
    async with embedded_edge(longpoll_timeout=0.1) as (edge, hub), httpx.AsyncClient() as client:
        channel = unique()
        url = f"{edge.base_url}/sub/{channel}"
        idle = await client.get(url)  # no validators: waits for a new message, none comes
        assert idle.status_code == 304
        await hub.publish(channel, b"first", message_id="m1")
        since_epoch = await client.get(url, headers={"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"})
        assert since_epoch.status_code == 200 and since_epoch.content == b"first"
        assert since_epoch.headers["etag"] == hub.channel_info(channel).last_message_id
        assert since_epoch.headers["last-modified"].endswith("GMT")
        after_last = await client.get(url, headers={"If-None-Match": since_epoch.headers["etag"]})
        assert after_last.status_code == 304


async def test_http_publisher_against_a_remote_embedded_edge(readers):
    async with embedded_edge(max_message_bytes=64) as (edge, hub):
        publisher = HttpEdgePublisher([f"nchan+{edge.base_url}/"], retries=1, backoff=0.01)
        await publisher.start()
        try:
            await publisher.ping()
            remote = Edge(edge.base_url, publisher, edge.secret, edge.buffer_length)
            channel = unique()
            reader = readers("sse", remote, [channel])
            await reader.prime(remote, channel)
            await publisher.publish(channel, b"once", message_id="event-1")
            await publisher.publish(channel, b"once", message_id="event-1")  # a redelivery: dropped
            await publisher.publish(channel, b"next", message_id="event-2")
            assert await reader.wait_for(2) == [b"once", b"next"]
            with pytest.raises(EdgeError, match="413"):
                await publisher.publish(channel, b"x" * 65, message_id="too-large")
        finally:
            await publisher.close()


async def test_http_publisher_raises_when_an_edge_is_unreachable():
    async with embedded_edge() as (edge, _):
        nowhere = f"http://127.0.0.1:{free_port()}"
        publisher = HttpEdgePublisher([edge.base_url, nowhere], retries=2, backoff=0.01, timeout=2.0)
        await publisher.start()
        try:
            with pytest.raises(EdgeError, match="unreachable"):
                await publisher.ping()
            with pytest.raises(EdgeError, match="ConnectError"):
                await publisher.publish(unique(), b"x", message_id="event-1")
        finally:
            await publisher.close()
