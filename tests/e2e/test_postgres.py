"""End to end on PostgreSQL: `threadcast up` with THREADCAST_DATABASE_URL naming a database of
its own on the dev server (`dev/services up postgres`; THREADCAST_TEST_DATABASE_URL names the
server). Selected when THREADCAST_TEST_BACKENDS names postgres (`make test` does)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import selected_real_backends
from tests.databases import empty_database_url
from threadcast.store.db import Database
from threadcast.store.models import OutboxEvent, Post

from .conftest import UpProcess
from .test_live import Reader, demo_thread, post

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(
        "postgres" not in selected_real_backends(), reason="postgres not selected (THREADCAST_TEST_BACKENDS)"
    ),
]


@pytest.fixture
async def database_url(tmp_path) -> AsyncIterator[str]:
    async with empty_database_url("postgres", tmp_path) as url:
        yield url


@pytest.fixture
def postgres_up(tmp_path, database_url) -> Iterator[UpProcess]:
    process = UpProcess(tmp_path / "up", env={"THREADCAST_DATABASE_URL": database_url})
    process.start(timeout=60)
    yield process
    process.stop()


async def stored(database_url: str) -> tuple[list[str], int]:
    """The messages of the posts in the database, and the rows left in its outbox."""
    db = Database(database_url)
    try:
        async with db.session() as session:
            messages = list((await session.scalars(select(Post.message).order_by(Post.id))).all())
            outbox = len((await session.scalars(select(OutboxEvent.id))).all())
        return messages, outbox
    finally:
        await db.close()


async def test_a_comment_is_stored_in_postgres_and_reaches_a_subscriber(postgres_up, database_url):
    thread_id = await demo_thread(postgres_up.base_url)
    reader = Reader("sse", postgres_up.base_url, f"thread:{thread_id}")
    await reader.ready()
    sent = await post(postgres_up.base_url, thread_id, "kept by <b>PostgreSQL</b>")
    [message] = await reader.wait_for(1, timeout=30)
    assert message["data"]["id"] == sent["id"]
    await reader.close()

    messages, outbox = await stored(database_url)
    assert "kept by <b>PostgreSQL</b>" in messages
    assert outbox == 0, "the relay moved the event to the log"
    assert not (postgres_up.data_dir / "threadcast.db").exists(), "no SQLite database beside"

    postgres_up.kill()
    postgres_up.start(timeout=60)
    async with httpx.AsyncClient(base_url=postgres_up.base_url) as client:
        listed = (await client.get(f"/api/v1/threads/{thread_id}/posts")).json()["posts"]
    assert sent in listed, "a restarted `up` reads the same database"
    after = await post(postgres_up.base_url, thread_id, "after the restart")
    assert after["seq"] == sent["seq"] + 1
