"""Run `threadcast up` as a real subprocess on a free port."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from threadcast.bench.servers import ThreadcastProcess


class UpProcess(ThreadcastProcess):
    """`threadcast up` in a subprocess on a free port, with this environment plus `env`; can be
    killed (-9) and started again on the same data."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        super().__init__(free_port(), data_dir, {**os.environ, **(env or {})})
        self.base_url = self.url

    def start(self, timeout: float = 30.0) -> None:
        super().start(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        super().stop(timeout)
        return self.proc.returncode


@pytest.fixture
def up(tmp_path) -> Iterator[UpProcess]:
    process = UpProcess(tmp_path / "up")
    process.start()
    yield process
    process.stop()
