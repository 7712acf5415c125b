"""The example service, examples/webhook_notifier.py, against a real HTTP receiver on
127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import msgspec
import pytest

from threadcast.config import Settings
from threadcast.events import Event
from threadcast.toolkit import Backends, TestKit, load_service
from threadcast.toolkit.loader import load_module

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "webhook_notifier.py"
example = load_module(EXAMPLE)
SECRET = "test-secret"


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes


Answer = Callable[[Received], int]


class Receiver:
    """An HTTP server in a thread: records every POST and answers with the status `answer`
    gives for it (204 by default)."""

    def __init__(self, answer: Answer = lambda _: 204) -> None:
        self.requests: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received = Received({k.lower(): v for k, v in self.headers.items()}, body)
                receiver.requests.append(received)
                self.send_response(answer(received))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/hooks"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def failing_first(*statuses: int) -> Answer:
    """Answer the first requests with `statuses`, then 204."""
    script = deque(statuses)
    return lambda _: script.popleft() if script else 204


def refusing(event_id: str) -> Answer:
    """Answer 400 to the requests about `event_id`, 204 to the others."""
    return lambda received: 400 if received.headers["x-threadcast-event-id"] == event_id else 204


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def webhook_kit(receiver: Receiver) -> TestKit:
    config = example.WebhookConfig(url=receiver.url, secret=SECRET)
    return TestKit(example.svc, configs={"webhooks": config})


def post_event(n: int, *, thread_id: int = 1, type: str = "post.created") -> Event:
    return Event(
        event_id=f"evt-{n}",
        type=type,
        thread_id=thread_id,
        forum="demo",
        ts=time.time(),
        version=1,
        payload={"id": n, "seq": n, "author_name": "ada", "message": f"post {n}"},
    )


async def append(kit: TestKit, event: Event) -> None:
    """As the outbox relay does: keyed by thread, the event id in a header."""
    await kit.append_to_log("events", event, key=str(event.thread_id), headers={"event_id": event.event_id})


async def test_a_new_post_is_posted_once_signed(receiver):
    async with webhook_kit(receiver) as kit:
        await append(kit, post_event(1))
        await append(kit, post_event(2, type="post.deleted"))  # not a new post: ignored
        await kit.drain()

    [request] = receiver.requests
    headers = request.headers
    assert headers["content-type"] == "application/json"
    assert headers["x-threadcast-event-id"] == "evt-1"
    assert abs(int(headers["x-threadcast-timestamp"]) - time.time()) < 300
    timestamp, signature = headers["x-threadcast-timestamp"], headers["x-threadcast-signature"]
    assert example.verify(SECRET, timestamp, request.body, signature)
    assert not example.verify("another secret", timestamp, request.body, signature)
    payload = msgspec.json.decode(request.body, type=example.NewPost)
    assert (payload.event_id, payload.forum, payload.thread_id) == ("evt-1", "demo", 1)
    assert payload.post["message"] == "post 1"


async def test_failed_deliveries_are_retried_until_the_receiver_takes_them():
    with Receiver(failing_first(503, 429)) as receiver:
        async with webhook_kit(receiver) as kit:
            await append(kit, post_event(1))
            await kit.drain()
            assert kit.metric("threadcast_retries_total", service="webhooks", handler="notify") == 2
            assert await kit.queue.dead_letters("events.webhooks.retry") == []

    assert len(receiver.requests) == 3
    assert {r.headers["x-threadcast-event-id"] for r in receiver.requests} == {"evt-1"}


async def test_a_refused_webhook_is_dead_lettered_with_the_reason_and_the_next_one_goes_out():
    with Receiver(refusing("evt-1")) as receiver:
        async with webhook_kit(receiver) as kit:
            await append(kit, post_event(1))
            await append(kit, post_event(2))
            await kit.drain()
            [letter] = await kit.queue.dead_letters("events.webhooks.retry")

    assert letter.error == "the receiver refused the webhook: HTTP 400"
    assert letter.headers["event_id"] == "evt-1"
    # refused in place, then once more from the retry queue; the next post was delivered
    sent = [r.headers["x-threadcast-event-id"] for r in receiver.requests]
    assert sorted(sent) == ["evt-1", "evt-1", "evt-2"]


async def test_an_event_relayed_twice_is_posted_once(receiver):
    async with webhook_kit(receiver) as kit:
        await append(kit, post_event(1))
        await append(kit, post_event(1))
        await kit.drain()
    assert len(receiver.requests) == 1


async def test_posts_of_a_thread_arrive_in_order(receiver):
    async with webhook_kit(receiver) as kit:
        for n in range(12):
            await append(kit, post_event(n, thread_id=n % 3))
        await kit.drain()
    arrived = [msgspec.json.decode(r.body, type=example.NewPost) for r in receiver.requests]
    for thread_id in range(3):
        assert [p.post["id"] for p in arrived if p.thread_id == thread_id] == list(range(thread_id, 12, 3))


async def test_it_runs_on_the_embedded_backends_as_threadcast_run_would_load_it(receiver, data_dir):
    service = load_service(str(EXAMPLE))
    settings = Settings(data_dir=data_dir)
    config = example.WebhookConfig(url=receiver.url, secret=SECRET)
    backends = Backends.from_settings(settings)
    async with TestKit(service, backends=backends, settings=settings, configs={"webhooks": config}) as kit:
        await append(kit, post_event(7))
        await kit.drain()
    assert [r.headers["x-threadcast-event-id"] for r in receiver.requests] == ["evt-7"]


def test_the_stages_work_alone():
    assert example.new_posts_only(post_event(1, type="post.deleted")) is None
    event = post_event(1)
    assert example.new_posts_only(event) is event
    body = example.to_payload(event)
    assert msgspec.json.decode(body)["post"]["id"] == 1
    signature = example.sign(SECRET, "1700000000", body)
    assert example.verify(SECRET, "1700000000", body, signature)
    assert not example.verify(SECRET, "1700000001", body, signature)
