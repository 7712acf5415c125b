"""`threadcast members` and `threadcast config get|set|list`, on the embedded backend."""

from __future__ import annotations

import asyncio
import json

import pytest
import structlog
from click.testing import CliRunner

from threadcast.cli import main
from threadcast.coord import MemberInfo
from threadcast.coord.sqlite import SqliteCoordinator


@pytest.fixture
def cli(data_dir, monkeypatch):
    monkeypatch.setenv("THREADCAST_DATA_DIR", str(data_dir))
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, list(args), catch_exceptions=False)

    yield invoke
    structlog.reset_defaults()  # the commands configure logging for the process


def test_set_then_get_and_list(cli):
    assert cli("config", "get", "channels.buffer_length").output == "200\n"

    result = cli("config", "set", "channels.buffer_length", "500")
    assert result.exit_code == 0
    assert result.output == "channels.buffer_length = 500\n"
    cli("config", "set", "edges", "http://127.0.0.1:8000,nchan+http://127.0.0.1:8080")
    cli("config", "set", "maintenance.message", "back soon")

    assert cli("config", "get", "channels.buffer_length").output == "500\n"
    tree = json.loads(cli("config", "get").output)
    assert tree["edges"] == ["http://127.0.0.1:8000", "nchan+http://127.0.0.1:8080"]
    listed = cli("config", "list").output.splitlines()
    assert "channels.buffer_length = 500" in listed
    assert 'maintenance.message = "back soon"' in listed
    assert "features = {}" in listed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("config", "set", "channels.size", "1"), "unknown configuration path 'channels.size'"),
        (("config", "set", "channels.buffer_length", "lots"), "invalid value for channels.buffer_length"),
        (("config", "set", "edges", "ftp://127.0.0.1"), "invalid value for edges"),
        (("config", "get", "nothing.here"), "unknown configuration path 'nothing.here'"),
    ],
)
def test_bad_paths_and_values_are_usage_errors(cli, args, message):
    result = cli(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert cli("config", "get", "channels.buffer_length").output == "200\n"


def test_members_lists_the_registered_members(cli, data_dir):
    assert cli("members").output == "no members\n"
    loop = asyncio.new_event_loop()
    coordinator = SqliteCoordinator(data_dir / "coord.db")
    try:
        loop.run_until_complete(coordinator.start())
        for role, port in (("edge", 8001), ("formatter", 9001)):
            info = MemberInfo.this_process(port=port, url=f"http://127.0.0.1:{port}")
            loop.run_until_complete(coordinator.register(role, info))

        table = cli("members").output.splitlines()
        assert table[0].split() == ["ROLE", "ID", "HOST", "PID", "PORT", "URL", "HEALTH", "VERSION", "UP"]
        assert [(row.split()[0], row.split()[4]) for row in table[1:]] == [("edge", "8001"), ("formatter", "9001")]
        only = cli("members", "--role", "formatter").output.splitlines()
        assert [row.split()[0] for row in only[1:]] == ["formatter"]
        assert cli("members", "--role", "relay").output == "no members of role 'relay'\n"
    finally:
        loop.run_until_complete(coordinator.close())
        loop.close()
