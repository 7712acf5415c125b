"""Why a scenario cannot run is said, not hidden; what the bench reads from /proc."""

from __future__ import annotations

import os
import subprocess
import sys

from threadcast.bench.config import BenchConfig
from threadcast.bench.scenarios import SCENARIOS, broker_address, raw_nchan_config, threadcast_env
from threadcast.bench.servers import cpu_seconds, free_port, log_tail, rss_kb, with_children


def test_brokers_without_urls_or_servers_are_unavailable_with_the_reason():
    brokers = SCENARIOS["brokers"]
    assert "give --kafka-url" in brokers.unavailable(BenchConfig())
    closed = free_port()
    reason = brokers.unavailable(
        BenchConfig(kafka_url=f"kafka://127.0.0.1:{closed}", amqp_url="amqp://u:p@127.0.0.1:1/v")
    )
    assert reason == f"Kafka at 127.0.0.1:{closed} does not answer (start it: dev/services up kafka)"


def test_broker_addresses():
    assert broker_address("kafka://127.0.0.1:19092,127.0.0.1:19093") == ("127.0.0.1", 19092)
    assert broker_address("kafka://broker") == ("broker", 9092)
    assert broker_address("amqp://user:secret@127.0.0.1:5673/vhost") == ("127.0.0.1", 5673)
    assert broker_address("amqp:///vhost") is None


def test_nchan_scenarios_without_nginx_are_unavailable_with_the_reason(tmp_path):
    missing = BenchConfig(nginx=str(tmp_path / "no-nginx"))
    for name in ("nchan", "raw-nchan"):
        assert (
            SCENARIOS[name].unavailable(missing)
            == f"nginx not found at {tmp_path / 'no-nginx'} (dev/services up nginx installs it)"
        )
    fake = tmp_path / "nginx"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    reason = SCENARIOS["raw-nchan"].unavailable(BenchConfig(nginx=str(fake), nchan_module=str(tmp_path / "nchan.so")))
    assert reason is not None and "nchan.so is missing" in reason
    assert SCENARIOS["embedded"].unavailable(BenchConfig()) is None


def test_threadcast_runs_without_the_callers_threadcast_variables(monkeypatch):
    monkeypatch.setenv("THREADCAST_LOG_URL", "kafka://elsewhere:9092")
    monkeypatch.setenv("THREADCAST_POLL_INTERVAL", "5")
    env = threadcast_env({"THREADCAST_EDGE_URL": "nchan+http://127.0.0.1:1"})
    assert [name for name in env if name.startswith("THREADCAST_")] == ["THREADCAST_EDGE_URL"]
    assert env["PATH"] == os.environ["PATH"]


def test_raw_nchan_configuration_has_publisher_and_subscriber_locations(tmp_path):
    text = raw_nchan_config("/modules/ngx_nchan_module.so", tmp_path, 18999)
    assert 'load_module "/modules/ngx_nchan_module.so";' in text
    assert "listen 127.0.0.1:18999;" in text
    assert "nchan_publisher http;" in text and "nchan_subscriber eventsource websocket longpoll;" in text
    assert "nchan_message_buffer_length 200;" in text
    assert "auth_request" not in text


def test_memory_and_cpu_of_a_process_and_its_children():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        pids = with_children(os.getpid())
        assert pids[0] == os.getpid() and child.pid in pids
        assert rss_kb([os.getpid()]) > 1000
        assert rss_kb(pids) > rss_kb([os.getpid()])
        assert cpu_seconds([os.getpid()]) > 0
        assert rss_kb([2**22 + 1]) == 0
    finally:
        child.communicate(b"")


def test_a_server_log_tail_leads_with_the_cause(tmp_path):
    log = tmp_path / "up.log"
    log.write_text(
        "Traceback (most recent call last):\n  File x\n"
        "aiormq.exceptions.AMQPConnectionError: [Errno 111] Connection refused\n\n"
        "ERROR:    Application startup failed. Exiting.\n"
    )
    assert log_tail(log).splitlines()[0] == "aiormq.exceptions.AMQPConnectionError: [Errno 111] Connection refused"
    assert log_tail(tmp_path / "missing.log") == ""
