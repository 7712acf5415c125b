"""What nginx + Nchan asks the API before it attaches a subscriber (`threadcast edge config`).

- `GET /api/v1/edge/authorize` (Nchan's `nchan_authorize_request`, for subscriptions naming a
  private channel): 204 when every private channel is granted by the signed token (the `auth`
  query argument of the subscriber's URI, or an `Authorization: Bearer` header), else 403; 429
  (with `Retry-After`) once the subscriber's client went over the live
  `rate_limits.subscribes_per_minute` (the client is read from the `X-Forwarded-For` nginx adds).
- `GET /api/v1/edge/resume` (nginx's `auth_request`, for subscriptions that ask to resume): the
  resume guard. Nchan 1.3.6 can abort a worker when a subscriber resumes on a channel whose
  buffer is empty (after a restart, or once its messages expired), so the API lets a resume
  through only when the buffers it reaches on the calling edge hold messages (`resumed_channels`):
  204 with `X-Threadcast-Resume-Id` (the id Nchan resumes from). Otherwise the subscriber starts
  fresh (204 without the header) and the client refetches what it missed from the API, or, for
  a long-poll resume by `If-Modified-Since` / `If-None-Match` (headers nginx cannot drop), 401,
  which nginx answers as 409.

nginx sends the channels as it parsed them (`X-Threadcast-Channels`, the decoded path, the same
string Nchan splits) and the subscriber's raw URI (`X-Original-URI`, for its query arguments).
Both endpoints are reachable only through nginx's internal subrequests: the generated
configuration answers 404 to `/api/v1/edge/` from outside.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, quote, urlsplit

import httpx
from fastapi import APIRouter, Request, Response

from threadcast.api.errors import error_response
from threadcast.api.rate_limits import RateLimits
from threadcast.config import Settings
from threadcast.edge.auth import private_channels, verify_subscription
from threadcast.edge.http_publisher import edge_base_url
from threadcast.edge.nginx_config import (
    CHANNELS_HEADER,
    EDGE_HEADER,
    GUARD_REFUSAL_STATUS,
    RESUME_ID_HEADER,
    nchan_edges,
)

RESUME_ID = re.compile(r"[\x21-\x7e]{1,128}")
"""A resume id handed back to Nchan: printable ASCII, no spaces, within Nchan's 128-byte buffer."""


class ResumeGuard:
    """Answers whether channels' buffers on an edge all hold messages (Nchan's channel info:
    `GET {edge}/pub/{channel}`). Only edges of the configuration are asked; anything unknown,
    unreachable or unexpected counts as empty, which is always safe."""

    def __init__(self, edges: list[str], timeout: float = 2.0) -> None:
        self.edges = set(edges)
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.timeout)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def buffers_filled(self, edge: str, channels: list[str]) -> bool:
        base = edge_base_url(edge)
        if base not in self.edges or not channels:
            return False
        counts = await asyncio.gather(*(self._messages(base, channel) for channel in channels), return_exceptions=True)
        return all(isinstance(count, int) and count > 0 for count in counts)

    async def _messages(self, base: str, channel: str) -> int:
        if self._client is None:
            raise RuntimeError("ResumeGuard is not started")
        response = await self._client.get(f"{base}/pub/{quote(channel, safe=':')}", headers={"Accept": "application/json"})
        if response.status_code == 404:
            return 0
        response.raise_for_status()
        return int(response.json()["messages"])


def resumed_channels(channels: list[str], resume_ids: list[str]) -> list[str]:
    """The channels a resume reaches back into: those whose buffers must hold messages.

    Nchan writes a multi-channel id's tags in channel order, `-` for a channel the subscriber has
    had no message from, and does not resume that channel (a quiet `user:` channel beside a busy
    thread is the common case). An id with any other shape (an `If-Modified-Since` without
    `If-None-Match` has no tags at all) counts as reaching into every channel.
    """
    reached: set[str] = set()
    for resume_id in resume_ids:
        tags = resume_id.partition(":")[2] if ":" in resume_id else resume_id
        parts = tags.split(",")
        if len(parts) != len(channels) or all(tag == "-" for tag in parts):
            return channels
        reached.update(channel for channel, tag in zip(channels, parts) if tag != "-")
    return [channel for channel in channels if channel in reached]


def _channels(request: Request) -> list[str]:
    return [channel for channel in request.headers.get(CHANNELS_HEADER, "").split(",") if channel]


def _original_query(request: Request) -> dict[str, list[str]]:
    return parse_qs(urlsplit(request.headers.get("x-original-uri", "")).query)


def build_edge_auth_router(settings: Settings, limits: RateLimits) -> APIRouter:
    guard = ResumeGuard(nchan_edges(settings.edge_url))

    @asynccontextmanager
    async def lifespan(_: object) -> AsyncIterator[None]:
        await guard.start()
        yield
        await guard.close()

    router = APIRouter(prefix="/api/v1/edge", include_in_schema=False, lifespan=lifespan)

    @router.get("/authorize")
    async def authorize(request: Request) -> Response:
        channels = _channels(request)
        if not channels:
            return error_response(403, "forbidden", "no channels to authorize")
        limits.check("subscribes_per_minute", request.client.host if request.client else None, request.headers)
        private = private_channels(channels)
        if private:
            token = _original_query(request).get("auth", [""])[0]
            token = token or request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not token or not verify_subscription(settings.secret, token, private, time.time()):
                return error_response(403, "forbidden", "the auth token is missing, invalid or expired for these channels")
        return Response(status_code=204)

    @router.get("/resume")
    async def resume(request: Request) -> Response:
        wanted = request.headers.get("last-event-id") or _original_query(request).get("last_event_id", [""])[0]
        conditional = "if-modified-since" in request.headers or "if-none-match" in request.headers
        if not (wanted or conditional):
            return Response(status_code=204)
        resume_ids = [wanted] if wanted else []
        if conditional:
            resume_ids.append(request.headers.get("if-none-match", ""))
        channels = resumed_channels(_channels(request), resume_ids)
        if await guard.buffers_filled(request.headers.get(EDGE_HEADER, ""), channels):
            headers = {RESUME_ID_HEADER: wanted} if RESUME_ID.fullmatch(wanted) else {}
            return Response(status_code=204, headers=headers)
        if conditional:
            return Response(status_code=GUARD_REFUSAL_STATUS)
        return Response(status_code=204)

    return router
