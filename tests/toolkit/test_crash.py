"""A service in a child process on the embedded SQLite backends: SIGKILL in the middle of a
handler, restart, the effect is applied exactly once; SIGTERM with work in flight finishes it
and exits 0."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from tests.toolkit.helpers import DEADLINE, ChildProcess
from tests.toolkit.ledger_service import MARKER, Payment
from threadcast.bus.queue import QueueSpec
from threadcast.bus.sqlite_queue import SqliteQueue
from threadcast.toolkit.codec import encode

PAYMENTS = [Payment(f"p{n}", amount=n * 10) for n in range(1, 7)]


def ledger_service(data_dir: Path, **env: str) -> ChildProcess:
    return ChildProcess("tests.toolkit.ledger_service", str(data_dir), folder=data_dir, env=env)


@pytest.fixture
async def queue(data_dir):
    work_queue = SqliteQueue(data_dir / "queue.db")
    await work_queue.start()
    await work_queue.declare(QueueSpec("payments", max_attempts=5))
    for payment in PAYMENTS:
        await work_queue.publish("payments", encode(payment), message_id=f"evt-{payment.id}")
    yield work_queue
    await work_queue.close()


def ledger(data_dir: Path) -> Counter[str]:
    with sqlite3.connect(data_dir / "threadcast.db") as conn:
        try:
            return Counter(row[0] for row in conn.execute("SELECT payment FROM ledger"))
        except sqlite3.OperationalError:  # not created yet
            return Counter()


async def wait_for_every_payment(data_dir: Path, queue: SqliteQueue) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while set(ledger(data_dir)) != {p.id for p in PAYMENTS} or await queue.depth("payments"):
        assert loop.time() < end, f"ledger {ledger(data_dir)}, {await queue.depth('payments')} queued"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("stop_at", ["before-commit", "after-commit"])
async def test_killed_in_the_middle_of_a_handler_the_effect_is_applied_exactly_once(data_dir, queue, stop_at):
    crashing = ledger_service(data_dir, STOP_AT=stop_at, STOP_ON="p3")
    await crashing.wait_for_output(f"{MARKER} {stop_at}")
    crashing.kill()
    assert ledger(data_dir)["p3"] == (1 if stop_at == "after-commit" else 0)

    restarted = ledger_service(data_dir)
    await restarted.wait_for_output("handled p3")  # redelivered to the new process
    await wait_for_every_payment(data_dir, queue)
    assert await restarted.terminate() == 0
    assert ledger(data_dir) == Counter({p.id: 1 for p in PAYMENTS})
    assert await queue.depth("payments") == 0  # p3 was acked: an unacked one is given back at exit
    assert await queue.dead_letters("payments") == []


async def test_sigterm_finishes_the_work_in_flight_then_exits_0(data_dir, queue):
    service = ledger_service(data_dir, STOP_AT="hold", STOP_ON="p1")
    await service.wait_for_output(f"{MARKER} hold")
    service.proc.send_signal(signal.SIGTERM)
    await service.wait_for_output("stopping: finishing the work in flight")
    (data_dir / "release").touch()
    assert await asyncio.to_thread(service.proc.wait, DEADLINE) == 0
    assert ledger(data_dir)["p1"] == 1

    restarted = ledger_service(data_dir)
    await restarted.wait_for_output("services started")
    await wait_for_every_payment(data_dir, queue)
    assert await restarted.terminate() == 0
    assert ledger(data_dir) == Counter({p.id: 1 for p in PAYMENTS})
    assert await queue.depth("payments") == 0
