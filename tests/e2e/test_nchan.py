"""End to end through nginx + Nchan, the production edge.

Selected when `THREADCAST_TEST_BACKENDS` names nchan (then nginx must be running: `dev/services
up nginx`; a stopped nginx fails these tests). `threadcast up` runs on the port nginx proxies the
API to (`THREADCAST_TEST_NCHAN_API_PORT`) and publishes to Nchan; browsers' traffic (posting,
subscribing) goes through nginx at `THREADCAST_TEST_NCHAN_URL`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from tests.conftest import free_port, selected_real_backends
from threadcast.config import Settings
from threadcast.edge import subscriber
from threadcast.edge.auth import sign_subscription
from threadcast.edge.nchan_status import NchanStatusCollector
from threadcast.edge.nginx_config import Address, EdgeConfigOptions, render_nginx_config
from threadcast.edge.subscriber import Received, SubscribeError
from threadcast.events import PushMessage, decode_push

from .conftest import UpProcess

pytestmark = pytest.mark.skipif("nchan" not in selected_real_backends(), reason="nchan is not selected")

NCHAN_URL = os.environ.get("THREADCAST_TEST_NCHAN_URL", "http://127.0.0.1:18080")
API_PORT = int(os.environ.get("THREADCAST_TEST_NCHAN_API_PORT", "18000"))
ROOT = Path(__file__).resolve().parents[2]
NGINX_DIR = Path(os.environ.get("THREADCAST_RUN_DIR", ROOT / ".run")) / "nginx"
TRANSPORTS = ["sse", "websocket", "longpoll"]
PRIMER = b'"primer"'
DEADLINE = 20.0


class NchanApi(UpProcess):
    """`threadcast up` on the port nginx expects, publishing to the Nchan edge."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, env={"THREADCAST_EDGE_URL": f"nchan+{NCHAN_URL}"})
        self.port = API_PORT
        self.base_url = f"http://127.0.0.1:{API_PORT}"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NchanApi]:
    httpx.get(f"{NCHAN_URL}/nchan_stub_status").raise_for_status()  # nginx must be up: fail, never skip
    process = NchanApi(tmp_path_factory.mktemp("nchan") / "up")
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=NCHAN_URL, timeout=10) as client:
        yield client


async def new_thread(http: httpx.AsyncClient) -> int:
    answer = await http.post("/api/v1/threads", json={"forum": "demo", "identifier": uuid.uuid4().hex, "title": "e2e"})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


async def create_post(client: httpx.AsyncClient, thread_id: int, message: str) -> dict:
    answer = await client.post(f"/api/v1/threads/{thread_id}/posts", json={"author_name": "e2e", "message": message})
    assert answer.status_code == 201, answer.text
    return answer.json()


async def wait_until(condition, timeout: float = DEADLINE) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)


def push_message(item: Received) -> PushMessage | None:
    """The push message in `item`, or None for a primer."""
    try:
        return decode_push(item.data)
    except msgspec.DecodeError:
        return None


class Reader:
    """One subscription through nginx on a background task, collecting what arrives."""

    def __init__(self, transport: str, channels: list[str], resume: Received | None = None, auth: str | None = None):
        self.received: list[Received] = []
        self.error: BaseException | None = None
        if transport == "longpoll":
            etag, modified = (resume.id, resume.last_modified) if resume else (None, None)
            stream = subscriber.longpoll(NCHAN_URL, channels, etag, modified, auth=auth)
        else:
            last_id = resume.id if resume else None
            stream = getattr(subscriber, transport)(NCHAN_URL, channels, last_id, auth=auth)
        self._task = asyncio.create_task(self._run(stream))

    async def _run(self, stream: AsyncIterator[Received]) -> None:
        try:
            async for item in stream:
                self.received.append(item)
        except Exception as exc:  # surfaced by the test
            self.error = exc

    @property
    def messages(self) -> list[tuple[Received, PushMessage]]:
        return [(item, message) for item in self.received if (message := push_message(item)) is not None]

    async def wait_for(self, count: int) -> list[PushMessage]:
        await wait_until(lambda: len(self.messages) >= count or self._task.done())
        assert len(self.messages) >= count, f"subscription ended ({self.error!r}) after {self.received}"
        return [message for _, message in self.messages]

    async def ended(self) -> BaseException | None:
        await asyncio.wait_for(asyncio.shield(self._task), DEADLINE)
        return self.error

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def prime(http: httpx.AsyncClient, channel: str, readers: list[Reader]) -> None:
    """Publish primers until every reader got one: then their subscriptions are live."""
    deadline = time.monotonic() + DEADLINE
    while not all(reader.received for reader in readers):
        assert time.monotonic() < deadline, "a subscriber never received a primer"
        assert not [reader.error for reader in readers if reader.error], [reader.error for reader in readers]
        assert (await http.post(f"/pub/{channel}", content=PRIMER)).status_code in (201, 202)
        await asyncio.sleep(0.05)


def nginx_log_size() -> int:
    return (NGINX_DIR / "error.log").stat().st_size


def worker_crashes_since(offset: int) -> list[str]:
    with open(NGINX_DIR / "error.log", "rb") as log:
        log.seek(offset)
        return [line for line in log.read().decode(errors="replace").splitlines() if "exited on signal" in line]


async def test_a_posted_comment_reaches_sse_websocket_and_longpoll_subscribers(api: NchanApi, http: httpx.AsyncClient):
    thread_id = await new_thread(http)
    channel = f"thread:{thread_id}"
    readers = [Reader(transport, [channel]) for transport in TRANSPORTS]
    try:
        await prime(http, channel, readers)
        post = await create_post(http, thread_id, "hello through nginx")  # through nginx's /api/ proxy
        for reader in readers:
            [message] = await reader.wait_for(1)
            assert (message.type, message.channel, message.seq) == ("post.created", channel, 1)
            assert message.data["id"] == post["id"] and message.data["message"] == "hello through nginx"
    finally:
        for reader in readers:
            await reader.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_reconnect_with_last_event_id_resumes_without_loss(api: NchanApi, http: httpx.AsyncClient, transport: str):
    thread_id = await new_thread(http)
    channel = f"thread:{thread_id}"
    first, watcher = Reader(transport, [channel]), Reader("sse", [channel])
    try:
        await prime(http, channel, [first, watcher])
        await create_post(http, thread_id, "one")
        await first.wait_for(1)
        last_seen = first.messages[-1][0]
        await first.close()
        for text in ("two", "three"):
            await create_post(http, thread_id, text)
        await watcher.wait_for(3)  # both reached the edge's buffer

        resumed = Reader(transport, [channel], resume=last_seen)
        try:
            assert [message.seq for message in await resumed.wait_for(2)] == [2, 3]
            await create_post(http, thread_id, "four")
            assert [message.seq for message in await resumed.wait_for(3)] == [2, 3, 4]
            assert [push_message(item) for item in resumed.received].count(None) == 0
        finally:
            await resumed.close()
    finally:
        await watcher.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_private_channel_needs_a_valid_token(api: NchanApi, http: httpx.AsyncClient, transport: str):
    user = f"user:{uuid.uuid4().int % 10**9}"
    secret = Settings().secret
    later = int(time.time()) + 600
    for token in (None, sign_subscription(secret, ["user:1"], later), sign_subscription("wrong", [user], later)):
        refused = Reader(transport, ["thread:1", user], auth=token)
        error = await refused.ended()
        assert isinstance(error, SubscribeError) and error.status == 403, (token, error)

    allowed = Reader(transport, ["thread:1", user], auth=sign_subscription(secret, [user], later))
    try:
        await prime(http, user, [allowed])
        assert allowed.error is None
    finally:
        await allowed.close()


async def test_publishing_from_outside_the_allowed_networks_is_refused(api: NchanApi, tmp_path: Path):
    """Loopback is 127.0.0.0/8: a client bound to 127.0.0.2 is outside an allow list of
    127.0.0.1, and inside `--allow 127.0.0.2/32` on a second nginx with that configuration."""

    async def status(base: str, path: str, source: str, method: str = "POST") -> int:
        transport = httpx.AsyncHTTPTransport(local_address=source)
        async with httpx.AsyncClient(transport=transport, base_url=base, timeout=10) as client:
            return (await client.request(method, path, content=b"{}")).status_code

    channel = f"test:{uuid.uuid4().hex}"
    assert await status(NCHAN_URL, f"/pub/{channel}", "127.0.0.2") == 403
    assert await status(NCHAN_URL, "/nchan_stub_status", "127.0.0.2", "GET") == 403
    assert await status(NCHAN_URL, f"/pub/{channel}", "127.0.0.1") in (201, 202)

    port = free_port()
    options = EdgeConfigOptions(
        listen=Address("127.0.0.1", port), prefix=tmp_path, allow=("127.0.0.2/32",), worker_connections=1000
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx_config(options, Settings()))
    subprocess.run(["nginx", "-p", str(tmp_path), "-c", str(conf)], check=True, capture_output=True)
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_until(lambda: (tmp_path / "nginx.pid").exists())
        assert await status(base, f"/pub/{channel}", "127.0.0.2") in (201, 202)
        assert await status(base, f"/pub/{channel}", "127.0.0.3") == 403
    finally:
        os.kill(int((tmp_path / "nginx.pid").read_text()), signal.SIGTERM)


async def test_a_resume_storm_on_empty_buffers_never_crashes_a_worker(api: NchanApi, http: httpx.AsyncClient):
    """What every client does right after an edge restart: resume on channels whose buffers are
    empty. Unguarded, Nchan 1.3.6 aborts workers; guarded, EventSource and WebSocket subscribers
    start fresh and get the next message, and long-poll resumes by header get 409."""
    log_offset = nginx_log_size()
    channel = f"thread:{uuid.uuid4().int % 10**9}"
    stale = Received(f"{int(time.time()) - 60}:0", b"", "Thu, 01 Jan 2026 00:00:00 GMT")
    streams = [Reader(transport, [channel], resume=stale) for transport in ("sse", "websocket") for _ in range(20)]
    polls = [Reader("longpoll", [channel], resume=stale) for _ in range(10)]
    try:
        for poll in polls:
            error = await poll.ended()
            assert isinstance(error, SubscribeError) and error.status == 409, error
        await prime(http, channel, streams)
        assert all(reader.error is None for reader in streams)
    finally:
        for reader in streams:
            await reader.close()
    assert worker_crashes_since(log_offset) == []


def test_stub_status_figures_reach_the_publishers_metrics(api: NchanApi):
    collector = NchanStatusCollector.for_edges(f"nchan+{NCHAN_URL}")
    asyncio.run(collector.refresh())
    families = {family.name: family for family in collector.collect()}
    assert [sample.value for sample in families["threadcast_nchan_up"].samples] == [1.0]
    published = families["threadcast_nchan_published_messages"].samples[0]
    assert published.labels == {"edge": NCHAN_URL} and published.value > 0
    served = httpx.get(f"{api.base_url}/metrics").text
    assert f'threadcast_nchan_up{{edge="{NCHAN_URL}"}} 1.0' in served


class CatchingUpReader:
    """What the embed does: an EventSource on the thread that applies each post once, by its
    per-thread seq. On every (re)connection, and when a message shows a hole, it refetches the
    posts after the last one it has from the API (not through the edge, which may be down)."""

    def __init__(self, thread_id: int, api_url: str) -> None:
        self.thread_id = thread_id
        self.api_url = api_url
        self.posts: dict[int, dict] = {}  # seq -> post
        self.deliveries = 0
        self.reconnects = 0
        self.last_event_id: str | None = None

    @property
    def next_seq(self) -> int:
        return len(self.posts) + 1

    def apply(self, post: dict) -> None:
        if post["seq"] == self.next_seq:
            self.posts[post["seq"]] = post
        else:
            assert post["seq"] < self.next_seq, "applied a post past a hole"
            assert self.posts[post["seq"]]["id"] == post["id"]

    async def backfill(self, client: httpx.AsyncClient) -> None:
        answer = await client.get(
            f"/api/v1/threads/{self.thread_id}/posts", params={"after_seq": self.next_seq - 1, "limit": 200}
        )
        answer.raise_for_status()
        for post in answer.json()["posts"]:
            self.apply(post)

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=self.api_url, timeout=10) as client:
            while not stop.is_set():
                try:
                    stream = subscriber.sse(NCHAN_URL, [f"thread:{self.thread_id}"], self.last_event_id)
                    await self.backfill(client)
                    async for item in stream:
                        self.last_event_id = item.id
                        message = push_message(item)
                        if message is None:
                            continue
                        self.deliveries += 1
                        if message.seq > self.next_seq:
                            await self.backfill(client)
                        self.apply(message.data)
                except (httpx.HTTPError, SubscribeError):
                    pass
                self.reconnects += 1
                await asyncio.sleep(0.05)


def dev_nginx(action: str) -> None:
    subprocess.run(["bash", str(ROOT / "dev" / "nginx" / "service"), action], check=True, capture_output=True)


async def test_nginx_restarted_while_posts_flow_every_reader_ends_with_every_post_once(
    api: NchanApi, http: httpx.AsyncClient
):
    thread_id = await new_thread(http)
    log_offset = nginx_log_size()
    readers = [CatchingUpReader(thread_id, api.base_url) for _ in range(10)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(reader.run(stop)) for reader in readers]
    created: list[dict] = []
    try:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as direct:
            async def flow(count: int) -> None:
                for n in range(count):
                    created.append(await create_post(direct, thread_id, f"post {len(created) + 1}"))
                    await asyncio.sleep(0.02)

            await flow(6)
            restart = asyncio.create_task(asyncio.to_thread(lambda: (dev_nginx("stop"), dev_nginx("start"))))
            await flow(12)
            await restart
            await flow(6)

            def caught_up() -> bool:
                return all(len(reader.posts) == len(created) for reader in readers)

            # A live thread: new posts keep arriving, and each one reveals any hole before it.
            deadline = time.monotonic() + DEADLINE
            while not caught_up():
                assert time.monotonic() < deadline, [len(reader.posts) for reader in readers]
                await flow(1)
                await asyncio.sleep(0.2)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    expected = [(post["seq"], post["id"]) for post in created]
    for reader in readers:
        assert [(seq, post["id"]) for seq, post in sorted(reader.posts.items())] == expected
        assert reader.reconnects >= 1  # the restart cut every connection
    assert worker_crashes_since(log_offset) == []
