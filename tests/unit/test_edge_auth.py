"""Who may use the embedded edge: signed tokens for private channels, loopback-only publishing,
and the request checks in front of the hub (through the ASGI app, no network)."""

from __future__ import annotations

import time

import httpx
import pytest

from threadcast.config import Settings
from threadcast.edge.app import create_edge_app, is_loopback
from threadcast.edge.auth import is_private, private_channels, sign_subscription, verify_subscription
from threadcast.edge.hub import Hub

SECRET = "test-secret"
NOW = 1_800_000_000


# -- tokens -------------------------------------------------------------------------------------


def test_valid_token_verifies_for_its_channels_in_any_order():
    token = sign_subscription(SECRET, ["user:42", "user:7"], NOW + 60)
    assert verify_subscription(SECRET, token, ["user:7", "user:42"], NOW)
    assert token.replace("-", "").replace("_", "").replace(".", "").isalnum()  # url-safe as is


def test_tampered_tokens_fail():
    token = sign_subscription(SECRET, ["user:42"], NOW + 60)
    expiry, signature = token.split(".")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    assert not verify_subscription(SECRET, f"{expiry}.{flipped}", ["user:42"], NOW)
    assert not verify_subscription(SECRET, f"{int(expiry) + 3600}.{signature}", ["user:42"], NOW)
    assert not verify_subscription("another-secret", token, ["user:42"], NOW)


def test_expired_token_fails():
    token = sign_subscription(SECRET, ["user:42"], NOW)
    assert verify_subscription(SECRET, token, ["user:42"], NOW - 1)
    assert not verify_subscription(SECRET, token, ["user:42"], NOW)
    assert not verify_subscription(SECRET, token, ["user:42"], NOW + 1)


def test_token_for_other_channels_fails():
    token = sign_subscription(SECRET, ["user:42"], NOW + 60)
    assert not verify_subscription(SECRET, token, ["user:43"], NOW)
    assert not verify_subscription(SECRET, token, ["user:42", "user:43"], NOW)


@pytest.mark.parametrize("token", ["", ".", "abc", "123", "123.", ".sig", "\u00b2\u00b3.sig", "9" * 5000 + ".x", "é.é"])
def test_malformed_tokens_fail_without_raising(token: str):
    assert not verify_subscription(SECRET, token, ["user:42"], NOW)


def test_private_channels_are_user_channels():
    assert is_private("user:42") and not is_private("thread:1") and not is_private("users:1")
    assert private_channels(["thread:1", "user:42", "forum:demo"]) == ["user:42"]


# -- loopback-only publishing -------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_loopback_addresses_may_publish(host: str):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["10.1.2.3", "192.168.0.1", "::ffff:10.0.0.1", "2001:db8::1", "localhost", "", None])
def test_other_addresses_may_not_publish(host: str | None):
    assert not is_loopback(host)


def edge_client(hub: Hub, client_host: str, **settings: object) -> httpx.AsyncClient:
    app = create_edge_app(hub, Settings(secret=SECRET, **settings))  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app, client=(client_host, 1234))
    return httpx.AsyncClient(transport=transport, base_url="http://edge.test")


async def test_publish_from_a_remote_address_is_refused():
    hub = Hub()
    async with edge_client(hub, "10.1.2.3") as client:
        refused = await client.post("/pub/thread:1", content=b"x")
        info = await client.get("/pub/thread:1")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert info.status_code == 403
    assert hub.stats().published == 0


async def test_publish_from_loopback_is_accepted_and_idempotent():
    hub = Hub()
    async with edge_client(hub, "127.0.0.1") as client:
        assert (await client.get("/pub/thread:1")).status_code == 404
        first = await client.post("/pub/thread:1", content=b'{"a": 1}', headers={"X-Message-Id": "event-1"})
        again = await client.post("/pub/thread:1", content=b'{"a": 1}', headers={"X-Message-Id": "event-1"})
        generated = await client.post("/pub/thread:1", content=b'{"a": 2}')
        info = await client.get("/pub/thread:1")
    assert first.status_code == 202
    body = first.json()
    assert body["channel"] == "thread:1" and body["subscribers"] == 0 and body["id"]
    assert again.status_code == 202 and again.json()["id"] == body["id"]
    assert generated.json()["id"] != body["id"]
    assert info.json()["messages"] == 2 and info.json()["last_message_id"] == generated.json()["id"]


async def test_publish_over_the_size_limit_is_refused():
    hub = Hub()
    async with edge_client(hub, "::1", max_message_bytes=10) as client:
        assert (await client.post("/pub/c", content=b"x" * 10)).status_code == 202
        too_large = await client.post("/pub/c", content=b"x" * 11)

        async def chunks():  # no Content-Length: the limit applies while reading
            yield b"x" * 6
            yield b"x" * 6

        streamed = await client.post("/pub/c", content=chunks())
    assert too_large.status_code == 413 and too_large.json()["error"]["code"] == "too_large"
    assert streamed.status_code == 413
    assert hub.stats().published == 1


# -- subscriber request checks ------------------------------------------------------------------


@pytest.mark.parametrize(
    "channels",
    ["thread:1,", "thread 1", "x" * 129, ",".join(f"thread:{n}" for n in range(17)), "thread:1;drop"],
)
async def test_invalid_channel_lists_are_refused(channels: str):
    async with edge_client(Hub(), "203.0.113.9") as client:
        answer = await client.get(f"/sub/{channels}")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_channel"
    assert answer.headers["access-control-allow-origin"] == "*"


async def test_private_channel_needs_a_valid_unexpired_token():
    hub = Hub()
    now = int(time.time())
    cases = {
        "none": {},
        "wrong channel": {"auth": sign_subscription(SECRET, ["user:43"], now + 60)},
        "expired": {"auth": sign_subscription(SECRET, ["user:42"], now - 1)},
        "wrong secret": {"auth": sign_subscription("other", ["user:42"], now + 60)},
    }
    async with edge_client(hub, "203.0.113.9") as client:
        for case, params in cases.items():
            answer = await client.get("/sub/thread:1,user:42", params=params)
            assert answer.status_code == 403, case
            assert answer.json()["error"]["code"] == "forbidden"
            assert answer.headers["access-control-allow-origin"] == "*"
        bearer = sign_subscription(SECRET, ["user:42"], now - 1)
        answer = await client.get("/sub/user:42", headers={"Authorization": f"Bearer {bearer}"})
        assert answer.status_code == 403
    assert hub.stats().subscribers == 0


async def test_cors_preflight_for_long_poll_validators():
    async with edge_client(Hub(), "203.0.113.9") as client:
        answer = await client.options("/sub/thread:1")
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == "*"
    assert "If-None-Match" in answer.headers["access-control-allow-headers"]
