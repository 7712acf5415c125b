"""`threadcast bench` end to end with tiny numbers: it runs, and writes a sane JSON file and
PNG plots. No timing assertions: figures depend on the machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from threadcast.bench.config import BenchConfig
from threadcast.bench.scenarios import nchan_unavailable

TINY = "--subscribers 6 --threads 3 --rate 10 --duration 2 --drain 2 --mix sse=1,websocket=1,longpoll=1".split()
PNG = b"\x89PNG\r\n\x1a\n"


def run_bench(out: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    done = subprocess.run(
        [sys.executable, "-m", "threadcast", "bench", "--out", str(out), *TINY, *args],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [results] = out.glob("*/results.json")
    for plot in ("latency-cdf.png", "throughput.png"):
        assert (results.parent / plot).read_bytes().startswith(PNG)
    return done, json.loads(results.read_text())


def check_measured(scenario: dict) -> None:
    assert scenario["status"] == "ok", scenario
    assert scenario["subscribers"] == {
        "requested": 6,
        "connected": 6,
        "by_transport": {"sse": 2, "websocket": 2, "longpoll": 2},
    }
    deliveries = scenario["deliveries"]
    assert 0 < deliveries["received"] <= deliveries["expected"]
    assert scenario["posts"]["accepted"] <= scenario["posts"]["attempted"]
    latency = scenario["latency_ms"]
    assert latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert len(scenario["latency_cdf_ms"]) == 201
    # the seeded workload puts a subscriber of each transport on the busiest thread
    assert all(scenario["latency_ms_by_transport"][name] for name in ("sse", "websocket", "longpoll"))
    assert scenario["server"]["rss_mb_connected"] > 0
    assert scenario["client"]["processes"] == 2
    timeline = scenario["timeline"]
    assert len(timeline["delivered_per_s"]) == len(timeline["accepted_per_s"]) > 0


def test_embedded_scenario_writes_results_and_plots_and_reports_the_unavailable(tmp_path):
    closed = f"kafka://127.0.0.1:{free_port()}"
    done, report = run_bench(
        tmp_path, "--scenarios", "embedded,brokers", "--kafka-url", closed, "--amqp-url", "amqp://x"
    )
    embedded, brokers = report["scenarios"]
    check_measured(embedded)
    assert brokers["status"] == "unavailable" and "does not answer" in brokers["reason"]
    assert report["config"]["subscribers"] == 6 and report["machine"]["nproc"] >= 1
    assert "embedded" in done.stdout and "brokers: unavailable" in done.stdout


@pytest.mark.skipif(nchan_unavailable(BenchConfig()) is not None, reason="nginx with the Nchan module is not installed")
def test_nchan_scenarios_are_compared_with_the_ceiling(tmp_path):
    done, report = run_bench(tmp_path, "--scenarios", "nchan,raw-nchan")
    nchan, raw = report["scenarios"]
    check_measured(nchan)
    check_measured(raw)
    assert set(nchan["vs_raw_nchan"]) >= {"deliveries_per_s", "latency_p99_from_sent"}
    assert "vs raw-nchan" in done.stdout
