"""The bench's workload: Zipf popularity, the transport mix, the split over client processes."""

from __future__ import annotations

from collections import Counter

import pytest

from threadcast.bench.workload import ThreadChooser, exact_counts, plan_subscribers, share_out, zipf_weights


def test_zipf_weights_add_up_to_one_and_fall_with_rank():
    weights = zipf_weights(50, 1.0)
    assert sum(weights) == pytest.approx(1.0)
    assert weights == sorted(weights, reverse=True)
    assert weights[0] / weights[9] == pytest.approx(10.0)
    assert zipf_weights(4, 0.0) == [0.25] * 4


def test_exact_counts_add_up_to_the_total():
    counts = exact_counts(10, {"sse": 0.6, "websocket": 0.3, "longpoll": 0.1})
    assert counts == {"sse": 6, "websocket": 3, "longpoll": 1}
    assert sum(exact_counts(7, {"sse": 1 / 3, "websocket": 1 / 3, "longpoll": 1 / 3}).values()) == 7


def test_subscribers_follow_the_mix_exactly_and_crowd_the_popular_threads():
    specs = plan_subscribers(1000, 20, 1.0, {"sse": 0.6, "websocket": 0.3, "longpoll": 0.1}, seed=7)
    assert [spec.index for spec in specs] == list(range(1000))
    assert Counter(spec.transport for spec in specs) == {"sse": 600, "websocket": 300, "longpoll": 100}
    per_thread = Counter(spec.thread for spec in specs)
    assert set(per_thread) <= set(range(20))
    assert per_thread.most_common(1)[0][0] == 0
    assert per_thread[0] > 5 * per_thread[19]


def test_the_same_seed_gives_the_same_workload():
    mix = {"sse": 0.5, "longpoll": 0.5}
    assert plan_subscribers(50, 5, 1.2, mix, seed=3) == plan_subscribers(50, 5, 1.2, mix, seed=3)
    assert plan_subscribers(50, 5, 1.2, mix, seed=3) != plan_subscribers(50, 5, 1.2, mix, seed=4)
    first, second = ThreadChooser(5, 1.0, seed=3), ThreadChooser(5, 1.0, seed=3)
    assert [first.next() for _ in range(100)] == [second.next() for _ in range(100)]


def test_posts_go_to_popular_threads_most():
    chooser = ThreadChooser(10, 1.0, seed=1)
    counts = Counter(chooser.next() for _ in range(10_000))
    assert set(counts) <= set(range(10))
    assert counts.most_common(1)[0][0] == 0


def test_share_out_deals_every_subscriber_once_and_leaves_no_process_empty():
    specs = plan_subscribers(7, 3, 1.0, {"sse": 1.0}, seed=1)
    shares = share_out(specs, 3)
    assert [len(share) for share in shares] == [3, 2, 2]
    assert sorted(spec.index for share in shares for spec in share) == list(range(7))
    assert len(share_out(specs[:2], 4)) == 2
