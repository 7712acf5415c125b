from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from threadcast.cli import main
from threadcast.config import load_settings


def test_defaults_are_embedded(monkeypatch):
    for key in ("THREADCAST_LOG_URL", "THREADCAST_QUEUE_URL", "THREADCAST_DATABASE_URL", "THREADCAST_EDGE_URL"):
        monkeypatch.delenv(key, raising=False)
    settings = load_settings(data_dir=Path("/tmp/x"))
    assert settings.resolved_log_url() == "sqlite:////tmp/x/log.db"
    assert settings.resolved_queue_url() == "sqlite:////tmp/x/queue.db"
    assert settings.resolved_database_url().startswith("sqlite+aiosqlite:///")
    assert settings.edge_url == "embedded"


def test_precedence_file_then_env_then_flags(tmp_path, monkeypatch):
    config = tmp_path / "threadcast.toml"
    config.write_text('[threadcast]\nport = 9001\nlog_partitions = 3\nmax_attempts = 7\n')
    monkeypatch.setenv("THREADCAST_LOG_PARTITIONS", "4")
    settings = load_settings(config, max_attempts=2)
    assert (settings.port, settings.log_partitions, settings.max_attempts) == (9001, 4, 2)


def test_unknown_service_is_rejected():
    with pytest.raises(ValidationError):
        load_settings(services="relay,nonsense")


def test_cli_bad_config_exits_2(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[threadcast]\nport = "not a number"\n')
    result = CliRunner().invoke(main, ["doctor", "--config", str(config)])
    assert result.exit_code == 2
    assert "invalid configuration" in result.output


def test_cli_unreadable_toml_exits_2(tmp_path):
    config = tmp_path / "broken.toml"
    config.write_text("this is = = not toml")
    result = CliRunner().invoke(main, ["doctor", "--config", str(config)])
    assert result.exit_code == 2
    assert "cannot read configuration" in result.output


def test_doctor_reports_unreachable_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("THREADCAST_QUEUE_URL", "amqp://u:secret@127.0.0.1:1/")
    result = CliRunner().invoke(main, ["doctor"], env={"THREADCAST_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 1
    assert "FAIL queue" in result.output and "secret" not in result.output
    assert "ok   log" in result.output
