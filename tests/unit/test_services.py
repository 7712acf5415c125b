"""The built-in services (relay, dispatcher, formatter) on the toolkit's test kit: in-memory
log, queue and edge, and the real SQLite database and coordinator where the relay needs them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping

import msgspec
import pytest

from tests.toolkit.helpers import wait_until
from threadcast.config import Settings
from threadcast.coord import Coordinator, NotLeaderError, open_coordinator
from threadcast.edge.hub import Hub
from threadcast.edge.publisher import EdgeError
from threadcast.events import Event, PushMessage, decode_event, decode_push
from threadcast.services import dispatcher, formatter, relay
from threadcast.store.db import Database
from threadcast.store.repository import Repository
from threadcast.system import follow_edges, remote_edge_publisher
from threadcast.toolkit import Backends, BackendMissing, MemoryInbox, Runner, TestKit
from threadcast.toolkit.memory import MemoryEdge, MemoryLog, MemoryQueue

FORMAT_QUEUE = "realtime.format"


def event(n: int, *, thread_id: int = 1, forum: str = "demo") -> Event:
    return Event(
        event_id=f"evt-{n}",
        type="post.created",
        thread_id=thread_id,
        forum=forum,
        ts=time.time(),
        version=1,
        payload={"id": 100 + n, "seq": n, "author_name": "ada", "message": f"post {n}"},
    )


class TroubledEdge(MemoryEdge):
    """A memory edge that refuses its first `refusals` publishes (EdgeError), holds every
    publish while `gate` is closed and, when `uneven`, takes a varying number of loop turns
    per publish (so that concurrent jobs overtake each other)."""

    def __init__(self, refusals: int = 0, *, uneven: bool = False) -> None:
        super().__init__()
        self.refusals = refusals
        self.uneven = uneven
        self.attempts = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def publish(self, channel: str, data: bytes, *, message_id: str) -> None:
        self.attempts += 1
        await self.gate.wait()
        for _ in range(30 * (self.attempts % 2) if self.uneven else 0):
            await asyncio.sleep(0)
        if self.refusals:
            self.refusals -= 1
            raise EdgeError("the edge is restarting")
        await super().publish(channel, data, message_id=message_id)


class QueueOutage(MemoryQueue):
    """A memory queue whose publishes fail while `down` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def publish(
        self, queue: str, body: bytes, *, message_id: str, headers: Mapping[str, str] | None = None
    ) -> None:
        if self.down:
            raise ConnectionError("the queue broker is unreachable")
        await super().publish(queue, body, message_id=message_id, headers=headers)


def memory_backends(**overrides: object) -> Backends:
    backends = {"log": MemoryLog(), "queue": MemoryQueue(), "edge": MemoryEdge(), "inbox": MemoryInbox()}
    return Backends(**{**backends, **overrides})  # type: ignore[arg-type]


async def jobs(queue: MemoryQueue, count: int) -> list[tuple[str, Event]]:
    """Take `count` jobs from the format queue: (message id, event)."""
    consumer = queue.consume(FORMAT_QUEUE)
    taken = []
    async with asyncio.timeout(10):
        async for delivery in consumer:
            taken.append((delivery.message_id, decode_event(delivery.body)))
            await delivery.ack()
            if len(taken) == count:
                break
    await consumer.close()
    return taken


# -- formatter -------------------------------------------------------------------------------


async def test_formatter_publishes_on_thread_forum_and_post_channels_with_the_event_id():
    async with TestKit(formatter.service) as kit:
        sent = event(1, thread_id=7, forum="news")
        await kit.send_to_queue(FORMAT_QUEUE, sent, headers={"event_id": sent.event_id})
        await kit.drain()
        assert await kit.queue.dead_letters(FORMAT_QUEUE) == []

    assert {p.channel for p in kit.edge.pushed} == {"thread:7", "forum:news", "post:101"}
    assert {p.message_id for p in kit.edge.pushed} == {"evt-1"}
    for pushed in kit.edge.pushed:
        message = decode_push(pushed.data)
        assert message == PushMessage(
            id="evt-1", type="post.created", channel=pushed.channel, ts=sent.ts, seq=1, data=sent.payload
        )


async def test_formatter_acks_a_job_only_after_its_publishes_were_accepted():
    edge = TroubledEdge()
    edge.gate.clear()
    async with TestKit(formatter.service, backends=memory_backends(edge=edge), grace=0.05) as kit:
        await kit.send_to_queue(FORMAT_QUEUE, event(1))
        await wait_until(lambda: edge.attempts == 1, "the first publish")
    # stopped with the publish still held: the job was not acked, it is waiting again
    assert edge.pushed == []
    assert await kit.queue.depth(FORMAT_QUEUE) == 1


async def test_formatter_retries_a_refused_publish_and_publishes_each_message_once():
    edge = TroubledEdge(refusals=2)
    async with TestKit(formatter.service, backends=memory_backends(edge=edge)) as kit:
        await kit.send_to_queue(FORMAT_QUEUE, event(1))
        await kit.drain()
        assert kit.metric("threadcast_retries_total", service="formatter", handler="format") == 2
        assert await kit.queue.dead_letters(FORMAT_QUEUE) == []
    assert sorted(p.channel for p in edge.pushed) == ["forum:demo", "post:101", "thread:1"]


async def test_formatter_dead_letters_a_job_the_edge_keeps_refusing():
    edge = TroubledEdge(refusals=1000)
    settings = Settings(max_attempts=3)
    async with TestKit(formatter.service, backends=memory_backends(edge=edge), settings=settings) as kit:
        await kit.send_to_queue(FORMAT_QUEUE, event(1))
        await kit.drain()
        [letter] = await kit.queue.dead_letters(FORMAT_QUEUE)
        dead = kit.metric("threadcast_dead_letters_total", service="formatter", handler="format", reason="failed")
    assert (letter.message_id, letter.attempts) == ("evt-1", 3)
    assert letter.error == "EdgeError: the edge is restarting"
    assert dead == 1
    assert edge.pushed == []


async def test_formatter_dead_letters_an_undecodable_job_at_once_and_goes_on():
    async with TestKit(formatter.service) as kit:
        await kit.send_to_queue(FORMAT_QUEUE, b"\xff not an event", message_id="poison")
        await kit.send_to_queue(FORMAT_QUEUE, event(2))
        await kit.drain()
        [letter] = await kit.queue.dead_letters(FORMAT_QUEUE)
        assert kit.metric("threadcast_retries_total", service="formatter", handler="format") == 0
    assert (letter.message_id, letter.attempts) == ("poison", 1)
    assert letter.error.startswith("undecodable as Event")
    assert [decode_push(data).id for data in kit.edge.messages("thread:1")] == ["evt-2"]


async def test_formatter_republishes_a_redelivered_job_with_the_same_ids_which_the_edge_drops():
    hub = Hub()
    async with TestKit(formatter.service, backends=memory_backends(edge=hub)) as kit:
        await kit.send_to_queue(FORMAT_QUEUE, event(1))
        await kit.send_to_queue(FORMAT_QUEUE, event(1))
        await kit.drain()
        assert kit.metric("threadcast_messages_out_total", service="formatter", handler="format") == 6
    for channel in ("thread:1", "forum:demo", "post:101"):
        info = hub.channel_info(channel)
        assert info is not None and info.messages == 1


async def test_formatter_keeps_each_thread_in_order():
    async with TestKit(formatter.service, backends=memory_backends(edge=TroubledEdge(uneven=True))) as kit:
        for n in range(30):
            await kit.send_to_queue(FORMAT_QUEUE, event(n, thread_id=n % 3))
        await kit.drain()
    for thread_id in range(3):
        seqs = [decode_push(data).seq for data in kit.edge.messages(f"thread:{thread_id}")]
        assert seqs == list(range(thread_id, 30, 3))


def test_formatter_stages_work_alone():
    rendered = formatter.render(event(3, thread_id=9))
    assert [push.channel for push in rendered.pushes] == ["thread:9", "forum:demo", "post:103"]
    deleted = Event(event_id="e", type="thread.closed", thread_id=9, forum="demo", ts=0.0, version=1, payload={})
    assert formatter.channels_for(deleted) == ["thread:9", "forum:demo"]


# -- dispatcher ------------------------------------------------------------------------------


async def append(kit: TestKit, sent: Event) -> None:
    """As the relay does: keyed by thread, the event id in a header."""
    await kit.append_to_log("events", sent, key=str(sent.thread_id), headers={"event_id": sent.event_id})


async def test_dispatcher_makes_one_job_per_event_and_commits_after():
    async with TestKit(dispatcher.service) as kit:
        sent = [event(n, thread_id=n % 4) for n in range(10)]
        for one in sent:
            await append(kit, one)
        await kit.drain()
        committed = await kit.log.committed("events", "realtime")
        made = await jobs(kit.queue, 10)
    assert sum(committed.values()) == 10
    assert sorted(made, key=lambda job: job[0]) == sorted((e.event_id, e) for e in sent)


async def test_dispatcher_commits_nothing_while_it_cannot_publish_the_jobs():
    queue = QueueOutage()
    async with TestKit(dispatcher.service, backends=memory_backends(queue=queue)) as kit:
        queue.down = True
        for n in range(3):
            await append(kit, event(n))
        await wait_until(
            lambda: kit.metric("threadcast_retries_total", service="dispatcher", handler="dispatch") >= 2,
            "failed attempts",
        )
        assert sum((await kit.log.committed("events", "realtime")).values()) == 0
        assert await queue.depth(FORMAT_QUEUE) == 0
        queue.down = False
        await kit.drain()
        assert sum((await kit.log.committed("events", "realtime")).values()) == 3
        made = await jobs(queue, 3)
    assert sorted(message_id for message_id, _ in made) == ["evt-0", "evt-1", "evt-2"]


# -- relay -----------------------------------------------------------------------------------


@pytest.fixture
async def database(data_dir) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{data_dir / 'threadcast.db'}")
    await db.migrate()
    yield db
    await db.close()


@pytest.fixture
def coord(data_dir) -> Coordinator:
    """Started and closed by the runner's backends."""
    return open_coordinator(f"sqlite:///{data_dir / 'coord.db'}")


async def new_posts(repo: Repository, count: int) -> list[dict]:
    await repo.create_forum("demo", "Demo")
    thread, _ = await repo.get_or_create_thread("demo", "t", "T", "/")
    return [(await repo.create_post(thread.id, "ada", f"post {n}"))[0] for n in range(count)]


async def outbox_emptied(repo: Repository) -> None:
    """Until the outbox is empty: the relay deletes rows just after the log took them."""
    end = time.monotonic() + 10
    while await repo.outbox_size():
        assert time.monotonic() < end, "the outbox was not emptied"
        await asyncio.sleep(0.01)


def relayed(log: MemoryLog, topic: str = "events") -> list[Event]:
    records = sorted((r for partition in log.records(topic) for r in partition), key=lambda r: r.offset)
    for record in records:
        assert record.headers["event_id"] == decode_event(record.value).event_id
    return [decode_event(r.value) for r in records]


async def test_relay_moves_outbox_rows_in_order_and_deletes_them(database, coord):
    repo = Repository(database)
    posts = await new_posts(repo, 5)
    log = MemoryLog()
    settings = Settings(poll_interval=3600)  # only the first run and wake() move anything
    backends = Backends(coord=coord, database=database, log=log)
    async with TestKit(relay.service, backends=backends, settings=settings) as kit:
        await wait_until(lambda: len(relayed(log)) == 5, "the first run")
        await outbox_emptied(repo)
        [later] = await new_posts(repo, 1)
        kit.runner.wake("relay", "relay")
        await wait_until(lambda: len(relayed(log)) == 6, "the woken run")
        await outbox_emptied(repo)
    events = relayed(log)
    assert [e.payload["id"] for e in events] == [p["id"] for p in posts] + [later["id"]]


async def test_relay_keeps_rows_the_log_did_not_take(database, coord):
    repo = Repository(database, topic="later")  # a topic nobody created yet: appends fail
    await new_posts(repo, 2)
    log = MemoryLog()
    async with TestKit(relay.service, backends=Backends(coord=coord, database=database, log=log)) as kit:
        await wait_until(
            lambda: kit.metric("threadcast_timer_runs_total", service="relay", timer="relay", outcome="error") >= 1,
            "a failed run",
        )
        assert await repo.outbox_size() == 2
        await log.create_topic("later", 1)
        await wait_until(lambda: log.records("later")[0] != [], "the relayed rows")
        await outbox_emptied(repo)
    assert len(relayed(log, "later")) == 2


class StuckLog(MemoryLog):
    """A memory log whose first append waits until `gate` opens (a log that is down)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.appending = asyncio.Event()

    async def append(self, topic: str, messages):  # type: ignore[no-untyped-def]
        if not self.appending.is_set():
            self.appending.set()
            await self.gate.wait()
        return await super().append(topic, messages)


async def test_posts_are_saved_while_the_relay_waits_for_the_log(database):
    """The relay holds no database lock while it appends: on SQLite a lock held until a
    stuck log answers would make every post wait for it, then fail."""
    repo = Repository(database)
    await new_posts(repo, 2)
    log = StuckLog()
    await log.create_topic("events", 1)
    relaying = asyncio.create_task(relay.relay_once(database, log, epoch=1))
    await log.appending.wait()
    [during] = await asyncio.wait_for(new_posts(repo, 1), timeout=30)
    log.gate.set()
    assert await relaying == 2
    assert await relay.relay_once(database, log, epoch=1) == 1
    assert [e.payload["id"] for e in relayed(log)][-1] == during["id"]
    assert await repo.outbox_size() == 0


async def test_a_leader_deposed_while_it_appends_keeps_its_rows_for_the_newer_one(database):
    """The newer leader starts while the older one waits for the log: the older one's batch
    is in the log, but it may not delete it; the newer one appends it again (duplicates,
    which consumers skip by event id) and the first copies stay in commit order."""
    repo = Repository(database)
    posts = await new_posts(repo, 3)
    log = StuckLog()
    await log.create_topic("events", 1)
    older = asyncio.create_task(relay.relay_once(database, log, epoch=1))
    await log.appending.wait()
    assert await relay.relay_once(database, log, epoch=2) == 3
    log.gate.set()
    with pytest.raises(NotLeaderError):
        await older
    ids = [e.payload["id"] for e in relayed(log)]
    assert ids == [p["id"] for p in posts] * 2
    assert await repo.outbox_size() == 0


async def test_the_relay_runs_only_with_a_coordinator(database):
    with pytest.raises(BackendMissing, match="relay.relay needs the coord backend"):
        async with TestKit(relay.service, backends=Backends(database=database, log=MemoryLog())):
            pass


# -- the three together ----------------------------------------------------------------------


async def test_a_saved_post_reaches_the_edge_through_relay_dispatcher_and_formatter(database, coord):
    repo = Repository(database)
    backends = memory_backends(database=database, coord=coord)
    services = (relay.service, dispatcher.service, formatter.service)
    async with TestKit(*services, backends=backends, settings=Settings(poll_interval=3600)) as kit:
        [saved] = await new_posts(repo, 1)
        kit.runner.wake("relay", "relay")
        channel = f"thread:{saved['thread_id']}"
        await wait_until(lambda: kit.edge.messages(channel) != [], "the push message")
    [data] = kit.edge.messages(channel)
    message = msgspec.json.decode(data, type=PushMessage)
    assert (message.data["id"], message.seq, message.type) == (saved["id"], saved["seq"], "post.created")


# -- where a service process publishes -------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "urls"),
    [
        (Settings(), ["http://127.0.0.1:8000"]),
        (Settings(host="0.0.0.0", port=9000, public_url="https://comments.example"), ["http://127.0.0.1:9000"]),
        (Settings(host="::"), ["http://[::1]:8000"]),
        (
            Settings(edge_url="nchan+http://127.0.0.1:8080, http://127.0.0.2:8001/"),
            ["http://127.0.0.1:8080", "http://127.0.0.2:8001"],
        ),
    ],
)
def test_a_service_process_publishes_to_the_api_process_or_to_the_configured_edges(settings, urls):
    assert remote_edge_publisher(settings).urls == urls


async def test_a_service_process_publishes_to_the_live_edges_while_any_are_set(coord):
    publisher = remote_edge_publisher(Settings(edge_url="http://127.0.0.1:8001"))
    runner = Runner([], Backends(coord=coord))
    follow_edges(runner, publisher)
    async with runner:
        await coord.set_config("edges", ["nchan+http://127.0.0.1:8080", "http://127.0.0.2:8001/"])
        await wait_until(lambda: publisher.urls == ["http://127.0.0.1:8080", "http://127.0.0.2:8001"], "the live edges")
        await coord.set_config("edges", [])
        await wait_until(lambda: publisher.urls == ["http://127.0.0.1:8001"], "the configured edge again")
