"""The dead-letter janitor: a leader-only duty on the embedded coordinator and queue, two
runners on one data folder standing for two processes."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY

from tests.toolkit.helpers import wait_until
from threadcast.bus.queue import QueueSpec, WorkQueue
from threadcast.bus.sqlite_queue import SqliteQueue
from threadcast.config import Settings
from threadcast.coord import open_coordinator
from threadcast.services import janitor
from threadcast.toolkit import Backends, TestKit

FORMAT_QUEUE = Settings().format_queue


def janitor_kit(data_dir: Path, **settings: float) -> TestKit:
    backends = Backends(
        coord=open_coordinator(f"sqlite:///{data_dir / 'coord.db'}?poll_interval=0.02"),
        queue=SqliteQueue(data_dir / "queue.db", poll_interval=0.01),
    )
    return TestKit(janitor.service, backends=backends, settings=Settings(janitor_interval=0.02, **settings))


def sweeps(kit: TestKit) -> float:
    return kit.metric("threadcast_timer_runs_total", service="janitor", timer="sweep", outcome="ok")


async def bury(queue: WorkQueue, message_id: str) -> None:
    """Publish a job to the formatter's queue and reject it: one dead letter."""
    await queue.publish(FORMAT_QUEUE, b"poison", message_id=message_id)
    consumer = queue.consume(FORMAT_QUEUE, prefetch=1)
    async for delivery in consumer:
        await delivery.reject("cannot format")
        break
    await consumer.close()


def test_the_janitor_looks_after_the_queues_of_the_built_in_services():
    settings = Settings(format_queue="jobs", events_topic="news")
    assert {"news.realtime.retry", "jobs"} <= set(janitor.watched_queues(settings))


async def test_only_the_leader_sweeps_and_another_takes_over_when_it_stops(data_dir):
    first, second = janitor_kit(data_dir), janitor_kit(data_dir)
    async with first:
        await wait_until(lambda: sweeps(first) > 0, "the first janitor's sweeps")
        async with second:
            await wait_until(lambda: sweeps(first) > 10, "more sweeps of the leader")
            assert sweeps(second) == 0
            await first.runner.stop()
            await wait_until(lambda: sweeps(second) > 0, "the takeover")


async def test_dead_letters_older_than_the_retention_expire_and_the_rest_are_counted(data_dir):
    async with janitor_kit(data_dir, dead_letter_retention=3600) as keeping:
        await keeping.queue.declare(QueueSpec(FORMAT_QUEUE))
        await bury(keeping.queue, "kept")
        await wait_until(lambda: held(FORMAT_QUEUE) == 1, "the dead letter counted")
        assert await keeping.queue.dead_letter_count(FORMAT_QUEUE) == 1

    async with janitor_kit(data_dir, dead_letter_retention=0.001) as expiring:
        await wait_until(lambda: held(FORMAT_QUEUE) == 0, "the dead letter expired")
        assert await expiring.queue.dead_letter_count(FORMAT_QUEUE) == 0
        assert REGISTRY.get_sample_value("threadcast_dead_letters_expired_total", {"queue": FORMAT_QUEUE}) >= 1


def held(queue: str) -> float | None:
    """The janitor's gauge (in the default registry, where `threadcast.metrics` lives)."""
    return REGISTRY.get_sample_value("threadcast_dead_letters_held", {"queue": queue})
