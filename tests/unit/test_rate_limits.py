"""Per-client rate limits from the live configuration: the limiter, who the client is, and the
limits applied by the API (posts), the embedded edge (subscriptions) and the Nchan authorize
request, changed at run time."""

from __future__ import annotations

import httpx
import pytest
from starlette.datastructures import Headers

from tests.toolkit.helpers import wait_until
from threadcast.api.rate_limits import RateLimiter, RateLimits, parse_networks
from threadcast.app import create_app
from threadcast.config import Settings
from threadcast.coord import LiveConfig
from threadcast.coord.live_config import with_value
from threadcast.edge.app import create_edge_app
from threadcast.edge.hub import Hub
from threadcast.system import System

CLIENT = "203.0.113.5"
OTHER_CLIENT = "198.51.100.7"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_n_per_minute_admits_a_burst_of_n_then_one_every_60_over_n_seconds():
    clock = Clock()
    limiter = RateLimiter(clock)
    assert [limiter.acquire("a", 3) for _ in range(3)] == [0, 0, 0]
    assert limiter.acquire("a", 3) == pytest.approx(20.0)
    assert limiter.acquire("b", 3) == 0, "another key has a bucket of its own"
    clock.now += 19.9
    assert limiter.acquire("a", 3) == pytest.approx(0.1)
    clock.now += 0.1
    assert limiter.acquire("a", 3) == 0
    assert limiter.acquire("a", 3) == pytest.approx(20.0)


def test_zero_is_unlimited_and_a_lower_limit_applies_at_once():
    clock = Clock()
    limiter = RateLimiter(clock)
    assert all(limiter.acquire("a", 0) == 0 for _ in range(1000))
    assert [limiter.acquire("a", 60) for _ in range(3)] == [0, 0, 0]
    # The three count at the cost they had (a second each): one more fits under 2 per minute.
    assert limiter.acquire("a", 2) == 0
    assert limiter.acquire("a", 2) == pytest.approx(3.0)


def test_clients_whose_bucket_is_full_again_are_forgotten():
    clock = Clock()
    limiter = RateLimiter(clock)
    for n in range(100):
        limiter.acquire(n, 10)
    assert len(limiter) == 100
    clock.now += 61
    limiter.acquire("late", 10)
    assert len(limiter) == 1


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        (CLIENT, "", CLIENT),
        (CLIENT, "10.0.0.1", CLIENT),  # an untrusted peer's X-Forwarded-For is ignored
        ("127.0.0.1", CLIENT, CLIENT),
        ("127.0.0.1", f"6.6.6.6, {CLIENT}", CLIENT),  # the browser's own (leftmost) hop is not believed
        ("127.0.0.1", f"{CLIENT}, 10.1.2.3", CLIENT),  # 10.0.0.0/8 is a trusted proxy here
        ("::ffff:127.0.0.1", CLIENT, CLIENT),
        ("127.0.0.1", "", None),  # a tool on the host itself
        ("127.0.0.1", "127.0.0.1, 10.0.0.9", None),
        ("::1", "unknown", "unknown"),
        (None, CLIENT, None),
    ],
)
def test_the_client_is_the_first_untrusted_hop_from_the_nearest(peer, forwarded, client):
    limits = RateLimits(LiveConfig, parse_networks("10.0.0.0/8"))
    headers = Headers({"x-forwarded-for": forwarded} if forwarded else {})
    assert limits.client(peer, headers) == client


def test_trusted_proxies_must_be_addresses_or_networks():
    assert [str(n) for n in parse_networks(" 10.0.0.0/8,192.0.2.7 ,")] == ["10.0.0.0/8", "192.0.2.7/32"]
    with pytest.raises(ValueError, match="trusted_proxies"):
        parse_networks("10.0.0.0/8, proxy.internal")


# -- applied by the API and its embedded edge -----------------------------------------------


@pytest.fixture
async def system(data_dir):
    system = System(Settings(data_dir=data_dir, seed_demo=False), ())
    await system.start()
    yield system
    await system.close()


@pytest.fixture
async def client_at(system):
    app = create_app(system)
    clients: list[httpx.AsyncClient] = []

    def make(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        clients.append(httpx.AsyncClient(transport=transport, base_url="http://testserver"))
        return clients[-1]

    yield make
    for client in clients:
        await client.aclose()


async def set_live(system: System, path: str, value: object) -> None:
    await system.backends.coord.set_config(path, value)
    expected = with_value(system.runner.live.current, path, value)
    await wait_until(lambda: system.runner.live.current == expected, f"{path} applied")


async def new_thread(client: httpx.AsyncClient) -> int:
    await client.post("/api/v1/forums", json={"name": "news", "title": "News"})
    answer = await client.post("/api/v1/threads", json={"forum": "news", "identifier": "a", "title": "A"})
    return answer.json()["id"]


async def post(client: httpx.AsyncClient, thread_id: int) -> httpx.Response:
    return await client.post(f"/api/v1/threads/{thread_id}/posts", json={"author_name": "a", "message": "hi"})


async def test_posts_over_the_live_limit_get_429_with_retry_after_per_client(system, client_at):
    await set_live(system, "rate_limits.posts_per_minute", 2)
    client, other, local = client_at(CLIENT), client_at(OTHER_CLIENT), client_at("127.0.0.1")
    thread_id = await new_thread(client)

    assert [(await post(client, thread_id)).status_code for _ in range(2)] == [201, 201]
    refused = await post(client, thread_id)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 30
    assert (await post(other, thread_id)).status_code == 201, "another client has its own limit"
    assert [(await post(local, thread_id)).status_code for _ in range(3)] == [201] * 3, "loopback is not limited"

    await set_live(system, "rate_limits.posts_per_minute", 0)
    assert (await post(client, thread_id)).status_code == 201, "0 is unlimited, at once"


async def test_a_client_behind_the_proxy_is_limited_by_its_forwarded_address(system, client_at):
    await set_live(system, "rate_limits.posts_per_minute", 1)
    proxy = client_at("127.0.0.1")
    thread_id = await new_thread(proxy)
    forwarded = {"X-Forwarded-For": CLIENT}
    reply = {"author_name": "a", "message": "hi"}
    assert (await proxy.post(f"/api/v1/threads/{thread_id}/posts", json=reply, headers=forwarded)).status_code == 201
    again = await proxy.post(f"/api/v1/threads/{thread_id}/posts", json=reply, headers=forwarded)
    assert again.status_code == 429


async def test_subscriptions_over_the_live_limit_get_429_on_the_embedded_edge(system, client_at):
    await set_live(system, "rate_limits.subscribes_per_minute", 1)
    client = client_at(CLIENT)
    assert (await client.get("/sub/bad channel!")).status_code == 400  # counted all the same
    refused = await client.get("/sub/thread:1")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused.headers["retry-after"] == "60"
    assert refused.headers["access-control-allow-origin"] == "*"


async def test_the_nchan_authorize_request_is_limited_by_the_subscriber_address(system, client_at):
    await set_live(system, "rate_limits.subscribes_per_minute", 1)
    nginx = client_at("127.0.0.1")
    headers = {"X-Threadcast-Channels": "thread:1", "X-Forwarded-For": CLIENT}
    assert (await nginx.get("/api/v1/edge/authorize", headers=headers)).status_code == 204
    refused = await nginx.get("/api/v1/edge/authorize", headers=headers)
    assert refused.status_code == 429
    assert "retry-after" in refused.headers
    other = {**headers, "X-Forwarded-For": OTHER_CLIENT}
    assert (await nginx.get("/api/v1/edge/authorize", headers=other)).status_code == 204


async def test_a_standalone_edge_takes_its_limits_and_flags_as_given():
    config = with_value(LiveConfig(), "rate_limits.subscribes_per_minute", 2)
    hub = Hub()
    limits = RateLimits(lambda: config)
    app = create_edge_app(hub, Settings(), longpoll_timeout=0.01, live=lambda: config, limits=limits)
    transport = httpx.ASGITransport(app=app, client=(CLIENT, 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
        assert (await client.get("/sub/thread:1")).status_code == 304
        config = with_value(config, "features.long_poll", False)
        disabled = await client.get("/sub/thread:1")
        assert (disabled.status_code, disabled.json()["error"]["code"]) == (403, "feature_disabled")
        assert (await client.get("/sub/thread:1")).status_code == 429
