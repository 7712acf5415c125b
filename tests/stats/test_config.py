"""The stats settings: windows are whole minutes, since the results are keyed by the minute a
window starts, and a bad stats setting stops `threadcast run stats` and `threadcast up` before
anything starts, with exit status 2 (as a bad setting of threadcast's own does)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.stats.streams import BASE
from threadcast.cli import main
from threadcast.stats.definition import StatsConfig
from threadcast.stats.results import object_key

REFUSED = "THREADCAST_STATS_WINDOW must be a positive multiple of 60 seconds"


@pytest.mark.parametrize("window", [60, 120, 3600])
def test_windows_of_whole_minutes_get_a_key_each_and_one_minute_keys_stay_as_they_were(window: int) -> None:
    assert StatsConfig(window=window).window == window
    starts = [BASE + n * window for n in range(3)]
    assert len({object_key("forum", "demo", start) for start in starts}) == 3
    assert object_key("forum", "demo", BASE) == "stats/forum/dt=2027-01-15/hour=08/minute=00/part-demo.parquet"


@pytest.mark.parametrize("window", ["0", "-60", "1", "30", "59", "90"])
def test_a_window_that_is_not_whole_minutes_is_refused_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, window: str
) -> None:
    monkeypatch.setenv("THREADCAST_STATS_WINDOW", window)
    with pytest.raises(ValueError, match=REFUSED):
        StatsConfig()


@pytest.mark.parametrize("command", [["run", "stats"], ["up", "--port", "0"], ["stats", "rebuild", "--since", "1h"]])
def test_commands_refuse_a_window_that_is_not_whole_minutes_with_status_2(tmp_path: Path, command: list[str]) -> None:
    env = {"THREADCAST_STATS_WINDOW": "30", "THREADCAST_DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(main, command, env=env)
    assert result.exit_code == 2, result.output
    assert REFUSED in result.output
    assert not (tmp_path / "log.db").exists()  # refused before any backend was opened
