"""End to end on the real brokers: THREADCAST_LOG_URL=kafka://..., THREADCAST_QUEUE_URL=amqp://...

Each test uses its own topic and job queue names, so runs never see each other's events.
Selected when THREADCAST_TEST_BACKENDS names both kafka and rabbitmq (`make test` does)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import selected_real_backends
from threadcast.bus.rabbit_queue import RabbitQueue

from .conftest import UpProcess
from .test_live import Reader, demo_thread, post

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(
        not {"kafka", "rabbitmq"} <= selected_real_backends(),
        reason="real brokers not selected (THREADCAST_TEST_BACKENDS)",
    ),
]


def broker_env() -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return {
        "THREADCAST_LOG_URL": os.environ["THREADCAST_TEST_KAFKA_URL"],
        "THREADCAST_QUEUE_URL": os.environ["THREADCAST_TEST_AMQP_URL"],
        "THREADCAST_EVENTS_TOPIC": f"events-{suffix}",
        "THREADCAST_FORMAT_QUEUE": f"realtime.format.{suffix}",
    }


def restart(service: str) -> None:
    script = ROOT / "dev" / service / "service"
    subprocess.run(["bash", str(script), "stop"], check=True, timeout=120)
    subprocess.run(["bash", str(script), "start"], check=True, timeout=180)


@pytest.fixture
def brokers_up(tmp_path):
    process = UpProcess(tmp_path / "up", env=broker_env())
    process.start(timeout=60)
    yield process
    process.stop()


async def test_comment_reaches_sse_subscriber_through_kafka_and_rabbitmq(brokers_up):
    thread_id = await demo_thread(brokers_up.base_url)
    reader = Reader("sse", brokers_up.base_url, f"thread:{thread_id}")
    await reader.ready()
    sent = await post(brokers_up.base_url, thread_id, "through the brokers")
    [message] = await reader.wait_for(1, timeout=30)
    assert message["data"]["id"] == sent["id"]
    await reader.close()


async def test_poison_job_is_dead_lettered_without_stalling(brokers_up):
    queue_name = brokers_up.env["THREADCAST_FORMAT_QUEUE"]
    queue = RabbitQueue(os.environ["THREADCAST_TEST_AMQP_URL"])
    await queue.start()
    try:
        await queue.publish(queue_name, b"\xff not an event", message_id="poison-1")
        thread_id = await demo_thread(brokers_up.base_url)
        reader = Reader("sse", brokers_up.base_url, f"thread:{thread_id}")
        await reader.ready()
        sent = await post(brokers_up.base_url, thread_id, "after the poison")
        [message] = await reader.wait_for(1, timeout=30)
        assert message["data"]["id"] == sent["id"]
        for _ in range(100):
            dead = await queue.dead_letters(queue_name)
            if dead:
                break
            await asyncio.sleep(0.1)
        assert [d.message_id for d in dead] == ["poison-1"]
        assert "undecodable" in dead[0].error
        await reader.close()
    finally:
        await queue.close()


async def test_broker_restarts_lose_nothing(brokers_up):
    """500 posts at a steady rate while RabbitMQ, then Kafka, restart: after dropping ids it
    has already seen, the subscriber has every post exactly once."""
    thread_id = await demo_thread(brokers_up.base_url)
    reader = Reader("sse", brokers_up.base_url, f"thread:{thread_id}")
    await reader.ready()
    sent: list[int] = []

    async def steady_posts() -> None:
        async with httpx.AsyncClient(base_url=brokers_up.base_url, timeout=30) as client:
            for n in range(500):
                res = await client.post(
                    f"/api/v1/threads/{thread_id}/posts",
                    json={"author_name": "fault", "message": f"m{n}"},
                    headers={"Idempotency-Key": f"fault-{n}"},
                )
                assert res.status_code == 201, res.text
                sent.append(res.json()["id"])
                await asyncio.sleep(0.04)

    posting = asyncio.create_task(steady_posts())
    await asyncio.sleep(2)
    await asyncio.to_thread(restart, "rabbitmq")
    await asyncio.sleep(2)
    await asyncio.to_thread(restart, "kafka")
    await posting
    received = await reader.wait_for_ids(set(sent), timeout=180)
    assert received == set(sent)
    await reader.close()
