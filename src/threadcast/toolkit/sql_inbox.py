"""The inbox on the project database (table `inbox`), SQLite or PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import Insert

from threadcast.store.db import Database
from threadcast.store.models import InboxEntry
from threadcast.toolkit.inbox import Inbox

EVENT_ID_LENGTH = InboxEntry.__table__.c.event_id.type.length


def stored_id(event_id: str) -> str:
    """Ids longer than the column are stored as a digest."""
    if len(event_id) <= EVENT_ID_LENGTH:
        return event_id
    return "h:" + hashlib.blake2b(event_id.encode(), digest_size=24).hexdigest()


class SqlInbox(Inbox):
    """Inbox entries in the `inbox` table. With `migrate=True`, `start` brings the schema to
    the newest revision first (for a service process started on a fresh database). The
    database itself is closed by its owner, not by the inbox."""

    def __init__(self, db: Database, *, migrate: bool = False) -> None:
        self.db = db
        self._migrate = migrate

    async def start(self) -> None:
        if self._migrate:
            await self.db.migrate()
        else:
            await self.db.ping()

    async def close(self) -> None:
        pass

    async def ping(self) -> None:
        await self.db.ping()

    async def seen(self, consumer: str, event_id: str) -> bool:
        query = select(InboxEntry.event_id).where(
            InboxEntry.consumer == consumer, InboxEntry.event_id == stored_id(event_id)
        )
        async with self.db.session() as session:
            return (await session.scalar(query)) is not None

    async def record(self, consumer: str, event_id: str) -> None:
        async with self.db.session() as session, session.begin():
            await self._claim(session, consumer, event_id)

    async def compact(self, older_than: float) -> int:
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
        async with self.db.session() as session, session.begin():
            result = await session.execute(delete(InboxEntry).where(InboxEntry.processed_at < cutoff))
            return result.rowcount or 0

    @asynccontextmanager
    async def transaction(self, consumer: str, event_id: str) -> AsyncIterator[AsyncSession | None]:
        """Exactly-once database effects. Yields a session whose transaction already holds
        the inbox entry, or None when `event_id` was processed before (or is being processed
        right now by another worker, which this one waits for). Write your effects with the
        session: they commit together with the entry when the block ends, or not at all if
        it raises or the process dies. A redelivery then finds the entry and gets None.

            async with inbox.transaction(ctx.consumer, ctx.event_id) as session:
                if session is None:
                    return
                session.add(Notification(...))
        """
        async with self.db.session() as session, session.begin():
            claimed = await self._claim(session, consumer, event_id)
            yield session if claimed else None

    async def _claim(self, session: AsyncSession, consumer: str, event_id: str) -> bool:
        """Insert the entry unless present; True when this call inserted it."""
        statement = _insert_ignoring_duplicates(
            session.bind.dialect.name,
            consumer=consumer,
            event_id=stored_id(event_id),
            processed_at=datetime.now(UTC),
        )
        result = await session.execute(statement)
        return result.rowcount == 1


def _insert_ignoring_duplicates(dialect: str, **values: object) -> Insert:
    if dialect == "sqlite":
        return sqlite.insert(InboxEntry).values(**values).on_conflict_do_nothing()
    if dialect == "postgresql":
        return postgresql.insert(InboxEntry).values(**values).on_conflict_do_nothing()
    raise NotImplementedError(f"the SQL inbox supports SQLite and PostgreSQL, not {dialect}")
