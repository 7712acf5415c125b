"""Work-queue consumers: ack, retry with backoff, dead letters, replay, inbox, ordering."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

from tests.toolkit.helpers import Gate, Job, wait_until
from threadcast.toolkit import Backoff, Context, Reject, Service, TestKit


class RecordingRng(random.Random):
    """Notes the ceiling of every backoff draw and draws 0 (no waiting in tests)."""

    def __init__(self) -> None:
        super().__init__()
        self.ceilings: list[float] = []

    def uniform(self, a: float, b: float) -> float:
        self.ceilings.append(b)
        return 0.0


def failing_service(attempts_seen: list[int], max_attempts: int = 4) -> Service:
    svc = Service("jobs")

    @svc.consumer(queue="jobs", model=Job, max_attempts=max_attempts)
    async def work(job: Job, ctx: Context) -> None:
        attempts_seen.append(ctx.attempt)
        if ctx.attempt <= job.fail_times:
            raise RuntimeError(f"attempt {ctx.attempt} failed")

    return svc


async def test_a_failing_message_is_retried_with_backoff_then_dead_lettered():
    attempts: list[int] = []
    rng = RecordingRng()
    async with TestKit(failing_service(attempts), backoff=Backoff(base=0.1, cap=0.3, rng=rng)) as kit:
        await kit.send_to_queue("jobs", Job("doomed", fail_times=99), message_id="m1")
        await kit.drain()

        assert attempts == [1, 2, 3, 4]
        assert rng.ceilings == [0.1, 0.2, 0.3]  # exponential, capped; none after the last attempt
        [letter] = await kit.queue.dead_letters("jobs")
        assert (letter.message_id, letter.attempts, letter.error) == ("m1", 4, "RuntimeError: attempt 4 failed")
        labels = {"service": "jobs", "handler": "work"}
        assert kit.metric("threadcast_retries_total", **labels) == 3
        assert kit.metric("threadcast_dead_letters_total", **labels, reason="failed") == 1
        assert kit.metric("threadcast_messages_handled_total", **labels, outcome="ok") == 0


async def test_a_message_that_recovers_is_acked_once():
    attempts: list[int] = []
    async with TestKit(failing_service(attempts)) as kit:
        await kit.send_to_queue("jobs", Job("flaky", fail_times=2))
        await kit.drain()
        assert attempts == [1, 2, 3]
        assert await kit.queue.dead_letters("jobs") == []
        assert kit.metric("threadcast_messages_handled_total", service="jobs", handler="work", outcome="ok") == 1


async def test_dead_letters_replayed_after_a_fix_are_handled():
    svc = Service("replay")
    broken = True
    done: list[str] = []

    @svc.consumer(queue="jobs", model=Job, max_attempts=2)
    async def work(job: Job) -> None:
        if broken:
            raise ConnectionError("downstream is down")
        done.append(job.id)

    async with TestKit(svc) as kit:
        for name in ("a", "b", "c"):
            await kit.send_to_queue("jobs", Job(name), message_id=name)
        await kit.drain()
        assert sorted(d.message_id for d in await kit.queue.dead_letters("jobs")) == ["a", "b", "c"]

        broken = False
        assert await kit.queue.replay_dead_letters("jobs", ["b"]) == 1
        await kit.drain()
        assert done == ["b"]
        assert await kit.queue.replay_dead_letters("jobs") == 2
        await kit.drain()
        assert sorted(done) == ["a", "b", "c"]
        assert await kit.queue.dead_letters("jobs") == []


async def test_reject_dead_letters_at_once_with_the_reason():
    svc = Service("strict")
    calls = []

    @svc.consumer(queue="jobs", model=Job, max_attempts=5)
    async def work(job: Job) -> None:
        calls.append(job.id)
        raise Reject(f"job {job.id} is malformed")

    async with TestKit(svc) as kit:
        await kit.send_to_queue("jobs", Job("x"))
        await kit.drain()
        [letter] = await kit.queue.dead_letters("jobs")
        assert (letter.attempts, letter.error) == (1, "job x is malformed")
        assert calls == ["x"]
        assert kit.metric("threadcast_dead_letters_total", service="strict", handler="work", reason="rejected") == 1


async def test_an_undecodable_message_is_dead_lettered_with_the_reason_and_never_handled():
    svc = Service("typed")
    handled = []

    @svc.consumer(queue="jobs", model=Job)
    async def work(job: Job) -> None:
        handled.append(job)

    async with TestKit(svc) as kit:
        await kit.send_to_queue("jobs", b"{not json", message_id="garbled")
        await kit.send_to_queue("jobs", {"id": 5}, message_id="mistyped")
        await kit.send_to_queue("jobs", Job("fine"), message_id="fine")
        await kit.drain()

        letters = {d.message_id: d for d in await kit.queue.dead_letters("jobs")}
        assert set(letters) == {"garbled", "mistyped"}
        assert letters["garbled"].error.startswith("undecodable as Job: JSON is malformed")
        assert letters["mistyped"].error == "undecodable as Job: Expected `str`, got `int` - at `$.id`"
        assert all(d.attempts == 1 for d in letters.values())
        assert handled == [Job("fine")]
        assert kit.metric("threadcast_dead_letters_total", service="typed", handler="work", reason="undecodable") == 2


async def test_a_message_without_its_ordering_key_is_dead_lettered_as_undecodable():
    svc = Service("keyed")
    handled = []
    svc.consumer(queue="jobs", model=dict, ordered_by="thread")(handled.append)

    async with TestKit(svc) as kit:
        await kit.send_to_queue("jobs", {"no": "thread"}, message_id="keyless")
        await kit.send_to_queue("jobs", {"thread": 1}, message_id="keyed")
        await kit.drain()
        [letter] = await kit.queue.dead_letters("jobs")
    assert letter.message_id == "keyless"
    assert letter.error == "no ordering key 'thread' in the message: KeyError('thread')"
    assert handled == [{"thread": 1}]


async def test_without_a_model_the_handler_gets_the_raw_bytes():
    svc = Service("raw")
    bodies = []
    svc.consumer(queue="blobs")(bodies.append)
    async with TestKit(svc) as kit:
        await kit.send_to_queue("blobs", b"\x00\xffbinary")
        await kit.drain()
    assert bodies == [b"\x00\xffbinary"]


async def test_a_redelivered_event_is_skipped_by_the_inbox():
    svc = Service("inboxed")
    effects: list[str] = []

    @svc.consumer(queue="jobs", model=Job)
    async def apply(job: Job) -> None:
        effects.append(job.id)

    @svc.consumer(queue="jobs.unguarded", model=Job, idempotent=False)
    async def apply_every_time(job: Job) -> None:
        effects.append(f"unguarded {job.id}")

    async with TestKit(svc) as kit:
        await kit.send_to_queue("jobs", Job("a"), message_id="event-1")
        await kit.send_to_queue("jobs", Job("a"), message_id="event-1")  # a redelivery
        # the same event under another message id: the event_id header identifies it
        await kit.send_to_queue("jobs", Job("a"), message_id="other", headers={"event_id": "event-1"})
        await kit.send_to_queue("jobs.unguarded", Job("b"), message_id="event-2")
        await kit.send_to_queue("jobs.unguarded", Job("b"), message_id="event-2")
        await kit.drain()

        assert effects.count("a") == 1
        assert effects.count("unguarded b") == 2
        assert await kit.inbox.seen("inboxed.apply", "event-1")
        labels = {"service": "inboxed", "handler": "apply"}
        assert kit.metric("threadcast_messages_handled_total", **labels, outcome="duplicate") == 2
        assert await kit.queue.depth("jobs") == 0


async def test_one_keys_messages_never_overlap_and_keep_their_order_while_keys_run_in_parallel():
    svc = Service("ordered")
    active: dict[int, int] = defaultdict(int)
    seen: dict[int, list[int]] = defaultdict(list)
    overlaps_within_a_key = []
    other_key_started = asyncio.Event()
    shuffle = random.Random(3)

    @svc.consumer(queue="jobs", model=Job, prefetch=16, ordered_by="key")
    async def work(job: Job) -> None:
        active[job.key] += 1
        if active[job.key] > 1:
            overlaps_within_a_key.append(job)
        if job.key != 0:
            other_key_started.set()
        if job.id == "0":
            await other_key_started.wait()  # would never return if keys ran one after another
        for _ in range(shuffle.randint(20, 100)):  # long enough to overlap with the next messages
            await asyncio.sleep(0)
        seen[job.key].append(int(job.id))
        active[job.key] -= 1

    async with TestKit(svc) as kit:
        for n in range(200):
            await kit.send_to_queue("jobs", Job(str(n), key=n % 5))
        await kit.drain()

    assert overlaps_within_a_key == []
    assert seen == {key: list(range(key, 200, 5)) for key in range(5)}


async def test_prefetch_bounds_the_work_in_flight():
    svc = Service("bounded")
    gate = Gate()
    running = 0
    most_at_once = 0

    @svc.consumer(queue="jobs", model=Job, prefetch=3)
    async def work(job: Job) -> None:
        nonlocal running, most_at_once
        running += 1
        most_at_once = max(most_at_once, running)
        await gate.pass_through()
        running -= 1

    async with TestKit(svc) as kit:
        for n in range(10):
            await kit.send_to_queue("jobs", Job(str(n)))
        await wait_until(lambda: gate.entered == 3, "three handlers to start")
        assert await kit.queue.depth("jobs") >= 6  # the rest waits in the queue
        gate.open()
        await kit.drain()
    assert (gate.entered, most_at_once) == (10, 3)


async def test_output_published_from_a_handler_carries_the_event_id():
    svc = Service("chain")
    received: list[tuple[str | None, str]] = []

    @svc.consumer(queue="first", model=Job)
    async def forward(job: Job, ctx: Context) -> None:
        await ctx.publish("second", job)

    @svc.consumer(queue="second", model=Job)
    async def land(job: Job, ctx: Context) -> None:
        received.append((ctx.event_id, ctx.headers["event_id"]))

    async with TestKit(svc) as kit:
        await kit.send_to_queue("first", Job("x"), message_id="evt-42")
        await kit.drain()
    assert received == [("evt-42", "evt-42")]
