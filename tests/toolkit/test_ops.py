"""/healthz, /readyz and /metrics of a runner, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port
from tests.toolkit.helpers import Gate, Job, wait_until
from threadcast.edge.http_publisher import HttpEdgePublisher
from threadcast.toolkit import Backends, MemoryInbox, Reject, Runner, Service
from threadcast.toolkit.codec import encode
from threadcast.toolkit.memory import MemoryEdge, MemoryQueue


def metrics_service(gate: Gate) -> Service:
    svc = Service("shop")

    @svc.consumer(queue="orders", model=Job)
    async def take(job: Job) -> None:
        if job.id == "bad":
            raise Reject("no such product")

    @svc.consumer(queue="slow", model=Job, prefetch=1)
    async def crawl(job: Job) -> None:
        await gate.pass_through()

    return svc


async def test_metrics_show_the_counts():
    gate, queue, registry = Gate(), MemoryQueue(), CollectorRegistry()
    orders = {"service": "shop", "handler": "take"}
    slow = {"service": "shop", "handler": "crawl"}
    runner = Runner(
        [metrics_service(gate)], Backends(queue=queue, inbox=MemoryInbox()), ops_port=0, registry=registry
    )
    async with runner, httpx.AsyncClient(base_url=f"http://127.0.0.1:{runner.ops_port}") as http:
        for name in ("a", "b", "bad"):
            await queue.publish("orders", encode(Job(name)), message_id=name)
        for name in ("s1", "s2", "s3"):
            await queue.publish("slow", encode(Job(name)), message_id=name)
        await wait_until(
            lambda: registry.get_sample_value("threadcast_dead_letters_total", {**orders, "reason": "rejected"}) == 1
            and gate.entered == 1,
            "the orders and the first slow job",
        )

        response = await http.get("/metrics")
        assert response.status_code == 200
        got = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }

        def value(name: str, **labels: str) -> float:
            return got[(name, frozenset(labels.items()))]

        assert value("threadcast_messages_in_total", **orders) == 3
        assert value("threadcast_messages_handled_total", **orders, outcome="ok") == 2
        assert value("threadcast_dead_letters_total", **orders, reason="rejected") == 1
        assert value("threadcast_handler_duration_seconds_count", **orders) == 3
        assert value("threadcast_consumer_lag", **slow) == 2  # waiting behind the gated one
        assert value("threadcast_in_flight", **slow) == 1
        gate.open()


async def test_health_and_readiness():
    unreachable_edge = HttpEdgePublisher([f"http://127.0.0.1:{free_port()}"])
    runner = Runner(
        [Service("idle")],
        Backends(queue=MemoryQueue(), edge=unreachable_edge, inbox=MemoryInbox()),
        ops_port=0,
        registry=CollectorRegistry(),
    )
    async with runner, httpx.AsyncClient(base_url=f"http://127.0.0.1:{runner.ops_port}") as http:
        health = await http.get("/healthz")
        assert (health.status_code, health.json()) == (200, {"healthy": True, "checks": {"workers": "ok"}})

        ready = await http.get("/readyz")
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["queue"] == checks["inbox"] == "ok"
        assert checks["edge"].startswith("EdgeError: edge http://127.0.0.1")

    runner = Runner([Service("idle")], Backends(edge=MemoryEdge()), ops_port=0, registry=CollectorRegistry())
    async with runner, httpx.AsyncClient(base_url=f"http://127.0.0.1:{runner.ops_port}") as http:
        ready = await http.get("/readyz")
        assert (ready.status_code, ready.json()) == (200, {"ready": True, "checks": {"edge": "ok"}})
