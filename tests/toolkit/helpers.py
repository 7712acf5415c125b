"""Shared by the toolkit tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[2]

DEADLINE = 20.0
"""Seconds a test waits for a condition before failing (generous: the suite runs on busy CI)."""


class Job(msgspec.Struct, frozen=True):
    id: str
    key: int = 0
    fail_times: int = 0
    """The handler fails this many attempts before it succeeds."""


async def wait_until(condition: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    """Yield to the loop until `condition()` holds; fail after `deadline` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


class Gate:
    """Handlers that enter wait until the test opens the gate; `entered` counts them."""

    def __init__(self) -> None:
        self.entered = 0
        self._open = asyncio.Event()

    async def pass_through(self) -> None:
        self.entered += 1
        await self._open.wait()

    def open(self) -> None:
        self._open.set()


class ChildProcess:
    """`python -m <module> <args>` run from the repository root, its output in a new file of
    `folder`, with `env` added to the environment."""

    def __init__(self, module: str, *args: str, folder: Path, env: Mapping[str, str] | None = None) -> None:
        self.output = folder / f"{module.rpartition('.')[2]}-{len(list(folder.glob('*.log')))}.log"
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )

    async def wait_for_output(self, text: str) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + DEADLINE
        while text not in self.output.read_text():
            assert self.proc.poll() is None, f"the process exited early:\n{self.output.read_text()}"
            assert loop.time() < end, f"no {text!r} from the process:\n{self.output.read_text()}"
            await asyncio.sleep(0.02)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    async def terminate(self) -> int:
        """SIGTERM; the exit status (killed, and a failure, after `DEADLINE` seconds)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, DEADLINE)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
