"""The embedded coordinator's sessions: a session another process reaped is renewed with its
members, and a database that stops answering suspends the session (ending every term) before
anyone could take the lease over."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator

import pytest

from tests.contract.test_coord_contract import DEADLINE
from threadcast.coord import MemberInfo, SessionState, open_coordinator
from threadcast.coord.sqlite import SqliteCoordinator, _drop_sessions

SESSION_TIMEOUT = 1.5
"""Heartbeats every half second."""


@pytest.fixture
async def coordinator(data_dir) -> AsyncIterator[SqliteCoordinator]:
    made = SqliteCoordinator(data_dir / "coord.db", session_timeout=SESSION_TIMEOUT, poll_interval=0.05)
    await made.start()
    yield made
    await made.close()


def write_lock(coordinator: SqliteCoordinator) -> sqlite3.Connection:
    """Another connection holding the database's write lock (until it commits)."""
    conn = sqlite3.connect(coordinator.path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    return conn


async def test_a_reaped_session_is_renewed_with_its_members_and_a_new_term(coordinator):
    registration = await coordinator.register("formatter", MemberInfo.this_process(port=1))
    candidacy = coordinator.leader("relay")
    first = await asyncio.wait_for(candidacy.elected(), DEADLINE)
    old_session, old_id = coordinator.session, registration.id

    conn = write_lock(coordinator)  # what another process's reaper does to a session it found dead
    _drop_sessions(conn, {old_session})
    conn.execute("COMMIT")
    conn.close()

    await asyncio.wait_for(first.lost.wait(), DEADLINE)
    assert first.reason == "session lost"
    second = await asyncio.wait_for(candidacy.elected(), DEADLINE)
    assert second.epoch > first.epoch
    assert coordinator.session != old_session
    assert registration.id != old_id
    assert [m.id for m in await coordinator.members("formatter")] == [registration.id]
    await candidacy.close()


async def test_a_stalled_database_suspends_the_session_until_it_answers_again(coordinator):
    registration = await coordinator.register("formatter", MemberInfo.this_process(port=1))
    candidacy = coordinator.leader("relay")
    first = await asyncio.wait_for(candidacy.elected(), DEADLINE)

    conn = write_lock(coordinator)
    try:
        await asyncio.wait_for(first.lost.wait(), DEADLINE)
        assert coordinator.state is SessionState.SUSPENDED
        assert first.reason == "session suspended"
    finally:
        conn.execute("COMMIT")
        conn.close()

    second = await asyncio.wait_for(candidacy.elected(), DEADLINE)
    assert second.epoch > first.epoch
    assert coordinator.state is SessionState.CONNECTED
    assert [m.id for m in await coordinator.members("formatter")] == [registration.id]
    await candidacy.close()


async def test_a_duty_whose_term_was_taken_stops_at_its_check_and_runs_again_later(coordinator):
    """Another holder (whose session then died) took the lease behind this candidate's back:
    the duty's next `check()` fails, `run` stops that duty, and the candidacy wins a later term."""
    epochs: list[int] = []
    taken = asyncio.Event()

    async def duty(term) -> None:
        epochs.append(term.epoch)
        if len(epochs) == 1:
            await taken.wait()
            await term.check()
            raise AssertionError("the check passed in a term that is over")

    candidacy = coordinator.leader("relay")
    running = asyncio.create_task(candidacy.run(duty))
    async with asyncio.timeout(DEADLINE):
        while not epochs:
            await asyncio.sleep(0.01)
    conn = write_lock(coordinator)
    conn.execute("UPDATE coord_leases SET holder = 'intruder', session = 'ended', epoch = epoch + 1")
    conn.execute("COMMIT")
    conn.close()
    taken.set()

    await asyncio.wait_for(running, DEADLINE)
    assert epochs[1] > epochs[0] + 1
    await candidacy.close()


def test_the_url_names_the_file_and_the_timings(tmp_path):
    coordinator = open_coordinator(f"sqlite:///{tmp_path}/coord.db?session_timeout=3&poll_interval=0.2")
    assert isinstance(coordinator, SqliteCoordinator)
    assert coordinator.path == tmp_path / "coord.db"
    assert (coordinator.session_timeout, coordinator.poll_interval) == (3.0, 0.2)
    for bad in ("sqlite://relative.db", "sqlite:///x.db?timeout=1", "memory://", "sqlite:///x.db?poll_interval=0"):
        with pytest.raises(ValueError):
            open_coordinator(bad)
