"""The RabbitMQ work queue URL: options threadcast reads, the rest left to aio-pika, and the
queue names and retry buckets derived from them."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from threadcast.bus.factory import BackendURLError
from threadcast.bus.rabbit_queue import (
    DEFAULT_RETRY_DELAYS,
    DEFAULT_TIMEOUT,
    dead_queue_name,
    parse_rabbit_url,
    retry_bucket,
    retry_queue_name,
    user_headers,
)


def test_plain_url_gets_defaults_and_keeps_credentials_host_and_vhost():
    options = parse_rabbit_url("amqp://threadcast:secret@127.0.0.1:5673/threadcast")
    parts = urlsplit(options.amqp_url)
    assert (parts.scheme, parts.username, parts.password, parts.hostname, parts.port, parts.path) == (
        "amqp",
        "threadcast",
        "secret",
        "127.0.0.1",
        5673,
        "/threadcast",
    )
    assert options.quorum is False
    assert options.retry_delays == DEFAULT_RETRY_DELAYS
    assert options.timeout == DEFAULT_TIMEOUT


def test_threadcast_options_are_read_and_removed_from_the_broker_url():
    options = parse_rabbit_url(
        "amqps://u:p@broker:5671/%2F?quorum=1&retry_delays=1,5,25,125&timeout=2.5&heartbeat=10"
    )
    assert options.quorum is True
    assert options.retry_delays == (1.0, 5.0, 25.0, 125.0)
    assert options.timeout == 2.5
    parts = urlsplit(options.amqp_url)
    assert parts.scheme == "amqps"
    assert parts.path == "/%2F"
    assert parse_qs(parts.query) == {"heartbeat": ["10"], "reconnect_interval": ["1"]}


def test_reconnect_interval_from_the_url_wins_over_the_default():
    options = parse_rabbit_url("amqp://u:p@127.0.0.1/v?reconnect_interval=7")
    assert parse_qs(urlsplit(options.amqp_url).query) == {"reconnect_interval": ["7"]}


@pytest.mark.parametrize(("flag", "expected"), [("0", False), ("false", False), ("1", True), ("true", True)])
def test_quorum_flag_spellings(flag, expected):
    assert parse_rabbit_url(f"amqp://u:p@127.0.0.1/v?quorum={flag}").quorum is expected


@pytest.mark.parametrize(
    "url",
    [
        "kafka://127.0.0.1:9092",
        "amqp:///vhost",
        "amqp://u:p@127.0.0.1/v?quorum=maybe",
        "amqp://u:p@127.0.0.1/v?retry_delays=5,1",
        "amqp://u:p@127.0.0.1/v?retry_delays=1,1",
        "amqp://u:p@127.0.0.1/v?retry_delays=1,,5",
        "amqp://u:p@127.0.0.1/v?retry_delays=0,1",
        "amqp://u:p@127.0.0.1/v?retry_delays=0.0001,0.0002",
        "amqp://u:p@127.0.0.1/v?timeout=-1",
        "amqp://u:p@127.0.0.1/v?timeout=soon",
    ],
)
def test_bad_urls_are_refused(url):
    with pytest.raises(BackendURLError):
        parse_rabbit_url(url)


def test_retry_bucket_is_the_smallest_delay_at_least_as_long_as_asked():
    delays = (1.0, 5.0, 25.0)
    assert retry_bucket(delays, 0) is None
    assert retry_bucket(delays, 0.2) == 1.0
    assert retry_bucket(delays, 1.0) == 1.0
    assert retry_bucket(delays, 1.01) == 5.0
    assert retry_bucket(delays, 25.0) == 25.0
    assert retry_bucket(delays, 3600) == 25.0


def test_queue_names():
    assert dead_queue_name("realtime.format") == "realtime.format.dead"
    assert retry_queue_name("realtime.format", 0.1) == "realtime.format.retry.100"
    assert retry_queue_name("realtime.format", 125) == "realtime.format.retry.125000"


def test_user_headers_hide_internal_and_broker_headers():
    headers = {
        "trace": "abc",
        "x-custom": "kept",
        "bytes": b"decoded",
        "x-threadcast-attempt": 3,
        "x-death": [{"count": 1}],
        "x-delivery-count": 2,
        "x-first-death-queue": "q.retry.100",
        "x-last-death-reason": "expired",
    }
    assert user_headers(headers) == {"trace": "abc", "x-custom": "kept", "bytes": "decoded"}
    assert user_headers(None) == {}
