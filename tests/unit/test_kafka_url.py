"""The Kafka event log URL: broker list for librdkafka, and the topic options threadcast reads."""

from __future__ import annotations

import pytest

from threadcast.bus.factory import BackendURLError
from threadcast.bus.kafka_log import KafkaLog, parse_kafka_url


def test_one_broker_with_defaults():
    options = parse_kafka_url("kafka://127.0.0.1:19092")
    assert options.bootstrap_servers == "127.0.0.1:19092"
    assert options.replication_factor == 1
    assert options.min_insync_replicas is None
    assert options.client_id == "threadcast"


def test_several_brokers_default_port_and_ipv6():
    options = parse_kafka_url("kafka://kafka-1:9093,kafka-2,[::1]:9094")
    assert options.bootstrap_servers == "kafka-1:9093,kafka-2:9092,[::1]:9094"


def test_query_arguments_win_over_keyword_defaults():
    options = parse_kafka_url(
        "kafka://b1:9092,b2:9092,b3:9092?replication_factor=3&min_insync_replicas=2&client_id=relay",
        replication_factor=1,
        client_id="threadcast",
    )
    assert (options.replication_factor, options.min_insync_replicas, options.client_id) == (3, 2, "relay")


def test_keyword_defaults_apply_when_the_url_is_silent():
    options = parse_kafka_url("kafka://127.0.0.1:9092/", replication_factor=2, client_id="stats")
    assert (options.replication_factor, options.client_id) == (2, "stats")


def test_the_log_takes_its_options_from_the_url():
    event_log = KafkaLog("kafka://127.0.0.1:19092?replication_factor=2", client_id="dispatcher")
    assert event_log.options == parse_kafka_url(
        "kafka://127.0.0.1:19092?replication_factor=2", client_id="dispatcher"
    )


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///log.db",
        "kafka://",
        "kafka://127.0.0.1:19092/topic",
        "kafka://127.0.0.1:0",
        "kafka://127.0.0.1:70000",
        "kafka://127.0.0.1:port",
        "kafka://127.0.0.1:9092,",
        "kafka://[::1",
        "kafka://127.0.0.1:9092?replication_factor=0",
        "kafka://127.0.0.1:9092?replication_factor=two",
        "kafka://127.0.0.1:9092?min_insync_replicas=-1",
        "kafka://127.0.0.1:9092?replication_factor=2&min_insync_replicas=3",
        "kafka://127.0.0.1:9092?client_id=",
        "kafka://127.0.0.1:9092?acks=1",
    ],
)
def test_bad_urls_are_refused(url):
    with pytest.raises(BackendURLError):
        parse_kafka_url(url)
