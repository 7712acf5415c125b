"""`threadcast stats query` and `threadcast stats top` over a folder store of Parquet results."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from tests.stats_results import Window, key, write_window
from threadcast.cli import main


@pytest.fixture
def objects(tmp_path):
    return tmp_path / "objects"


@pytest.fixture
def cli(monkeypatch, tmp_path):
    monkeypatch.delenv("THREADCAST_STORE_URL", raising=False)
    monkeypatch.setenv("THREADCAST_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None):
        return runner.invoke(main, ["stats", *args], env=env, catch_exceptions=False)

    return invoke


def recent(minutes_ago: int) -> datetime:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - timedelta(minutes=minutes_ago)


def test_query_prints_a_table(cli, objects):
    write_window(objects, Window(datetime(2026, 11, 29, 6, 40, tzinfo=UTC), {1: 3, 2: 4}))
    write_window(objects, Window(datetime(2026, 11, 29, 6, 41, tzinfo=UTC), {1: 1}, latency_ms=None))

    sql = "SELECT minute, posts, latency_p99_ms FROM forum ORDER BY minute"
    result = cli("query", sql, "--store-url", str(objects))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "  minute    posts    latency_p99_ms",
        "--------  -------  ----------------",
        "      40        7                80",
        "      41        1              NULL",
        "(2 rows)",
    ]


def test_query_as_csv_and_json(cli, objects):
    write_window(objects, Window(datetime(2026, 11, 29, 6, 40, tzinfo=UTC), {1: 3}))
    sql = "SELECT window_start, forum, posts FROM forum"

    rows = list(csv.reader(io.StringIO(cli("query", sql, "--format", "csv", "--store-url", str(objects)).output)))
    assert rows == [["window_start", "forum", "posts"], ["2026-11-29 06:40:00+00:00", "demo", "3"]]
    parsed = json.loads(cli("query", sql, "--format", "json", "--store-url", str(objects)).output)
    assert parsed == [{"window_start": "2026-11-29T06:40:00+00:00", "forum": "demo", "posts": 3}]


def test_query_on_an_empty_store(cli, tmp_path):
    result = cli("query", "SELECT count(*) AS windows FROM forum")
    assert result.exit_code == 0
    assert result.output.splitlines()[-2:] == ["        0", "(1 row)"]
    assert not (tmp_path / "data" / "objects").exists()  # reading creates nothing


def test_the_store_is_found_like_other_commands(cli, tmp_path, objects):
    """--store-url, else THREADCAST_STORE_URL, else DATA_DIR/objects (--data-dir or the env)."""
    write_window(objects, Window(datetime(2026, 11, 29, 6, 40, tzinfo=UTC), {1: 3}))
    write_window(tmp_path / "data" / "objects", Window(datetime(2026, 11, 29, 6, 40, tzinfo=UTC), {1: 5}))
    write_window(tmp_path / "flag" / "objects", Window(datetime(2026, 11, 29, 6, 40, tzinfo=UTC), {1: 9}))
    sql = "SELECT posts FROM forum"

    def posts(*args: str, env: dict[str, str] | None = None) -> list[str]:
        return cli("query", sql, "--format", "csv", *args, env=env).output.splitlines()[1:]

    assert posts() == ["5"]
    assert posts("--data-dir", str(tmp_path / "flag")) == ["9"]
    assert posts(env={"THREADCAST_STORE_URL": objects.as_uri()}) == ["3"]
    assert posts("--store-url", str(tmp_path / "flag" / "objects"), env={"THREADCAST_STORE_URL": str(objects)}) == ["9"]


def test_top_lists_the_threads_with_most_posts(cli, objects):
    write_window(objects, Window(recent(90), {5: 100}))  # outside the last hour
    write_window(objects, Window(recent(10), {1: 2, 2: 7}))
    write_window(objects, Window(recent(9), {1: 4, 3: 1}))

    result = cli("top", "--forum", "demo", "--since", "1h", "--store-url", str(objects))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "  rank    thread_id    posts",
        "------  -----------  -------",
        "     1            2        7",
        "     2            1        6",
        "     3            3        1",
        "(3 rows)",
    ]
    longer = json.loads(cli("top", "--forum", "demo", "--since", "2h", "--limit", "1", "--format", "json",
                            "--store-url", str(objects)).output)
    assert longer == [{"rank": 1, "thread_id": 5, "posts": 100}]
    assert cli("top", "--forum", "other", "--store-url", str(objects)).output.endswith("(0 rows)\n")


@pytest.mark.parametrize("since", ["1x", "h", "0m", "99999999999d"])
def test_a_bad_duration_is_a_usage_error(cli, since):
    result = cli("top", "--forum", "demo", "--since", since)
    assert result.exit_code == 2
    assert "Invalid value for '--since'" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELEC 1", 'Error: SQL error: Parser Error: syntax error at or near "SELEC"'),
        ("SELECT nope FROM forum", 'Error: SQL error: Binder Error: Referenced column "nope" not found'),
    ],
)
def test_a_sql_error_is_one_line(cli, sql, message):
    result = cli("query", sql)
    assert result.exit_code == 2
    assert result.output.startswith(message)
    assert result.output.count("\n") == 1


def test_a_bad_store_url_is_a_usage_error(cli):
    result = cli("query", "SELECT 1", "--store-url", "ftp://example/x")
    assert result.exit_code == 2
    assert "unknown object store URL 'ftp://example/x'" in result.output


def test_an_unreadable_store_exits_1(cli, objects):
    bad = objects / key("forum", Window(recent(2), {}))
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not parquet")
    result = cli("top", "--forum", "demo", "--store-url", str(objects))
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot read the stats in file://")
