"""The contract of every coordination backend: the embedded SQLite coordinator always, ZooKeeper
when THREADCAST_TEST_BACKENDS names it (THREADCAST_TEST_ZK_URL says where the server is).

Several coordinators on one backend stand for several processes. Every ZooKeeper test works
under its own chroot, removed afterwards. Waits poll until a condition holds and fail at a
generous deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tests.conftest import backend_params
from threadcast.coord import (
    ConfigError,
    Coordinator,
    Leadership,
    LiveConfig,
    MemberInfo,
    NotLeaderError,
    Term,
)
from threadcast.coord.sqlite import SqliteCoordinator

DEADLINE = 30.0
"""Seconds a test waits for a condition before it fails."""

T = TypeVar("T")


class Coordinators:
    """Makes started coordinators on one backend and closes those the test left open."""

    def __init__(self, make: Callable[[], Coordinator]) -> None:
        self._make = make
        self._open: list[Coordinator] = []

    async def new(self) -> Coordinator:
        coordinator = self._make()
        await coordinator.start()
        self._open.append(coordinator)
        return coordinator

    async def close(self, coordinator: Coordinator) -> None:
        self._open.remove(coordinator)
        await coordinator.close()

    async def close_all(self) -> None:
        while self._open:
            await self.close(self._open[-1])


def zk_hosts() -> str:
    """host:port[,host:port] of THREADCAST_TEST_ZK_URL."""
    return os.environ["THREADCAST_TEST_ZK_URL"].removeprefix("zk://").split("/", 1)[0]


@contextlib.asynccontextmanager
async def zk_chroot(prefix: str) -> AsyncIterator[str]:
    """A fresh chroot on the test server, removed (with all below it) afterwards."""
    from kazoo.client import KazooClient
    from kazoo.exceptions import NoNodeError

    chroot = f"/{prefix}-{uuid.uuid4().hex[:12]}"
    try:
        yield chroot
    finally:

        def remove() -> None:
            client = KazooClient(zk_hosts())
            client.start(10)
            try:
                with contextlib.suppress(NoNodeError):
                    client.delete(chroot, recursive=True)
            finally:
                client.stop()
                client.close()

        await asyncio.to_thread(remove)


@contextlib.asynccontextmanager
async def coordinator_url(backend: str, name: str, data_dir: Path, session_timeout: float) -> AsyncIterator[str]:
    """A coordinator URL with `session_timeout`: a fresh chroot on the test ZooKeeper (`backend`
    "zookeeper", the chroot named after `name`), else a SQLite file in `data_dir`."""
    options = f"?session_timeout={session_timeout}"
    if backend == "zookeeper":
        async with zk_chroot(name) as chroot:
            yield f"zk://{zk_hosts()}{chroot}{options}"
    else:
        yield f"sqlite:///{data_dir / 'coord.db'}{options}"


@pytest.fixture(params=backend_params("zookeeper"))
async def coordinators(request, data_dir) -> AsyncIterator[Coordinators]:
    if request.param == "zookeeper":
        from threadcast.coord.zookeeper import ZooKeeperCoordinator

        async with zk_chroot("contract") as chroot:
            made = Coordinators(lambda: ZooKeeperCoordinator(zk_hosts(), chroot=chroot, session_timeout=4.0))
            yield made
            await made.close_all()
    else:
        made = Coordinators(lambda: SqliteCoordinator(data_dir / "coord.db", poll_interval=0.05))
        yield made
        await made.close_all()


def info(port: int) -> MemberInfo:
    return MemberInfo.this_process(
        port=port, url=f"http://127.0.0.1:{port}", health_url=f"http://127.0.0.1:{port}/healthz"
    )


async def eventually(probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool]) -> T:
    """Call `probe` until `accept` takes what it returns; fail at the deadline."""
    async with asyncio.timeout(DEADLINE):
        while True:
            value = await probe()
            if accept(value):
                return value
            await asyncio.sleep(0.05)


async def next_matching(updates: AsyncIterator[T], accept: Callable[[T], bool]) -> T:
    async with asyncio.timeout(DEADLINE):
        async for update in updates:
            if accept(update):
                return update
    raise AssertionError("the watch ended")


async def first_elected(candidates: list[Leadership]) -> tuple[Leadership, Term]:
    """The candidacy that holds a term first (the others keep running)."""
    waits = {asyncio.create_task(candidate.elected()): candidate for candidate in candidates}
    try:
        done, _ = await asyncio.wait(waits, timeout=DEADLINE, return_when=asyncio.FIRST_COMPLETED)
        assert done, "nobody was elected"
        task = done.pop()
        return waits[task], task.result()
    finally:
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


def ports(members) -> list[int]:
    return [member.info.port for member in members]


# --- registry ------------------------------------------------------------------------------


async def test_members_are_listed_by_role_in_registration_order(coordinators):
    first, second = await coordinators.new(), await coordinators.new()
    described = info(1)
    await first.register("formatter", described)
    await second.register("formatter", info(2))
    edge = await second.register("edge", info(3))

    listed = await first.members("formatter")
    assert ports(listed) == [1, 2]
    assert {member.role for member in listed} == {"formatter"}
    assert len({member.id for member in listed}) == 2
    assert listed[0].info == described
    assert [(m.id, m.info) for m in await second.members("edge")] == [(edge.id, edge.info)]
    assert await first.roles() == ["edge", "formatter"]
    assert await first.members("nobody") == []


async def test_a_member_disappears_when_closed_and_with_its_coordinator(coordinators):
    observer, owner = await coordinators.new(), await coordinators.new()
    kept = await owner.register("edge", info(1))
    closed = await owner.register("edge", info(2))
    await closed.close()
    assert ports(await observer.members("edge")) == [1]

    await coordinators.close(owner)
    assert kept.closed
    assert await observer.members("edge") == []
    assert await observer.roles() == []


async def test_watching_a_role_sees_every_change(coordinators):
    watcher, other = await coordinators.new(), await coordinators.new()
    async with contextlib.aclosing(watcher.watch_members("edge")) as updates:
        assert await next_matching(updates, lambda members: True) == []
        first = await other.register("edge", info(1))
        assert ports(await next_matching(updates, lambda m: len(m) == 1)) == [1]
        await other.register("edge", info(2))
        await other.register("formatter", info(9))
        assert ports(await next_matching(updates, lambda m: len(m) == 2)) == [1, 2]
        await first.close()
        assert ports(await next_matching(updates, lambda m: len(m) == 1)) == [2]


async def test_names_that_cannot_be_paths_are_refused(coordinators):
    coordinator = await coordinators.new()
    for bad in ("", "a/b", ".."):
        with pytest.raises(ValueError):
            await coordinator.register(bad, info(1))
        with pytest.raises(ValueError):
            coordinator.leader(bad)


# --- live configuration --------------------------------------------------------------------


async def test_config_starts_as_the_defaults_and_changes_are_seen_by_everyone(coordinators):
    writer, reader = await coordinators.new(), await coordinators.new()
    assert await reader.get_config() == LiveConfig()

    updated = await writer.set_config("channels.buffer_length", 500)
    await writer.set_config("features.new_editor", True)
    await writer.set_config("edges", ["http://127.0.0.1:8000", "nchan+http://127.0.0.1:8080"])

    assert updated.channels.buffer_length == 500
    seen = await reader.get_config()
    assert seen.channels.buffer_length == 500
    assert seen.features == {"new_editor": True}
    assert seen.edges == ["http://127.0.0.1:8000", "nchan+http://127.0.0.1:8080"]
    assert seen.channels.buffer_ttl == LiveConfig().channels.buffer_ttl


async def test_invalid_paths_and_values_are_refused_and_change_nothing(coordinators):
    coordinator = await coordinators.new()
    await coordinator.set_config("rate_limits.posts_per_minute", 5)
    for path, value in [
        ("channels.nope", 1),
        ("max_message_bytes.deeper", 1),
        ("channels.buffer_length", 0),
        ("channels.buffer_length", "many"),
        ("edges", ["ftp://127.0.0.1"]),
        ("features.Not A Name", True),
        ("maintenance.enabled", "perhaps"),
    ]:
        with pytest.raises(ConfigError):
            await coordinator.set_config(path, value)
    expected = LiveConfig()
    expected.rate_limits.posts_per_minute = 5
    assert await coordinator.get_config() == expected


async def test_concurrent_changes_are_all_kept(coordinators):
    first, second = await coordinators.new(), await coordinators.new()

    async def flip(coordinator: Coordinator, prefix: str) -> None:
        for index in range(10):
            await coordinator.set_config(f"features.{prefix}-{index}", True)

    await asyncio.gather(flip(first, "a"), flip(second, "b"))
    features = (await first.get_config()).features
    assert sorted(features) == sorted([f"a-{i}" for i in range(10)] + [f"b-{i}" for i in range(10)])


async def test_watching_the_config_delivers_the_tree_then_each_change(coordinators):
    watcher, writer = await coordinators.new(), await coordinators.new()
    async with contextlib.aclosing(watcher.watch_config()) as updates:
        initial = await next_matching(updates, lambda update: True)
        assert initial.config == LiveConfig()
        assert initial.changed == ()

        await writer.set_config("maintenance.enabled", True)
        update = await next_matching(updates, lambda u: u.config.maintenance.enabled)
        assert update.changed == ("maintenance.enabled",)
        assert update.version != initial.version

        await writer.set_config("channels.buffer_ttl", 60)
        update = await next_matching(updates, lambda u: u.config.channels.buffer_ttl == 60)
        assert update.changed == ("channels.buffer_ttl",)
        assert update.config.maintenance.enabled


# --- leader election -----------------------------------------------------------------------


async def test_exactly_one_candidate_leads_and_epochs_grow_at_each_takeover(coordinators):
    candidates = {}
    for _ in range(3):
        coordinator = await coordinators.new()
        candidacy = coordinator.leader("relay")
        await candidacy.start()
        candidates[candidacy] = coordinator

    epochs = []
    while candidates:
        leader, term = await first_elected(list(candidates))
        await term.check()
        assert [c for c in candidates if c.is_leader] == [leader]
        assert leader.epoch == term.epoch
        epochs.append(term.epoch)
        await coordinators.close(candidates.pop(leader))
        assert term.lost.is_set()
        assert not leader.is_leader
    assert epochs == sorted(set(epochs))


async def test_a_resigned_term_is_signalled_and_fails_its_check(coordinators):
    coordinator = await coordinators.new()
    candidacy = coordinator.leader("janitor")
    term = await candidacy.elected()
    await term.check()
    await candidacy.close()
    assert term.lost.is_set()
    assert term.reason == "resigned"
    with pytest.raises(NotLeaderError):
        await term.check()


async def test_a_duty_fenced_off_ends_its_term_and_the_next_term_has_a_greater_epoch(coordinators):
    """A fence ahead of the epochs (as after the coordination data was lost) refuses the duty
    with `NotLeaderError` though the backend still names this candidate: each refusal ends the
    term, and the epochs climb past the fence."""
    coordinator = await coordinators.new()
    epochs: list[int] = []
    terms: list[Term] = []

    async def duty(term: Term) -> None:
        epochs.append(term.epoch)
        terms.append(term)
        if term.epoch <= epochs[0] + 2:
            raise NotLeaderError(f"fenced off: epoch {term.epoch}")

    async with coordinator.leader("relay") as candidacy:
        await asyncio.wait_for(candidacy.run(duty), DEADLINE)
    assert epochs == sorted(set(epochs)) and epochs[-1] > epochs[0] + 2
    assert all(term.lost.is_set() and "fenced off" in term.reason for term in terms[:-1])


async def test_duties_never_overlap_and_stop_before_the_next_term(coordinators):
    """Each candidacy runs the duty in its terms; the leader's coordinator then closes (its run
    cancelled first, as a process shutting down does). The log of starts and stops must show
    one duty at a time, in growing epochs."""
    log: list[tuple[str, int]] = []
    active = 0

    async def duty(term: Term) -> None:
        nonlocal active
        active += 1
        log.append(("start", term.epoch))
        try:
            assert active == 1
            await asyncio.Event().wait()
        finally:
            log.append(("stop", term.epoch))
            active -= 1

    runs = {}
    for _ in range(3):
        coordinator = await coordinators.new()
        candidacy = coordinator.leader("stats-committer")
        runs[candidacy] = (coordinator, asyncio.create_task(candidacy.run(duty)))

    async def leaders() -> list[Leadership]:
        return [candidacy for candidacy in runs if candidacy.is_leader]

    for starts in (1, 2, 3):
        [leader] = await eventually(
            leaders, lambda found, starts=starts: len(found) == 1 and [kind for kind, _ in log].count("start") == starts
        )
        coordinator, task = runs.pop(leader)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await coordinators.close(coordinator)

    assert [kind for kind, _ in log] == ["start", "stop"] * 3
    epochs = [epoch for kind, epoch in log if kind == "start"]
    assert epochs == sorted(set(epochs))
    assert [epoch for kind, epoch in log if kind == "stop"] == epochs


async def test_a_lock_admits_one_holder_at_a_time(coordinators):
    inside = 0
    epochs: list[int] = []

    async def critical(coordinator: Coordinator) -> None:
        nonlocal inside
        for _ in range(3):
            async with coordinator.lock("schema-migration") as term:
                inside += 1
                assert inside == 1
                epochs.append(term.epoch)
                await term.check()
                await asyncio.sleep(0)
                inside -= 1

    await asyncio.gather(*[critical(await coordinators.new()) for _ in range(3)])
    assert len(epochs) == 9
    assert epochs == sorted(set(epochs))
