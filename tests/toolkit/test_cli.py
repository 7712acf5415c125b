"""`threadcast services`, `threadcast dlq ...` and the usage errors of `threadcast run`, in
process, on the embedded SQLite queue of a temporary data folder."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from threadcast.bus.queue import QueueSpec
from threadcast.bus.sqlite_queue import SqliteQueue
from threadcast.cli import main
from threadcast.config import SERVICES

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "webhook_notifier.py"


def threadcast(data_dir: Path, *args: str, answer: str | None = None, **env: str) -> Result:
    environment = {"THREADCAST_DATA_DIR": str(data_dir), **env}
    return CliRunner().invoke(main, list(args), env=environment, input=answer)


async def bury(data_dir: Path, queue_name: str, bodies: dict[str, bytes]) -> None:
    """Dead-letter one message per (id, body), rejected with the reason "bad <id>"."""
    queue = SqliteQueue(data_dir / "queue.db")
    await queue.start()
    try:
        await queue.declare(QueueSpec(queue_name, max_attempts=3))
        for message_id, body in bodies.items():
            await queue.publish(queue_name, body, message_id=message_id, headers={"event_id": message_id})
        consumer = queue.consume(queue_name)
        buried = 0
        async for delivery in consumer:
            await delivery.reject(f"bad {delivery.message_id}")
            buried += 1
            if buried == len(bodies):
                break
        await consumer.close()
    finally:
        await queue.close()


async def queue_state(data_dir: Path, queue_name: str) -> tuple[int, list[str]]:
    """(messages waiting, dead letter ids)."""
    queue = SqliteQueue(data_dir / "queue.db")
    await queue.start()
    try:
        return await queue.depth(queue_name), [d.message_id for d in await queue.dead_letters(queue_name)]
    finally:
        await queue.close()


@pytest.fixture
def buried(data_dir: Path) -> Path:
    asyncio.run(bury(data_dir, "jobs", {"m1": b'{"n": 1}', "m2": b"\xff\x00"}))
    return data_dir


def test_services_describes_the_built_in_services_with_the_configured_names(data_dir):
    result = threadcast(data_dir, "services", THREADCAST_FORMAT_QUEUE="fmt.q", THREADCAST_EVENTS_TOPIC="ev")
    assert result.exit_code == 0, result.output
    described = result.output.split("\n\n")
    assert [block.split(":")[0] for block in described] == list(SERVICES)
    assert list(SERVICES[:4]) == ["relay", "dispatcher", "formatter", "janitor"]
    assert "subscriber dispatch: topic ev group realtime" in described[1]
    assert "consumer format: queue fmt.q" in described[2] and "ordered_by thread_id" in described[2]
    assert "while leader of 'janitor'" in described[3]


def test_services_describes_a_service_from_a_file(data_dir):
    result = threadcast(data_dir, "services", str(EXAMPLE))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("webhooks: POSTs new posts")
    assert "subscriber notify: topic events group webhooks" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["run"],
        ["run", "no_such_module"],
        ["run", "no/such/file.py"],
        ["run", "relay", "relay"],
        ["run", "--concurrency", "0", "relay"],
        ["run", "--ops-port", "70000", "relay"],
        ["services", "no_such_module"],
        ["dlq", "list"],
        ["dlq", "list", "never-declared"],
        ["dlq", "list", "jobs", "--limit", "0"],
        ["dlq", "show", "jobs", "no-such-id"],
    ],
)
def test_bad_arguments_are_usage_errors(buried, args):
    result = threadcast(buried, *args)
    assert result.exit_code == 2, result.output
    assert "Usage:" in result.output


def test_dlq_list_and_show(buried):
    listed = threadcast(buried, "dlq", "list", "jobs")
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["m1", "m2"]
    assert lines[0].split("\t")[1] == "1 attempts" and lines[0].endswith("bad m1")
    assert threadcast(buried, "dlq", "list", "jobs", "--limit", "1").output.splitlines() == lines[:1]

    shown = threadcast(buried, "dlq", "show", "jobs", "m2")
    assert shown.exit_code == 0, shown.output
    assert "error:      bad m2" in shown.output
    assert "  event_id: m2" in shown.output
    assert shown.output.rstrip().endswith(repr(b"\xff\x00"))


def test_dlq_replay_given_ids_then_all(buried):
    one = threadcast(buried, "dlq", "replay", "jobs", "m2")
    assert (one.exit_code, one.output) == (0, "replayed 1 dead letter to jobs\n")
    assert asyncio.run(queue_state(buried, "jobs")) == (1, ["m1"])
    rest = threadcast(buried, "dlq", "replay", "jobs")
    assert rest.output == "replayed 1 dead letter to jobs\n"
    assert asyncio.run(queue_state(buried, "jobs")) == (2, [])


def test_dlq_purge_asks_first(buried):
    declined = threadcast(buried, "dlq", "purge", "jobs", answer="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.output
    assert asyncio.run(queue_state(buried, "jobs")) == (0, ["m1", "m2"])
    confirmed = threadcast(buried, "dlq", "purge", "jobs", answer="y\n")
    assert confirmed.exit_code == 0 and confirmed.output.endswith("purged 2 dead letters of jobs\n")
    asyncio.run(bury(buried, "jobs", {"m3": b"{}"}))
    assert threadcast(buried, "dlq", "purge", "jobs", "--yes").output == "purged 1 dead letter of jobs\n"
    assert asyncio.run(queue_state(buried, "jobs")) == (0, [])
