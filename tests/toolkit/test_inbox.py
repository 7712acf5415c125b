"""The inbox, in memory and on the project database (SQLite, and PostgreSQL when
THREADCAST_TEST_BACKENDS names `postgres`), and the idempotent-effect helpers. How an inbox
transaction carries a consumer's own writes is in tests/contract/test_store_contract.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from tests.conftest import backend_params
from tests.databases import empty_database_url
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


@pytest.fixture(params=["memory", *(f"sql-{name}" for name in backend_params("postgres"))])
async def inbox(request, data_dir) -> AsyncIterator[Inbox]:
    if request.param == "memory":
        box: Inbox = MemoryInbox()
        await box.start()
        yield box
        await box.close()
        return
    async with empty_database_url(request.param.removeprefix("sql-"), data_dir) as url:
        db = Database(url)
        box = SqlInbox(db, migrate=True)
        await box.start()
        yield box
        await box.close()
        await db.close()


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
