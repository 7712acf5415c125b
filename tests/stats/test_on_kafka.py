"""The stats topology on the embedded runner over Kafka, read to the end (a bounded run, as a
rebuild and the Storm end-to-end tests' reference run do it): every record is counted once and
committed. On Kafka the spout's two consumers (events, deliveries) rebalance their group as they
join, which hands records in flight out again; emitted twice, the second copy's ack failed with
a KeyError, and the trees of the window behind it stayed pending.

Selected when THREADCAST_TEST_BACKENDS names kafka (THREADCAST_TEST_KAFKA_URL: `dev/services env`).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.conftest import selected_real_backends
from tests.stats.streams import DELIVERIES, EVENTS, brute_force, dense_stream, results
from tests.stats.test_windows import check
from threadcast.bus.kafka_log import KafkaLog
from threadcast.bus.log import Message
from threadcast.config import Settings
from threadcast.stats.definition import StatsConfig, log_sources, stats_topology
from threadcast.stats.runner import EmbeddedRunner
from threadcast.stats.spout import LogSpoutSpec
from threadcast.store.objects import FolderStore

PARTITIONS, WINDOW, LATENESS = 2, 60, 10.0

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif("kafka" not in selected_real_backends(), reason="kafka not selected (THREADCAST_TEST_BACKENDS)"),
]


async def test_a_bounded_run_over_kafka_counts_every_record_once_and_commits_them_all(tmp_path: Path) -> None:
    stream = dense_stream(minutes=30)
    stream.end(PARTITIONS)
    uid = uuid.uuid4().hex[:8]
    names = {EVENTS: f"events-{uid}", DELIVERIES: f"deliveries-{uid}"}
    event_log = KafkaLog(os.environ["THREADCAST_TEST_KAFKA_URL"])
    await event_log.start()
    try:
        for topic, name in names.items():
            await event_log.create_topic(name, PARTITIONS)
            await event_log.append(name, [Message(r.value, key=r.key) for r in stream.records if r.topic == topic])
        settings = Settings(
            data_dir=tmp_path, log_url=os.environ["THREADCAST_TEST_KAFKA_URL"], log_partitions=PARTITIONS,
            events_topic=names[EVENTS], deliveries_topic=names[DELIVERIES], store_url="",
        )  # fmt: skip
        group = f"bounded-{uid}"
        spout = LogSpoutSpec(tuple(names.values()), group, stop_at_end=True)
        config = StatsConfig(window=WINDOW, lateness=LATENESS, idle_timeout=600, tick=0.05)
        sources = await log_sources(event_log, tuple(names.values()))
        topology = stats_topology(config, settings, sources, spout=spout, sink={"publish": False})
        store = FolderStore(settings.object_store_root())
        runner = EmbeddedRunner(topology, event_log, resources={"store": store})
        await runner.run_bounded()

        assert runner.pending() == 0
        for name in names.values():
            assert await event_log.committed(name, group) == await event_log.end_offsets(name)
    finally:
        await event_log.close()
    metrics = ("forum", "threads", "top_threads")
    found = {metric: [row for row in results(store, metric) if row["forum"] != "end"] for metric in metrics}
    check(brute_force(stream.records, PARTITIONS, WINDOW, LATENESS), found)
