"""`threadcast stats storm`: input it cannot use exits with status 2 and one line, before any
server is contacted (tests/e2e/test_storm_stats.py runs the commands against real servers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from threadcast.cli import main


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    lib = tmp_path / "lib"
    lib.mkdir()
    for jar in ("storm-client-2.8.3.jar", "flux-core-2.8.3.jar", "storm-core-2.8.3.jar"):
        (lib / jar).touch()
    return lib


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["stats", "storm", *args], env={"THREADCAST_STORM_LIB": None, **(env or {})})


def test_an_event_log_that_is_not_kafka_is_refused(tmp_path: Path) -> None:
    result = invoke("flux", "--data-dir", str(tmp_path), env={"THREADCAST_LOG_URL": ""})
    assert result.exit_code == 2
    assert "Storm reads the event log from Kafka" in result.output and "kafka://HOST:PORT" in result.output


def test_stats_settings_out_of_range_are_refused(tmp_path: Path) -> None:
    env = {"THREADCAST_LOG_URL": "kafka://127.0.0.1:1", "THREADCAST_STATS_WINDOW": "0"}
    result = invoke("flux", "--data-dir", str(tmp_path), env=env)
    assert result.exit_code == 2
    assert "invalid stats settings" in result.output and "window" in result.output


def test_jars_are_needed(tmp_path: Path) -> None:
    result = invoke("local", "--storm-lib", str(tmp_path), env={"THREADCAST_LOG_URL": "kafka://127.0.0.1:1"})
    assert result.exit_code == 2
    assert "no flux-core jar" in result.output and "dev/storm/service install" in result.output
    assert invoke("local").exit_code == 2  # no --storm-lib, no THREADCAST_STORM_LIB


@pytest.mark.parametrize("nimbus", ["host:port", "host:0", ":6627", "host:70000"])
def test_a_bad_nimbus_address_is_refused(lib: Path, nimbus: str) -> None:
    result = invoke("kill", "stats", "--storm-lib", str(lib), "--nimbus", nimbus)
    assert result.exit_code == 2
    assert "HOST[:PORT]" in result.output
