"""The ZooKeeper coordinator through connection trouble, on the real server: a TCP proxy on
loopback between the coordinator and ZooKeeper cuts the connection (a network partition) and
restores it; the last test restarts the dev server itself.

Selected when THREADCAST_TEST_BACKENDS names zookeeper (THREADCAST_TEST_ZK_URL: the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import selected_real_backends
from tests.contract.test_coord_contract import DEADLINE, eventually, zk_chroot, zk_hosts
from threadcast.coord import Coordinator, MemberInfo, SessionState, open_coordinator
from threadcast.coord.zookeeper import ZooKeeperCoordinator

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif("zookeeper" not in selected_real_backends(), reason="zookeeper is not selected"),
]


class Proxy:
    """Forwards loopback connections to ZooKeeper, until `cut()` drops them all and refuses new
    ones; `restore()` lets them through again."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._cut = False
        self._links: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._links |= {writer, up_writer}
        try:
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        finally:
            for end in (writer, up_writer):
                self._links.discard(end)
                end.transport.abort()

    def cut(self) -> None:
        self._cut = True
        for end in list(self._links):
            end.transport.abort()

    def restore(self) -> None:
        self._cut = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()


@pytest.fixture
async def chroot() -> AsyncIterator[str]:
    async with zk_chroot("unit") as path:
        yield path


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    host, port = zk_hosts().split(",")[0].rsplit(":", 1)
    made = Proxy(host, int(port))
    await made.start()
    yield made
    await made.close()


@contextlib.asynccontextmanager
async def started(coordinator: Coordinator) -> AsyncIterator[Coordinator]:
    await coordinator.start()
    try:
        yield coordinator
    finally:
        await coordinator.close()


async def member_ids(coordinator: Coordinator, role: str) -> list[str]:
    return [member.id for member in await coordinator.members(role)]


async def state_becomes(coordinator: Coordinator, state: SessionState) -> None:
    async with asyncio.timeout(DEADLINE):
        while coordinator.state is not state:
            await coordinator.state_changed().wait()


async def test_a_dropped_connection_ends_the_term_and_the_resumed_session_keeps_its_members(proxy, chroot):
    through_proxy = ZooKeeperCoordinator(f"127.0.0.1:{proxy.port}", chroot=chroot, session_timeout=10.0)
    async with started(through_proxy), started(ZooKeeperCoordinator(zk_hosts(), chroot=chroot)) as observer:
        registration = await through_proxy.register("edge", MemberInfo.this_process(port=1))
        candidacy = through_proxy.leader("relay")
        first = await asyncio.wait_for(candidacy.elected(), DEADLINE)

        proxy.cut()
        await asyncio.wait_for(first.lost.wait(), DEADLINE)
        assert through_proxy.state is SessionState.SUSPENDED
        assert first.reason == "session suspended"
        assert await member_ids(observer, "edge") == [registration.id]

        proxy.restore()
        second = await asyncio.wait_for(candidacy.elected(), DEADLINE)
        assert second.epoch > first.epoch
        await second.check()
        assert await member_ids(observer, "edge") == [registration.id]
        await candidacy.close()


async def test_an_expired_session_hands_the_duty_over_and_registers_its_members_again(proxy, chroot):
    through_proxy = ZooKeeperCoordinator(f"127.0.0.1:{proxy.port}", chroot=chroot, session_timeout=2.0)
    async with started(through_proxy), started(ZooKeeperCoordinator(zk_hosts(), chroot=chroot)) as observer:
        registration = await through_proxy.register("edge", MemberInfo.this_process(port=1))
        cut_off = through_proxy.leader("relay")
        first = await asyncio.wait_for(cut_off.elected(), DEADLINE)
        old_id = registration.id

        proxy.cut()
        await asyncio.wait_for(first.lost.wait(), DEADLINE)
        async with observer.leader("relay") as other:
            second = await asyncio.wait_for(other.elected(), DEADLINE)  # once the session expired
            assert second.epoch > first.epoch
            assert await member_ids(observer, "edge") == []

            proxy.restore()
            await state_becomes(through_proxy, SessionState.CONNECTED)
            assert (await eventually(lambda: member_ids(observer, "edge"), bool)) == [registration.id]
            assert registration.id != old_id
            assert not cut_off.is_leader
        third = await asyncio.wait_for(cut_off.elected(), DEADLINE)
        assert third.epoch > second.epoch
        await cut_off.close()


async def test_a_restarted_zookeeper_keeps_the_sessions_and_the_duty_resumes(chroot):
    service = ROOT / "dev" / "zookeeper" / "service"
    env = {**os.environ, "THREADCAST_ZK_PORT": str(urlsplit(os.environ["THREADCAST_TEST_ZK_URL"]).port)}
    url = f"{os.environ['THREADCAST_TEST_ZK_URL'].rstrip('/')}{chroot}?session_timeout=20"
    async with started(open_coordinator(url)) as coordinator:
        registration = await coordinator.register("formatter", MemberInfo.this_process(port=1))
        candidacy = coordinator.leader("relay")
        first = await asyncio.wait_for(candidacy.elected(), DEADLINE)

        await asyncio.to_thread(subprocess.run, ["bash", str(service), "stop"], env=env, check=True, timeout=120)
        await asyncio.wait_for(first.lost.wait(), DEADLINE)
        await asyncio.to_thread(subprocess.run, ["bash", str(service), "start"], env=env, check=True, timeout=120)

        second = await asyncio.wait_for(candidacy.elected(), DEADLINE)
        assert second.epoch > first.epoch
        assert await member_ids(coordinator, "formatter") == [registration.id]
        await candidacy.close()


def test_the_url_names_the_servers_the_chroot_and_the_timeouts():
    coordinator = open_coordinator("zk://127.0.0.1:2181,127.0.0.2:2181/prod/a?session_timeout=6&connect_timeout=3")
    assert isinstance(coordinator, ZooKeeperCoordinator)
    assert coordinator.hosts == "127.0.0.1:2181,127.0.0.2:2181"
    assert coordinator.root == "/prod/a/threadcast"
    assert (coordinator.session_timeout, coordinator.connect_timeout) == (6.0, 3.0)
    assert open_coordinator("zk://127.0.0.1:2181").root == "/threadcast"
    for bad in ("zk:///chroot", "zk://127.0.0.1:2181/x?sesion_timeout=1", "zk://127.0.0.1:2181/x?session_timeout=soon"):
        with pytest.raises(ValueError):
            open_coordinator(bad)
