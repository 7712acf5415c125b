"""`threadcast bench` options: parsing, checks, and exit status 2 with a clear message."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from threadcast.bench.config import SCENARIO_NAMES, BenchConfig, parse_mix, parse_rate, parse_scenarios
from threadcast.cli import main


def test_mix_is_normalised_and_drops_zero_weights():
    assert parse_mix("sse=3,websocket=1,longpoll=0") == {"sse": 0.75, "websocket": 0.25}


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("sse=1,carrier-pigeon=1", "NAME one of"),
        ("sse", "NAME=WEIGHT"),
        ("sse=1,sse=2", "twice"),
        ("sse=-1,websocket=2", "0 or more"),
        ("sse=x", "not a number"),
        ("sse=0,websocket=0", "at least one weight"),
    ],
)
def test_bad_mixes_say_what_is_wrong(text, complaint):
    with pytest.raises(ValueError, match=complaint):
        parse_mix(text)


def test_rate_is_a_positive_number_or_max():
    assert parse_rate("max") is None
    assert parse_rate("12.5") == 12.5
    for bad in ("0", "-3", "fast", "nan", "inf"):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_scenarios_keep_the_given_order_once_each():
    assert parse_scenarios("all") == SCENARIO_NAMES
    assert parse_scenarios("raw-nchan, embedded,raw-nchan") == ("raw-nchan", "embedded")
    with pytest.raises(ValueError, match="unknown scenario 'kafka'"):
        parse_scenarios("embedded,kafka")


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("subscribers", 0, "--subscribers"),
        ("threads", 0, "--threads"),
        ("zipf", -0.5, "--zipf"),
        ("inflight", 0, "--inflight"),
        ("duration", 0.0, "--duration"),
        ("clients", 5, "--clients"),
        ("connect_concurrency", 0, "--connect-concurrency"),
        ("drain", -1.0, "--drain"),
    ],
)
def test_config_refuses_bad_values_naming_the_flag(field, value, flag):
    with pytest.raises(ValueError, match=flag):
        BenchConfig(**{"subscribers": 4, field: value})


def test_client_processes_default_to_one_per_2500_subscribers_at_most_one_per_core(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert BenchConfig(subscribers=1000).client_processes() == 1
    assert BenchConfig(subscribers=3000).client_processes() == 2
    assert BenchConfig(subscribers=100_000).client_processes() == 2
    assert BenchConfig(subscribers=100, clients=3).client_processes() == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "-1"], "rate '-1' must be positive"),
        (["--mix", "sse=1,smoke=1"], "NAME one of"),
        (["--scenarios", "everything"], "unknown scenario"),
        (["--subscribers", "0"], "--subscribers must be at least 1"),
        (["--duration", "abc"], "not a valid float"),
    ],
)
def test_bad_flags_exit_2_with_a_clear_message(args, message, tmp_path):
    result = CliRunner().invoke(main, ["bench", "--out", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert not any(tmp_path.iterdir())
