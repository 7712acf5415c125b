"""Matching receipts to posts (expected, lost, duplicates, latency), the table, the plots."""

from __future__ import annotations

import copy
from array import array

import pytest

from threadcast.bench import analysis
from threadcast.bench.plots import write_plots
from threadcast.bench.poster import PosterResult
from threadcast.bench.report import add_ratios, render_table
from threadcast.bench.subscribers import WorkerResult
from threadcast.bench.workload import SubscriberSpec


def worker(
    receipts: list[tuple[int, int, float]], intervals: dict[int, list[tuple[float, float | None]]]
) -> WorkerResult:
    return WorkerResult(
        worker=0,
        receipt_subscriber=array("l", [r[0] for r in receipts]),
        receipt_post=array("q", [r[1] for r in receipts]),
        receipt_time=array("d", [r[2] for r in receipts]),
        intervals=intervals,
        errors={},
        cpu_seconds=0.1,
        measured_seconds=1.0,
        max_rss_kb=1000,
    )


def poster(posts: list[tuple[int, int, float, float]]) -> PosterResult:
    """(post id, thread index, sent, accepted)"""
    result = PosterResult()
    for post, thread, sent, accepted in posts:
        result.post_id.append(post)
        result.thread.append(thread)
        result.sent.append(sent)
        result.accepted.append(accepted)
    return result


SPECS = [SubscriberSpec(0, "sse", 0), SubscriberSpec(1, "websocket", 0), SubscriberSpec(2, "longpoll", 1)]
POSTS = poster([(101, 0, 9.99, 10.0), (102, 0, 10.99, 11.0), (103, 1, 11.99, 12.0), (104, 0, 12.99, 13.0)])


def test_every_receipt_is_matched_to_its_post():
    records = worker(
        [
            (0, 101, 10.010),
            (0, 102, 11.020),
            (0, 104, 13.005),
            (0, 102, 11.5),  # one duplicate
            (1, 101, 10.030),  # subscriber 1 left at 12.5: 104 is not expected from it, 102 is lost
            (2, 103, 12.002),
            (2, 101, 10.5),  # another thread's post: unexpected
            (1, 999, 10.9),  # a post whose response never came: unexpected
        ],
        {0: [(5.0, None)], 1: [(5.0, 12.5)], 2: [(5.0, None)]},
    )
    matched = analysis.match(SPECS, [records], POSTS)
    assert (matched.expected, matched.received, matched.lost) == (3 + 2 + 1, 5, 1)
    assert (matched.duplicates, matched.unexpected) == (1, 2)
    assert matched.latencies_ms == pytest.approx([10.0, 20.0, 5.0, 30.0, 2.0])
    assert matched.from_sent_ms == pytest.approx([20.0, 30.0, 15.0, 40.0, 12.0])
    assert matched.by_transport["longpoll"] == pytest.approx([2.0])
    assert matched.transports() == {
        "sse": {"expected": 3, "received": 3, "lost": 0},
        "websocket": {"expected": 2, "received": 1, "lost": 1},
        "longpoll": {"expected": 1, "received": 1, "lost": 0},
    }


def test_posts_accepted_while_a_subscriber_was_away_are_not_expected_from_it():
    records = worker([(0, 101, 10.01), (0, 104, 13.01), (0, 102, 11.01)], {0: [(5.0, 10.5), (12.0, None)]})
    matched = analysis.match(SPECS[:1], [records], POSTS)
    assert (matched.expected, matched.received, matched.lost, matched.unexpected) == (2, 2, 0, 1)


def test_summaries_cdf_and_rates():
    values = [float(v) for v in range(1, 101)]
    summary = analysis.summary(values)
    assert summary is not None
    assert (summary["p50"], summary["max"], summary["mean"]) == (50.5, 100.0, 50.5)
    assert analysis.summary([]) is None
    points = analysis.cdf(values, points=5)
    assert points[0] == 1.0 and points[-1] == 100.0 and points == sorted(points)
    assert analysis.rate_series([0.1, 0.2, 0.6, 1.4], start=0.0, end=1.5, bucket=0.5) == [4.0, 2.0, 2.0]
    assert analysis.count_between([0.5, 1.0, 2.0, 3.5], 1.0, 3.0) == 2


def scenario(name: str, p50: float, deliveries: float = 1000.0, connections: float = 500.0) -> dict:
    latency = {"p50": p50, "p90": 2 * p50, "p99": 3 * p50, "max": 4 * p50, "mean": p50}
    return {
        "name": name,
        "status": "ok",
        "description": name,
        "subscribers": {"connected": 10},
        "connect": {"per_second": connections, "busiest_client_cpu_percent": 40.0},
        "posts": {"per_second": 5.0},
        "deliveries": {"per_second": deliveries, "lost": 0, "duplicates": 0},
        "latency_ms": latency,
        "latency_from_sent_ms": latency,
        "latency_cdf_ms": [p50 / 2, p50, 4 * p50],
        "latency_from_sent_cdf_ms": [p50 / 2, p50, 4 * p50],
        "errors_total": 0,
        "server": {"rss_kb_per_connection": 20.0, "cpu_percent": 50.0},
        "client": {"busiest_cpu_percent": 10.0},
        "timeline": {"bucket_s": 0.5, "delivered_per_s": [deliveries] * 4, "accepted_per_s": [5.0] * 4},
    }


REPORT = {
    "machine": {"nproc": 2},
    "config": {"subscribers": 10, "threads": 2, "zipf": 1.0, "rate": 5.0, "duration_s": 2.0, "mix": {"sse": 1.0}},
    "scenarios": [
        scenario("embedded", 8.0, deliveries=500.0),
        {"name": "brokers", "status": "unavailable", "reason": "no Kafka URL: give --kafka-url", "description": "b"},
        scenario("raw-nchan", 2.0, connections=1000.0),
    ],
}


def test_ratios_to_raw_nchan_and_the_table():
    report = copy.deepcopy(REPORT)
    add_ratios(report["scenarios"])
    embedded, brokers, raw = report["scenarios"]
    assert embedded["vs_raw_nchan"] == {
        "deliveries_per_s": 0.5,
        "connections_per_s": 0.5,
        "latency_p50_from_sent": 4.0,
        "latency_p99_from_sent": 4.0,
        "rss_kb_per_connection": 1.0,
    }
    assert "vs_raw_nchan" not in raw and "vs_raw_nchan" not in brokers
    table = render_table(report)
    assert "embedded" in table and "raw-nchan" in table
    assert "brokers: unavailable: no Kafka URL: give --kafka-url" in table
    assert "0.5x" in table and "4x" in table
    assert "40%/10%" in table


def test_no_ratios_without_the_ceiling():
    scenarios = [scenario("embedded", 8.0)]
    add_ratios(scenarios)
    assert "vs_raw_nchan" not in scenarios[0]


def test_plots_are_png_files(tmp_path):
    paths = write_plots(REPORT, tmp_path)
    assert [p.name for p in paths] == ["latency-cdf.png", "throughput.png"]
    for path in paths:
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    nothing = {**REPORT, "scenarios": [REPORT["scenarios"][1]]}
    assert write_plots(nothing, tmp_path / "none") == []


def test_the_warm_up_post_is_left_out():
    records = worker([(0, 7, 9.0), (0, 101, 10.01)], {0: [(5.0, None)]})
    matched = analysis.match(SPECS[:1], [records], POSTS, ignored={7})
    assert (matched.received, matched.unexpected, matched.duplicates) == (1, 0, 0)
    assert analysis.match(SPECS[:1], [records], POSTS).unexpected == 1
