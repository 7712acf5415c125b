"""The inbox, in memory and on the project database, and the idempotent-effect helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from tests.toolkit.helpers import Job
from threadcast.store.db import Database
from threadcast.toolkit import Backends, Inbox, MemoryInbox, Service, SqlInbox, TestKit, once
from threadcast.toolkit.memory import MemoryQueue
from threadcast.toolkit.sql_inbox import stored_id


@pytest.fixture
async def database(data_dir) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{data_dir / 'threadcast.db'}")
    yield db
    await db.close()


@pytest.fixture(params=["memory", "sql"])
async def inbox(request, database) -> AsyncIterator[Inbox]:
    box: Inbox = MemoryInbox() if request.param == "memory" else SqlInbox(database, migrate=True)
    await box.start()
    yield box
    await box.close()


async def test_recorded_ids_are_seen_per_consumer(inbox):
    assert not await inbox.seen("a", "evt-1")
    await inbox.record("a", "evt-1")
    await inbox.record("a", "evt-1")  # harmless
    assert await inbox.seen("a", "evt-1")
    assert not await inbox.seen("b", "evt-1")


async def test_ids_longer_than_the_column_are_kept_as_a_digest(inbox):
    long_id = "x" * 300
    await inbox.record("a", long_id)
    assert await inbox.seen("a", long_id)
    assert not await inbox.seen("a", "x" * 299)
    assert len(stored_id(long_id)) <= 64


async def test_compaction_forgets_entries_older_than_the_ttl(inbox):
    await inbox.record("a", "old")
    assert await inbox.compact(older_than=3600) == 0
    assert await inbox.compact(older_than=-1) == 1  # everything is older than "a second from now"
    assert not await inbox.seen("a", "old")


async def test_once_runs_an_effect_a_single_time_per_key(inbox):
    effects: list[str] = []

    async def send() -> None:
        effects.append("sent")

    assert await once(inbox, "mailer", "evt-1/welcome", send)
    assert not await once(inbox, "mailer", "evt-1/welcome", send)
    assert await once(inbox, "mailer", "evt-2/welcome", send)
    assert effects == ["sent", "sent"]


async def test_once_records_nothing_when_the_effect_fails(inbox):
    async def fail() -> None:
        raise ConnectionError("smtp down")

    with pytest.raises(ConnectionError):
        await once(inbox, "mailer", "evt-1", fail)
    assert not await inbox.seen("mailer", "evt-1")


async def test_a_transaction_commits_the_effect_with_the_entry_or_neither(database):
    inbox = SqlInbox(database, migrate=True)
    await inbox.start()
    async with database.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE effects (event_id TEXT)"))

    async def apply(event_id: str, *, crash: bool = False) -> bool:
        async with inbox.transaction("writer", event_id) as session:
            if session is None:
                return False
            await session.execute(text("INSERT INTO effects VALUES (:id)"), {"id": event_id})
            if crash:
                raise RuntimeError("died before the commit")
            return True

    with pytest.raises(RuntimeError):
        await apply("evt-1", crash=True)
    assert not await inbox.seen("writer", "evt-1")
    assert await apply("evt-1")
    assert not await apply("evt-1")
    assert await asyncio.gather(apply("evt-2"), apply("evt-2")) in ([True, False], [False, True])
    async with database.session() as session:
        rows = (await session.execute(text("SELECT event_id FROM effects ORDER BY event_id"))).scalars().all()
    assert rows == ["evt-1", "evt-2"]


async def test_an_unreachable_inbox_fails_the_attempt_rather_than_skip_or_lose_the_message(database):
    svc = Service("guarded")
    handled: list[str] = []

    @svc.consumer(queue="jobs", model=Job, max_attempts=2)
    async def work(job: Job) -> None:
        handled.append(job.id)

    async with TestKit(svc, backends=Backends(queue=MemoryQueue(), inbox=SqlInbox(database, migrate=True))) as kit:
        async with database.engine.begin() as conn:
            await conn.execute(text("DROP TABLE inbox"))
        await kit.send_to_queue("jobs", Job("a"))
        await kit.drain()
        [letter] = await kit.queue.dead_letters("jobs")
    assert letter.error.startswith("inbox unavailable: OperationalError")
    assert (letter.attempts, handled) == (2, [])
