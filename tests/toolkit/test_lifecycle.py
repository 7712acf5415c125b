"""Startup and shutdown: hooks, config, graceful stop with work in flight, grace expiry,
timers, missing backends."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from tests.toolkit.helpers import Gate, Job, wait_until
from threadcast.toolkit import BackendMissing, Backends, Context, MemoryInbox, Runner, Service, TestKit
from threadcast.toolkit.memory import MemoryEdge, MemoryLog, MemoryQueue


def memory_backends() -> Backends:
    return Backends(log=MemoryLog(), queue=MemoryQueue(), edge=MemoryEdge(), inbox=MemoryInbox())


def gated_service(gate: Gate, done: list[str], *, prefetch: int) -> Service:
    svc = Service("worker")

    @svc.consumer(queue="jobs", model=Job, prefetch=prefetch)
    async def work(job: Job) -> None:
        await gate.pass_through()
        done.append(job.id)

    return svc


async def test_stop_finishes_the_work_in_flight_and_takes_no_more():
    backends = memory_backends()
    gate, done = Gate(), []
    kit = TestKit(gated_service(gate, done, prefetch=2), backends=backends)
    async with kit:
        for n in range(10):
            await kit.send_to_queue("jobs", Job(str(n)))
        await wait_until(lambda: gate.entered == 2, "two jobs in flight")
        stopping = asyncio.create_task(kit.runner.stop())
        await wait_until(lambda: kit.runner.state == "stopping", "the stop to begin")
        await wait_until(lambda: kit.runner.in_flight() == 2, "the worker to stop pulling")
        gate.open()
        await stopping
    assert sorted(done) == ["0", "1"]  # in flight when the stop began: finished
    assert await backends.queue.depth("jobs") == 8  # the rest stayed in the queue

    async with TestKit(gated_service(gate, done, prefetch=2), backends=backends) as again:
        await again.drain()
    assert sorted(done, key=int) == [str(n) for n in range(10)]  # nothing lost, nothing twice


async def test_work_still_running_when_the_grace_period_ends_is_cancelled_and_delivered_again():
    backends = memory_backends()
    never, done = Gate(), []
    kit = TestKit(gated_service(never, done, prefetch=4), backends=backends, grace=0.05)
    async with kit:
        await kit.send_to_queue("jobs", Job("stuck"))
        await wait_until(lambda: never.entered == 1, "the job to start")
    assert done == []
    assert await backends.queue.depth("jobs") == 1  # unacked: back in the queue

    released = Gate()
    released.open()
    async with TestKit(gated_service(released, done, prefetch=4), backends=backends) as again:
        await again.drain()
    assert done == ["stuck"]


async def test_a_log_subscriber_commits_what_finished_and_a_restart_resumes_after_it():
    backends = memory_backends()
    handled: list[str] = []

    def subscriber_service() -> Service:
        svc = Service("reader")

        @svc.subscriber(topic="events", group="g", model=Job)
        async def take(job: Job) -> None:
            handled.append(job.id)

        return svc

    async with TestKit(subscriber_service(), backends=backends) as kit:
        for n in range(5):
            await kit.append_to_log("events", Job(str(n)), key=str(n))
        await kit.drain()
    async with TestKit(subscriber_service(), backends=backends) as kit:
        await kit.append_to_log("events", Job("5"), key="5")
        await kit.drain()
    assert sorted(handled) == [str(n) for n in range(6)]


async def test_hooks_wrap_the_handlers_and_share_state_and_config():
    events: list[str] = []
    svc = Service("hooked", config=lambda: SimpleNamespace(greeting="from the factory"))

    @svc.on_startup
    async def open_client(ctx: Context) -> None:
        ctx.state.client = f"client for {ctx.config.greeting}"
        events.append("startup")

    @svc.consumer(queue="jobs", model=Job)
    async def work(job: Job, ctx: Context) -> None:
        events.append(f"{job.id} with {ctx.state.client}")

    @svc.on_shutdown
    def close_client(ctx: Context) -> None:
        events.append(f"shutdown {ctx.state.client}")

    async with TestKit(svc) as kit:
        await kit.send_to_queue("jobs", Job("a"))
        await kit.drain()
    async with TestKit(svc, configs={"hooked": SimpleNamespace(greeting="given")}) as kit:
        pass
    assert events == [
        "startup",
        "a with client for from the factory",
        "shutdown client for from the factory",
        "startup",
        "shutdown client for given",
    ]


async def test_timers_fire_repeatedly_survive_errors_and_can_be_woken():
    svc = Service("clock")
    ticks: list[int] = []
    woken: list[str] = []

    @svc.timer(every=0.01)
    async def tick() -> None:
        ticks.append(len(ticks))
        if len(ticks) == 2:
            raise RuntimeError("one bad tick")

    @svc.timer(every=3600)
    def hourly(ctx: Context) -> None:
        woken.append(ctx.service)

    async with TestKit(svc) as kit:
        await wait_until(lambda: len(ticks) >= 4, "four ticks")
        kit.runner.wake("clock", "hourly")
        await wait_until(lambda: woken == ["clock"], "the woken timer")
        assert kit.metric("threadcast_timer_runs_total", service="clock", timer="tick", outcome="error") == 1
        assert kit.metric("threadcast_timer_runs_total", service="clock", timer="tick", outcome="ok") >= 3
        with pytest.raises(LookupError):
            kit.runner.wake("clock", "nope")


async def test_a_service_needing_a_missing_backend_fails_at_start():
    svc = Service("needs-log")

    @svc.subscriber(topic="events", group="g")
    async def take(body: bytes) -> None: ...

    runner = Runner([svc], Backends(queue=MemoryQueue()), registry=CollectorRegistry())
    with pytest.raises(BackendMissing, match="needs-log.take needs the log backend"):
        await runner.start()
    assert runner.health() == {"runner": "stopped"}


def test_declarations_are_checked_when_made():
    svc = Service("checked")
    with pytest.raises(ValueError, match="needs a model"):
        svc.consumer(queue="q", ordered_by="thread_id")
    with pytest.raises(ValueError, match="no ordered_by"):
        svc.subscriber(topic="t", group="g", model=Job, batch=10, ordered_by="key")
    with pytest.raises(ValueError, match="prefetch must be positive"):
        svc.consumer(queue="q", prefetch=0)
    with pytest.raises(TypeError, match="takes 3 positional arguments"):
        svc.consumer(queue="q")(lambda a, b, c: None)

    svc.consumer(queue="q", name="same")(print)
    with pytest.raises(ValueError, match="already has a handler named 'same'"):
        svc.timer(every=1, name="same")(print)
