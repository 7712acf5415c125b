"""A process that dies (kill -9) or hangs (SIGSTOP) loses its members and its leadership to the
others, on every coordination backend: at once (embedded: its PID is gone) or within its
session timeout.

The other process is this module run as a program: `python -m tests.unit.test_coord_crash URL`
registers a member of role `relay`, wins the duty `relay`, prints `ready EPOCH` and waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import backend_params
from tests.contract.test_coord_contract import DEADLINE, coordinator_url, eventually
from threadcast.coord import Coordinator, MemberInfo, open_coordinator
from threadcast.logs import configure_logging

ROOT = Path(__file__).resolve().parents[2]
SESSION_TIMEOUT = 2.0
CHILD_PORT = 4242


@pytest.fixture(params=backend_params("zookeeper"))
async def url(request, data_dir) -> AsyncIterator[str]:
    async with coordinator_url(request.param, "crash", data_dir, SESSION_TIMEOUT) as url:
        yield url


@pytest.fixture
async def observer(url) -> AsyncIterator[Coordinator]:
    coordinator = open_coordinator(url)
    await coordinator.start()
    yield coordinator
    await coordinator.close()


@contextlib.asynccontextmanager
async def leading_child(url: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """The child process, once it leads; killed afterwards if it still runs."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.unit.test_coord_crash", url, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), DEADLINE)
        assert line.startswith(b"ready "), line
        yield process, int(line.split()[1])
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def child_ports(coordinator: Coordinator) -> list[int]:
    return [member.info.port for member in await coordinator.members("relay")]


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "hung"])
async def test_a_dead_or_hung_process_loses_its_members_and_its_duty(url, observer, stop):
    async with leading_child(url) as (child, child_epoch):
        assert await child_ports(observer) == [CHILD_PORT]
        async with observer.leader("relay") as candidacy:
            os.kill(child.pid, stop)
            if stop == signal.SIGKILL:
                await child.wait()
            term = await asyncio.wait_for(candidacy.elected(), DEADLINE)
            assert term.epoch > child_epoch
            await term.check()
            await eventually(lambda: child_ports(observer), lambda found: found == [])


async def _child(url: str) -> None:
    configure_logging("warning")  # on stderr: stdout is for the parent
    coordinator = open_coordinator(url)
    await coordinator.start()
    await coordinator.register("relay", MemberInfo.this_process(port=CHILD_PORT))
    term = await coordinator.leader("relay").elected()
    print(f"ready {term.epoch}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_child(sys.argv[1]))
