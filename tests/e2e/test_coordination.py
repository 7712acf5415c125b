"""The built-in services coordinated across processes (issue 5): two `threadcast run relay`
processes beside an API-only `threadcast up` (dispatcher and formatter in it), all on one data
folder, on the embedded coordinator and, when selected, on ZooKeeper (a fresh chroot); a
formatter finding the edges of two API processes through the registry; and, when ZooKeeper is
selected, services riding out a restart of a private ZooKeeper server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import backend_params, free_port, selected_real_backends
from tests.contract.test_coord_contract import coordinator_url
from tests.e2e.conftest import UpProcess
from tests.e2e.test_live import Reader, demo_thread, post
from tests.toolkit.helpers import ROOT, ChildProcess, wait_until
from threadcast.coord import CoordinationError, Coordinator, open_coordinator

SESSION_TIMEOUT = 2.0
ZK_SERVICE = ROOT / "dev" / "zookeeper" / "service"
TAKEOVER_DEADLINE = 30.0
"""Generous: the session timeout, then the new leader's first batch, on a busy machine."""


@pytest.fixture(params=backend_params("zookeeper"))
async def coord_url(request, data_dir) -> AsyncIterator[str]:
    async with coordinator_url(request.param, "e2e", data_dir, SESSION_TIMEOUT) as url:
        yield url


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


# -- edges found through the registry --------------------------------------------------------


async def channel_messages(up: UpProcess, channel: str) -> int:
    async with httpx.AsyncClient(base_url=up.base_url) as client:
        return (await client.get(f"/pub/{channel}")).json().get("messages", 0)


def edges_published_to(log: Path) -> tuple[str, list[str]]:
    """The source and the edges of the formatter's last `publishing to edges` (its log is JSON)."""
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    last = [event for event in events if event["event"] == "publishing to edges"][-1:] or [{"source": "", "edges": []}]
    return last[0]["source"], sorted(last[0]["edges"])


async def test_a_formatter_publishes_to_every_registered_edge_and_stops_when_one_leaves(tmp_path, coord_url, coord):
    """Two API processes with an embedded edge each (one also relays and dispatches) and a
    `threadcast run formatter`: every post reaches the subscribers of both edges; once one API
    process stops, its edge leaves the registry and the formatter publishes to the other only."""
    data_dir = tmp_path / "shared"
    env = {"THREADCAST_COORD_URL": coord_url}
    first = UpProcess(data_dir, env={**env, "THREADCAST_SERVICES": "relay,dispatcher"})
    second = UpProcess(data_dir, env={**env, "THREADCAST_SERVICES": ""})
    first.start()
    second.start()
    formatter_env = {**env, "THREADCAST_DATA_DIR": str(data_dir)}
    formatter = ChildProcess("threadcast", "run", "formatter", folder=data_dir, env=formatter_env)
    readers: list[Reader] = []
    try:
        await formatter.wait_for_output("services started")
        both = ("edge members", sorted([first.base_url, second.base_url]))
        await wait_until(lambda: edges_published_to(formatter.output) == both, "both edges")
        assert {m.info.port for m in await coord.members("edge")} == {first.port, second.port}
        assert {m.info.port for m in await coord.members("api")} == {first.port, second.port}

        thread_id = await demo_thread(first.base_url)
        readers = [Reader("sse", up.base_url, f"thread:{thread_id}") for up in (first, second)]
        for reader in readers:
            await reader.ready()
        sent = await post(first.base_url, thread_id, "to both edges")
        for reader in readers:
            [message] = await reader.wait_for(1)
            assert message["data"]["id"] == sent["id"]
        for up in (first, second):  # the job's last channel: the job is done
            await wait_until_async(lambda u=up: channel_messages(u, f"post:{sent['id']}"), 1, "the whole job")

        await readers.pop().close()
        second.stop()
        left = ("edge members", [first.base_url])
        await wait_until(lambda: edges_published_to(formatter.output) == left, "the edge gone")
        seen_before = len(formatter.output.read_text())
        after = await post(first.base_url, thread_id, "to the edge left")
        messages = await readers[0].wait_for(2)
        assert messages[1]["data"]["id"] == after["id"]
        await wait_until_async(lambda: channel_messages(first, f"post:{after['id']}"), 1, "the whole job")
        since = formatter.output.read_text()[seen_before:]
        assert f":{second.port}" not in since and "handler failed" not in since, "published to the stopped edge"
    finally:
        for reader in readers:
            await reader.close()
        await formatter.terminate()
        if second.proc is not None and second.proc.poll() is None:
            second.stop()
        first.stop()


# -- ZooKeeper restarted under running services -----------------------------------------------


class PrivateZooKeeper:
    """A ZooKeeper server of the test's own (dev/zookeeper/service on a free port, its data
    under the test's folder), so that restarting it disturbs no one else."""

    def __init__(self, run_dir: Path) -> None:
        self.port = free_port()
        self.env = {**os.environ, "THREADCAST_ZK_PORT": str(self.port), "THREADCAST_RUN_DIR": str(run_dir)}

    def url(self, chroot: str) -> str:
        return f"zk://127.0.0.1:{self.port}{chroot}?session_timeout={SESSION_TIMEOUT}"

    async def service(self, command: str) -> None:
        await asyncio.to_thread(
            subprocess.run, ["bash", str(ZK_SERVICE), command], env=self.env, check=True, timeout=120
        )


@pytest.fixture
async def private_zookeeper(tmp_path) -> AsyncIterator[PrivateZooKeeper]:
    server = PrivateZooKeeper(tmp_path / "run")
    await server.service("start")
    try:
        yield server
    finally:
        await server.service("stop")


async def members_listed(env: dict[str, str]) -> dict[str, list[str]]:
    """`threadcast members`: member ids by role."""
    listed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "threadcast", "members"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    by_role: dict[str, list[str]] = {}
    for row in listed.stdout.splitlines()[1:]:
        role, member_id, *_ = row.split()
        by_role.setdefault(role, []).append(member_id)
    return by_role


async def until_logged(process_log: Path, text: str, times: int = 1) -> None:
    """Until `text` is in the process's log `times` times."""
    await wait_until(lambda: process_log.read_text().count(text) >= times, repr(text), TAKEOVER_DEADLINE)


@pytest.mark.real
@pytest.mark.skipif("zookeeper" not in selected_real_backends(), reason="zookeeper is not selected")
async def test_services_ride_out_a_zookeeper_restart_and_an_expired_session(tmp_path, private_zookeeper):
    """`threadcast up` (API, edge, dispatcher, formatter) and `threadcast run relay` on a private
    ZooKeeper. The server is stopped: both pause their leader duties. While it is down the relay
    process is frozen (SIGSTOP), so that when the server is back its session expires, while the
    API process resumes its own. Thawed, the relay finds its session lost, opens a new one,
    registers again and leads again; every post, including those made during the outage,
    reaches the subscriber."""
    data_dir = tmp_path / "shared"
    env = {"THREADCAST_COORD_URL": private_zookeeper.url("/e2e")}
    api = UpProcess(data_dir, env={**env, "THREADCAST_SERVICES": "dispatcher,formatter"})
    api.start()
    relay = await start_relay(data_dir, {**env, "THREADCAST_DATA_DIR": str(data_dir), "THREADCAST_PORT": str(api.port)})
    reader: Reader | None = None
    observer = open_coordinator(env["THREADCAST_COORD_URL"])
    await observer.start()
    try:
        await wait_until(lambda: won(relay), "the relay's first term", TAKEOVER_DEADLINE)
        before = await members_listed(env)
        assert {"api", "edge", "dispatcher", "formatter", "relay"} <= set(before)
        thread_id = await demo_thread(api.base_url)
        reader = Reader("sse", api.base_url, f"thread:{thread_id}")
        await reader.ready()
        sent = [await post(api.base_url, thread_id, "before the restart")]

        await private_zookeeper.service("stop")
        for process_log in (relay.output, api.log_path):
            await until_logged(process_log, "coordination session suspended; pausing leader duties")
        await until_logged(relay.output, "leader duty stopped")
        sent.append(await post(api.base_url, thread_id, "while ZooKeeper is down"))
        relay.proc.send_signal(signal.SIGSTOP)
        try:
            await private_zookeeper.service("start")
            await until_logged(api.log_path, "coordination session reconnected; resuming leader duties")
            await wait_until_async(lambda: observer.members("relay"), [], "the frozen relay's session to expire")
        finally:
            relay.proc.send_signal(signal.SIGCONT)

        await until_logged(relay.output, "coordination session lost")
        await until_logged(relay.output, "members registered again")
        await until_logged(relay.output, "leadership won", times=2)
        after = await members_listed(env)
        assert {"api", "edge", "dispatcher", "formatter", "relay"} <= set(after)
        assert after["relay"] != before["relay"], "registered again under a new id"
        assert after["api"] == before["api"], "the API process kept its session"

        sent.append(await post(api.base_url, thread_id, "after the restart"))
        sent_ids = {p["id"] for p in sent}
        assert sent_ids <= await reader.wait_for_ids(sent_ids, TAKEOVER_DEADLINE)
    finally:
        await observer.close()
        if reader is not None:
            await reader.close()
        if relay.proc.poll() is None:
            await relay.terminate()
        api.stop()


async def wait_until_async(
    read: Callable[[], Awaitable[object]], expected: object, what: str, deadline: float = TAKEOVER_DEADLINE
) -> None:
    """Until `await read()` equals `expected`, tolerating a backend that does not answer yet."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        try:
            if await asyncio.wait_for(read(), 5) == expected:
                return
        except (CoordinationError, TimeoutError):
            pass
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
