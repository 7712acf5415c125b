"""Shared test configuration.

Contract suites run against the embedded backend always, and against each real backend named
in `THREADCAST_TEST_BACKENDS` (comma-separated: kafka, rabbitmq, nchan, ...). `make test`
starts the real servers with `dev/services up` and names them all, so a server that is not
running fails the run instead of being skipped.
"""

from __future__ import annotations

import os
import socket

import pytest


def selected_real_backends() -> set[str]:
    raw = os.environ.get("THREADCAST_TEST_BACKENDS", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def backend_params(*real: str) -> list[str]:
    """`["embedded", <each real backend that is selected>]`, for `@pytest.fixture(params=...)`."""
    chosen = selected_real_backends()
    return ["embedded", *[name for name in real if name in chosen]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "data"
    path.mkdir()
    return path
