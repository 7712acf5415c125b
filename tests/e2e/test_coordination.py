"""The built-in services coordinated across processes (issue 5): two `threadcast run relay`
processes beside an API-only `threadcast up` (dispatcher and formatter in it), all on one data
folder, on the embedded coordinator and, when selected, on ZooKeeper (a fresh chroot)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import backend_params
from tests.contract.test_coord_contract import zk_chroot, zk_hosts
from tests.e2e.conftest import UpProcess
from tests.e2e.test_live import Reader, demo_thread, post
from tests.toolkit.helpers import ChildProcess, wait_until
from threadcast.coord import Coordinator, open_coordinator

SESSION_TIMEOUT = 2.0
TAKEOVER_DEADLINE = 30.0
"""Generous: the session timeout, then the new leader's first batch, on a busy machine."""


@pytest.fixture(params=backend_params("zookeeper"))
async def coord_url(request, data_dir) -> AsyncIterator[str]:
    if request.param == "zookeeper":
        async with zk_chroot("e2e") as chroot:
            yield f"zk://{zk_hosts()}{chroot}?session_timeout={SESSION_TIMEOUT}"
    else:
        yield f"sqlite:///{data_dir / 'coord.db'}?session_timeout={SESSION_TIMEOUT}"


@pytest.fixture
async def coord(coord_url) -> AsyncIterator[Coordinator]:
    coordinator = open_coordinator(coord_url)
    await coordinator.start()
    yield coordinator
    await coordinator.close()


def won(process: ChildProcess) -> bool:
    return "leadership won" in process.output.read_text()


async def start_relay(data_dir: Path, env: dict[str, str]) -> ChildProcess:
    relay = ChildProcess("threadcast", "run", "relay", folder=data_dir, env=env)
    await relay.wait_for_output("services started")
    return relay


def in_order_without_duplicates(received: list[dict]) -> list[dict]:
    """The messages a subscriber got, each post once (the first time it arrived)."""
    seen: set[int] = set()
    unique = []
    for message in received:
        if message["data"]["id"] not in seen:
            seen.add(message["data"]["id"])
            unique.append(message)
    return unique


async def test_one_relay_leads_and_the_other_takes_over_after_kill_9(tmp_path, coord_url, coord):
    data_dir = tmp_path / "shared"
    env = {"THREADCAST_COORD_URL": coord_url}
    api = UpProcess(data_dir, env={**env, "THREADCAST_SERVICES": "dispatcher,formatter"})
    api.start()
    relay_env = {**env, "THREADCAST_DATA_DIR": str(data_dir), "THREADCAST_PORT": str(api.port)}
    relays = [await start_relay(data_dir, relay_env), await start_relay(data_dir, relay_env)]
    reader: Reader | None = None
    try:
        await wait_until(lambda: any(won(r) for r in relays), "a relay leader", TAKEOVER_DEADLINE)
        assert len(await coord.members("relay")) == 2
        [leader] = [r for r in relays if won(r)]
        [follower] = [r for r in relays if r is not leader]

        thread_id = await demo_thread(api.base_url)
        reader = Reader("sse", api.base_url, f"thread:{thread_id}")
        await reader.ready()
        sent = [await post(api.base_url, thread_id, f"before {n}") for n in range(5)]
        await reader.wait_for(5)

        async def keep_posting() -> None:
            for n in range(20):
                sent.append(await post(api.base_url, thread_id, f"around the takeover {n}"))
                await asyncio.sleep(0.05)

        assert not won(follower)
        posting = asyncio.create_task(keep_posting())
        await asyncio.sleep(0.2)  # some posts land while the leader is being killed
        leader.kill()
        await posting
        await wait_until(lambda: won(follower), "the takeover", TAKEOVER_DEADLINE)
        sent_ids = {p["id"] for p in sent}
        seen = await reader.wait_for_ids(sent_ids, TAKEOVER_DEADLINE)
        assert sent_ids <= seen, f"lost: {sorted(sent_ids - seen)}"
        unique = in_order_without_duplicates([message for _, message in reader.received])
        seqs = [message["seq"] for message in unique]
        assert seqs == sorted(seqs)
        assert [m["data"]["id"] for m in unique] == [p["id"] for p in sent]
    finally:
        if reader is not None:
            await reader.close()
        for relay in relays:
            if relay.proc.poll() is None:
                await relay.terminate()
        api.stop()


def changes_logged(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if "live configuration changed" in line]


async def test_a_config_change_reaches_the_running_processes(tmp_path, coord_url, coord):
    """`threadcast up` (relay, dispatcher, formatter and the embedded edge) logs the change and
    its edge keeps only the new number of messages per channel."""
    api = UpProcess(tmp_path / "shared", env={"THREADCAST_COORD_URL": coord_url})
    api.start()
    reader: Reader | None = None
    try:
        await coord.set_config("channels.buffer_length", 5)
        await wait_until(lambda: changes_logged(api.log_path) != [], "the change in the log")
        [line] = changes_logged(api.log_path)
        assert "channels.buffer_length" in line
        thread_id = await demo_thread(api.base_url)
        reader = Reader("sse", api.base_url, f"thread:{thread_id}")
        await reader.ready()
        for n in range(8):
            await post(api.base_url, thread_id, f"post {n}")
        await reader.wait_for(8)
        async with httpx.AsyncClient(base_url=api.base_url) as client:
            assert (await client.get(f"/pub/thread:{thread_id}")).json()["messages"] == 5
    finally:
        if reader is not None:
            await reader.close()
        api.stop()
