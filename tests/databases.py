"""Empty project databases for tests, one per test: an SQLite file (`embedded`), or a database
of its own on the PostgreSQL server that THREADCAST_TEST_DATABASE_URL names (`postgres`;
`dev/services env postgres`), dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool


@asynccontextmanager
async def empty_database_url(backend: str, folder: Path) -> AsyncIterator[str]:
    """The URL of a new, empty database on `backend`; SQLite's file lives in `folder`."""
    if backend == "embedded":
        yield f"sqlite+aiosqlite:///{folder / 'threadcast.db'}"
        return
    server = make_url(os.environ["THREADCAST_TEST_DATABASE_URL"])
    name = f"test_{uuid.uuid4().hex}"
    admin = create_async_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.dispose()
