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
