"""A signed-webhook notifier for new posts, built with the threadcast service toolkit.

It reads the event log as consumer group `webhooks` and POSTs every new post, as JSON, to a
configured URL, signed with HMAC-SHA256 so the receiver knows it comes from threadcast.

Run it beside a running threadcast (it uses the same configuration, so the same backends):

    WEBHOOK_URL=https://example.com/hooks/threadcast WEBHOOK_SECRET=change-me \\
        threadcast run examples/webhook_notifier.py

Every request carries:

- `X-Threadcast-Event-Id`: the event id. Delivery is at least once: a receiver that must act
  once keeps the ids it has seen and answers 2xx to a repeat.
- `X-Threadcast-Timestamp`: Unix seconds when the request was signed.
- `X-Threadcast-Signature`: `sha256=` and the hex HMAC-SHA256, keyed with the secret, of
  `<timestamp>.<body>`. Check it with `verify` (or its few lines in your language), and refuse
  old timestamps so that a captured request cannot be replayed later.

A 2xx answer is a delivery. 5xx, 408, 429 and network errors are retried with backoff; other
4xx answers mean the receiver will never take the payload: the event is dead-lettered at
once. See docs/services.md for the walk-through.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
from pydantic_settings import BaseSettings, SettingsConfigDict

from threadcast.events import Event
from threadcast.toolkit import Context, Pipeline, Reject, Service, setting

RETRYABLE_STATUSES = frozenset({408, 429})
"""Client errors worth retrying: timeouts and rate limits."""


class WebhookConfig(BaseSettings):
    """From the environment: WEBHOOK_URL, WEBHOOK_SECRET, WEBHOOK_TIMEOUT."""

    model_config = SettingsConfigDict(env_prefix="WEBHOOK_")

    url: str
    secret: str
    timeout: float = 5.0


class NewPost(msgspec.Struct, frozen=True):
    """The JSON body of a webhook."""

    event_id: str
    type: str
    forum: str
    thread_id: int
    created_at: float
    post: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SignedRequest:
    body: bytes
    headers: dict[str, str]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver runs on each request (constant-time comparison)."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


svc = Service("webhooks", config=WebhookConfig, description="POSTs new posts to a URL, signed with HMAC-SHA256")


@svc.on_startup
async def open_http_client(ctx: Context) -> None:
    ctx.state.http = httpx.AsyncClient(timeout=ctx.config.timeout)


@svc.on_shutdown
async def close_http_client(ctx: Context) -> None:
    await ctx.state.http.aclose()


# The stages: each a small function, testable alone.


def new_posts_only(event: Event) -> Event | None:
    return event if event.type == "post.created" else None


def to_payload(event: Event) -> bytes:
    return msgspec.json.encode(
        NewPost(
            event_id=event.event_id,
            type=event.type,
            forum=event.forum,
            thread_id=event.thread_id,
            created_at=event.ts,
            post=event.payload,
        )
    )


def signed(body: bytes, ctx: Context) -> SignedRequest:
    timestamp = str(int(time.time()))
    return SignedRequest(
        body=body,
        headers={
            "Content-Type": "application/json",
            "X-Threadcast-Event-Id": ctx.event_id or "",
            "X-Threadcast-Timestamp": timestamp,
            "X-Threadcast-Signature": sign(ctx.config.secret, timestamp, body),
        },
    )


async def deliver(request: SignedRequest, ctx: Context) -> None:
    response = await ctx.state.http.post(ctx.config.url, content=request.body, headers=request.headers)
    if 400 <= response.status_code < 500 and response.status_code not in RETRYABLE_STATUSES:
        raise Reject(f"the receiver refused the webhook: HTTP {response.status_code}")
    response.raise_for_status()  # 5xx: retried with backoff
    ctx.logger.info("webhook delivered", status=response.status_code)


notify = svc.subscriber(
    topic=setting("events_topic"),
    group="webhooks",
    model=Event,
    ordered_by="thread_id",  # one thread's posts arrive in order; threads go in parallel
    max_attempts=5,
)(Pipeline(new_posts_only, to_payload, signed, deliver, name="notify"))
