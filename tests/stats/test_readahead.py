"""The log spout's read-ahead buffer: append-time order across partitions, holding back for a
partition the log has more of, and a fair share per partition."""

from __future__ import annotations

from threadcast.bus.log import Record
from threadcast.stats.readahead import ReadAhead


def rec(partition: int, offset: int, ts: float, topic: str = "events") -> Record:
    return Record(topic, partition, offset, None, b"", ts)


def positions(records: list[Record]) -> list[tuple[int, int]]:
    return [(r.partition, r.offset) for r in records]


def test_records_go_out_oldest_first_across_partitions_and_topics():
    ahead = ReadAhead(capacity=100)
    ahead.add([rec(0, 0, 1.0), rec(0, 1, 4.0)], share=50)
    ahead.add([rec(1, 0, 2.0), rec(1, 1, 3.0)], share=50)
    ahead.add([rec(0, 0, 2.5, topic="deliveries")], share=50)
    taken = ahead.take(10)
    assert [(r.topic, r.partition, r.offset) for r in taken] == [
        ("events", 0, 0), ("events", 1, 0), ("deliveries", 0, 0), ("events", 1, 1), ("events", 0, 1),
    ]  # fmt: skip
    assert len(ahead) == 0


def test_a_partition_the_log_has_more_of_holds_back_newer_records_until_it_is_read():
    ahead = ReadAhead(capacity=100)
    ahead.ends("events", {0: 10, 1: 2})
    ahead.add([rec(0, 0, 1.0)], share=50)
    ahead.add([rec(1, 0, 1.5), rec(1, 1, 5.0)], share=50)
    assert positions(ahead.take(10)) == [(0, 0)]  # partition 0 ran empty at 1.0, the log has 9 more
    ahead.add([rec(0, 1, 6.0)], share=50)
    assert positions(ahead.take(10)) == [(1, 0), (1, 1), (0, 1)]


def test_a_caught_up_partition_holds_no_one_back():
    ahead = ReadAhead(capacity=100)
    ahead.ends("events", {0: 1, 1: 2})
    ahead.add([rec(0, 0, 1.0)], share=50)
    ahead.add([rec(1, 0, 1.5), rec(1, 1, 5.0)], share=50)
    assert positions(ahead.take(10)) == [(0, 0), (1, 0), (1, 1)]


def test_each_partition_keeps_at_most_its_share_and_the_rest_is_to_be_read_again():
    ahead = ReadAhead(capacity=4)
    assert ahead.share(partitions=2) == 2
    refused = ahead.add([rec(0, 0, 1.0), rec(1, 0, 1.0), rec(0, 1, 2.0), rec(0, 2, 3.0), rec(0, 3, 4.0)], share=2)
    assert refused == {0: 2}
    assert len(ahead) == 3
    assert positions(ahead.take(10)) == [(0, 0), (1, 0), (0, 1)]


def test_records_read_before_are_left_out():
    ahead = ReadAhead(capacity=100)
    ahead.add([rec(0, 0, 1.0), rec(0, 1, 2.0)], share=50)
    assert positions(ahead.take(10)) == [(0, 0), (0, 1)]
    # The consumer went back to offset 0 (a group rebalance): what it hands out again is left out.
    assert ahead.add([rec(0, 0, 1.0), rec(0, 1, 2.0), rec(0, 2, 3.0)], share=50) == {}
    assert positions(ahead.take(10)) == [(0, 2)]


def test_a_partition_expected_but_not_read_yet_holds_every_record_back_until_it_delivers():
    ahead = ReadAhead(capacity=100)
    ahead.ends("events", {0: 5, 1: 5})
    ahead.ends("deliveries", {0: 3})
    ahead.expect("events", {0: 0, 1: 2})
    ahead.expect("deliveries", {0: 3})  # read from its end: holds no one back
    ahead.add([rec(0, 0, 1.0), rec(0, 1, 2.0)], share=50)
    assert ahead.unread and ahead.take(10) == []  # partition 1's records may be older
    ahead.add([rec(1, 2, 1.5)], share=50)
    assert not ahead.unread
    assert positions(ahead.take(10)) == [(0, 0), (1, 2)]  # then partition 1 holds back as usual


def test_partitions_that_deliver_nothing_can_be_given_up():
    ahead = ReadAhead(capacity=100)
    ahead.ends("events", {0: 1, 1: 5})
    ahead.expect("events", {0: 0, 1: 0})
    ahead.add([rec(0, 0, 1.0)], share=50)
    assert ahead.take(10) == []
    ahead.forget_unread()
    assert not ahead.unread
    assert positions(ahead.take(10)) == [(0, 0)]
    ahead.add([rec(1, 3, 2.0)], share=50)  # delivered after all: read as any partition
    assert positions(ahead.take(10)) == [(1, 3)]
