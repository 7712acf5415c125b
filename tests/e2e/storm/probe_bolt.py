"""The Python bolts of tests/e2e/storm/probe.yaml, on threadcast.stats.storm.multilang.

`probe_bolt.py upper`: takes the Kafka spout's (topic, partition, offset, key, value) and emits
(key, VALUE) anchored to it. `probe_bolt.py sink`: acks each word, except that a word starting
with FAIL-ONCE is failed the first time this process sees it (so the spout replays the record)
and, when PROBE_HOLD=1, a word starting with HOLD is neither acked nor failed; records tick
tuples. Both append what they saw, as JSON lines, to $PROBE_OUT/<role>-<task>.jsonl.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import IO, Any

import orjson

from threadcast.stats.storm.multilang import Collector, Setup, StormTuple, run_bolt


class Probe:
    role = ""

    def __init__(self, collector: Collector, setup: Setup) -> None:
        self.collector = collector
        self.task = setup.task_id
        path = Path(os.environ["PROBE_OUT"]) / f"{self.role}-{self.task}.jsonl"
        self.out: IO[bytes] = open(path, "ab", buffering=0)
        self.record(event="start", pid=os.getpid())
        collector.log(f"probe {self.role} task {self.task} started")

    def record(self, **fields: Any) -> None:
        self.out.write(orjson.dumps({"task": self.task, "at": time.time(), **fields}) + b"\n")


class Upper(Probe):
    role = "upper"

    def process(self, tup: StormTuple) -> None:
        _topic, partition, offset, key, value = tup.values
        self.record(event="tuple", key=key, value=value, partition=partition, offset=offset)
        self.collector.emit([key, value.upper()], anchors=[tup])
        self.collector.ack(tup)


class Sink(Probe):
    role = "sink"

    def __init__(self, collector: Collector, setup: Setup) -> None:
        self.failed: set[str] = set()
        self.hold = os.environ.get("PROBE_HOLD") == "1"
        super().__init__(collector, setup)

    def process(self, tup: StormTuple) -> None:
        _key, word = tup.values
        if word.startswith("FAIL-ONCE") and word not in self.failed:
            self.failed.add(word)
            self.record(event="fail", word=word)
            self.collector.fail(tup)
            return
        if self.hold and word.startswith("HOLD"):
            self.record(event="hold", word=word)
            return
        self.record(event="ack", word=word)
        self.collector.ack(tup)

    def tick(self, now: float) -> None:
        self.record(event="tick", now=now)


if __name__ == "__main__":
    run_bolt({"upper": Upper, "sink": Sink}[sys.argv[1]])
