"""The embedded edge over HTTP, speaking Nchan's subscriber protocol so one client works
against both edges.

- `GET /sub/{channels}`: EventSource (`Accept: text/event-stream`), WebSocket (upgrade; with
  the `ws+meta.nchan` subprotocol each frame carries its id) or long-poll (any other GET).
  Channels are comma-separated; private ones (`user:{id}`) need a token from `auth.py` in the
  `auth` query argument or an `Authorization: Bearer` header. Over the live
  `rate_limits.subscribes_per_minute` a client gets 429 with `Retry-After`; with the live flag
  `features.long_poll` off, long-poll gets 403 `feature_disabled`.
- `POST /pub/{channel}`: publish the raw body (loopback clients only); `GET /pub/{channel}`:
  the channel's figures.

`edge_routes` mounts into the API's app; `create_edge_app` is a standalone edge.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from threadcast.config import Settings
from threadcast.coord.features import enabled
from threadcast.coord.live_config import LiveConfig
from threadcast.edge.auth import private_channels, verify_subscription
from threadcast.edge.hub import Hub, Message, Subscription
from threadcast.edge.publisher import EdgeError

if TYPE_CHECKING:
    from threadcast.api.rate_limits import RateLimits

CHANNEL_ID = re.compile(r"[A-Za-z0-9_:.\-]{1,128}")
MAX_CHANNELS = 16
META_SUBPROTOCOL = "ws+meta.nchan"
LONGPOLL_TIMEOUT = 30.0
SSE_BATCH = 64
"""At most this many waiting messages go out in one write to an EventSource."""

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Etag, Last-Modified, Retry-After",
}
PREFLIGHT = {
    "Access-Control-Allow-Methods": "GET, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, If-None-Match, If-Modified-Since, Last-Event-ID",
    "Access-Control-Max-Age": "86400",
}
NO_CACHE = {"Cache-Control": "no-cache, no-store, must-revalidate"}


def error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def parse_channels(text: str) -> list[str] | str:
    """The channel ids of a `/sub/` path segment, or what is wrong with it."""
    channels = text.split(",")
    if len(channels) > MAX_CHANNELS:
        return f"at most {MAX_CHANNELS} channels per connection"
    for channel in channels:
        if not CHANNEL_ID.fullmatch(channel):
            return f"invalid channel id {channel[:140]!r}: 1 to 128 of A-Z a-z 0-9 _ : . -"
    return list(dict.fromkeys(channels))


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8 and ::1 (also IPv4-mapped); False for anything else or nothing."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def sse_event(message: Message) -> bytes:
    """One EventSource event. Line breaks (CR, LF, CRLF) in the payload become `data:` lines,
    which EventSource joins back with LF."""
    data = message.data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return b"id: " + message.id.encode() + b"\ndata: " + data.replace(b"\n", b"\ndata: ") + b"\n\n"


def meta_frame(message: Message) -> bytes:
    """A `ws+meta.nchan` frame: id and content type lines, a blank line, the payload."""
    head = f"id: {message.id}\n"
    if message.content_type:
        head += f"content-type: {message.content_type}\n"
    return head.encode() + b"\n" + message.data


def _unquote_etag(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip().removeprefix("W/")
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def _http_date_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def _bearer_token(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def _close_on_disconnect(receive: Receive, subscription: Subscription) -> None:
    """End `subscription` as soon as the HTTP client goes away, even while it is idle."""
    while (await receive())["type"] != "http.disconnect":
        pass
    subscription.close()


class EventStream(Response):
    """An EventSource response fed by a subscription: `: hi`, then events, with `: ping`
    comments every `heartbeat` seconds of silence. Ends when the subscription does."""

    media_type = "text/event-stream"

    def __init__(self, subscription: Subscription, heartbeat: float) -> None:
        self.subscription = subscription
        self.heartbeat = heartbeat
        self.status_code = 200
        self.background = None
        self.init_headers({**CORS, **NO_CACHE, "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub = self.subscription
        watcher = asyncio.create_task(_close_on_disconnect(receive, sub))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": b": hi\n\n", "more_body": True})
            while not sub.closed:
                chunk = self._next_chunk(await sub.get(self.heartbeat))
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away mid-write
        finally:
            watcher.cancel()
            sub.close()

    def _next_chunk(self, first: Message | None) -> bytes:
        if first is None:
            return b"" if self.subscription.closed else b": ping\n\n"
        events = [sse_event(first)]
        while len(events) < SSE_BATCH and (more := self.subscription.get_nowait()) is not None:
            events.append(sse_event(more))
        return b"".join(events)


class EdgeEndpoints:
    """The request handlers of one edge, bound to its hub, its settings, the live configuration
    (`live()`: the long-poll flag) and the per-client limits (`subscribes_per_minute`)."""

    def __init__(
        self,
        hub: Hub,
        settings: Settings,
        longpoll_timeout: float,
        live: Callable[[], LiveConfig],
        limits: RateLimits | None,
    ) -> None:
        self.hub = hub
        self.settings = settings
        self.longpoll_timeout = longpoll_timeout
        self.live = live
        self.limits = limits

    # -- subscribers --------------------------------------------------------------------------

    def admit(
        self, path_channels: str, query: QueryParams, headers: Headers, peer: str | None
    ) -> list[str] | JSONResponse:
        """The requested channels, or the error response refusing them."""
        if self.limits is not None and (wait := self.limits.retry_after("subscribes_per_minute", peer, headers)):
            message = f"too many subscriptions from this client; retry in {wait} s"
            return error(429, "rate_limited", message, {**CORS, "Retry-After": str(wait)})
        channels = parse_channels(path_channels)
        if isinstance(channels, str):
            return error(400, "invalid_channel", channels, CORS)
        private = private_channels(channels)
        if private:
            token = query.get("auth") or _bearer_token(headers.get("authorization", ""))
            if not token:
                return error(403, "forbidden", "private channels need an auth token", CORS)
            if not verify_subscription(self.settings.secret, token, private, time.time()):
                return error(403, "forbidden", "the auth token is invalid or expired for these channels", CORS)
        return channels

    async def subscribe_http(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers={**CORS, **PREFLIGHT})
        peer = request.client.host if request.client else None
        channels = self.admit(request.path_params["channels"], request.query_params, request.headers, peer)
        if isinstance(channels, Response):
            return channels
        if "text/event-stream" in request.headers.get("accept", ""):
            resume = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
            return EventStream(self.hub.subscribe(channels, resume), self.settings.heartbeat_interval)
        if not enabled(self.live(), "long_poll"):
            return error(403, "feature_disabled", "long-poll is turned off here; use EventSource or WebSocket", CORS)
        return await self._longpoll(request, channels)

    async def _longpoll(self, request: Request, channels: list[str]) -> Response:
        """Answer with the next message after the one the validators name (the next new one
        without validators), or 304 after `longpoll_timeout` seconds."""
        headers = request.headers
        resume = (
            _unquote_etag(headers.get("if-none-match"))
            or headers.get("last-event-id")
            or request.query_params.get("last_event_id")
        )
        since = None if resume else _http_date_seconds(headers.get("if-modified-since"))
        sub = self.hub.subscribe(channels, resume, modified_since=since)
        watcher = asyncio.create_task(_close_on_disconnect(request.receive, sub))
        try:
            message = await sub.get(self.longpoll_timeout)
        finally:
            watcher.cancel()
            sub.close()
        if message is None:
            return Response(status_code=304, headers={**CORS, **NO_CACHE})
        return Response(
            message.data,
            media_type=message.content_type or "application/octet-stream",
            headers={
                **CORS,
                **NO_CACHE,
                "Etag": message.id,
                "Last-Modified": email.utils.formatdate(message.time, usegmt=True),
            },
        )

    async def subscribe_websocket(self, ws: WebSocket) -> None:
        peer = ws.client.host if ws.client else None
        channels = self.admit(ws.path_params["channels"], ws.query_params, ws.headers, peer)
        if isinstance(channels, Response):
            if "websocket.http.response" in ws.scope.get("extensions", {}):
                await ws.send_denial_response(channels)
            else:
                await ws.close(code=1008)
            return
        with_meta = META_SUBPROTOCOL in ws.scope.get("subprotocols", [])
        sub = self.hub.subscribe(channels, ws.query_params.get("last_event_id"))
        watcher: asyncio.Task[None] | None = None
        try:
            await ws.accept(subprotocol=META_SUBPROTOCOL if with_meta else None)
            watcher = asyncio.create_task(_close_on_websocket_disconnect(ws, sub))
            async for message in sub:
                payload = meta_frame(message) if with_meta else message.data
                try:
                    await ws.send({"type": "websocket.send", "text": payload.decode()})
                except UnicodeDecodeError:
                    await ws.send({"type": "websocket.send", "bytes": payload})
            if watcher.done():
                return
            # Dropped for being slow (1013: try again later) or the edge is shutting down.
            await ws.close(code=1013 if sub.dropped else 1001)
        except (WebSocketDisconnect, OSError):
            pass  # the client went away mid-write
        finally:
            if watcher is not None:
                watcher.cancel()
            sub.close()

    # -- publishers ---------------------------------------------------------------------------

    async def publish(self, request: Request) -> Response:
        if not is_loopback(request.client.host if request.client else None):
            return error(403, "forbidden", "publishing is allowed from loopback addresses only")
        channel = request.path_params["channel"]
        if not CHANNEL_ID.fullmatch(channel):
            return error(400, "invalid_channel", f"invalid channel id {channel[:140]!r}")
        if request.method == "GET":
            return self._channel_info(channel)
        body = await self._read_body(request)
        if body is None:
            return error(413, "too_large", f"messages are limited to {self.settings.max_message_bytes} bytes")
        try:
            published = self.hub.put(
                channel,
                body,
                message_id=request.headers.get("x-message-id") or None,
                content_type=request.headers.get("content-type", ""),
            )
        except EdgeError as exc:  # the hub closed: this edge is stopping
            return error(503, "unavailable", str(exc))
        return JSONResponse(
            {
                "channel": channel,
                "id": published.id,
                "subscribers": published.subscribers,
                "duplicate": published.duplicate,
            },
            status_code=202,
        )

    def _channel_info(self, channel: str) -> Response:
        info = self.hub.channel_info(channel)
        if info is None:
            return error(404, "not_found", f"no channel {channel!r} on this edge")
        return JSONResponse(
            {
                "channel": channel,
                "messages": info.messages,
                "subscribers": info.subscribers,
                "last_message_id": info.last_message_id,
            }
        )

    async def _read_body(self, request: Request) -> bytes | None:
        """The request body, or None as soon as it exceeds the message size limit."""
        limit = self.settings.max_message_bytes
        declared = request.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)


async def _close_on_websocket_disconnect(ws: WebSocket, subscription: Subscription) -> None:
    while (await ws.receive())["type"] != "websocket.disconnect":
        pass
    subscription.close()


def edge_routes(
    hub: Hub,
    settings: Settings,
    *,
    longpoll_timeout: float = LONGPOLL_TIMEOUT,
    live: Callable[[], LiveConfig] | None = None,
    limits: RateLimits | None = None,
) -> list[BaseRoute]:
    """The edge's routes, to mount into another app (the API's) or a standalone one. `live`
    gives the live configuration (default: the settings' values); `limits` limits the
    subscriptions per client (default: none)."""
    fixed = LiveConfig.from_settings(settings)
    endpoints = EdgeEndpoints(hub, settings, longpoll_timeout, live or (lambda: fixed), limits)
    return [
        Route("/sub/{channels}", endpoints.subscribe_http, methods=["GET", "OPTIONS"]),
        WebSocketRoute("/sub/{channels}", endpoints.subscribe_websocket),
        Route("/pub/{channel}", endpoints.publish, methods=["GET", "POST"]),
    ]


class HubCollector(Collector):
    """The hub's figures as Prometheus metrics (register it where `/metrics` is served)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        stats = self.hub.stats()
        yield GaugeMetricFamily("threadcast_edge_channels", "Channels held by the edge", value=stats.channels)
        yield GaugeMetricFamily("threadcast_edge_subscribers", "Open subscriptions", value=stats.subscribers)
        yield GaugeMetricFamily("threadcast_edge_buffered_messages", "Messages in buffers", value=stats.buffered)
        yield CounterMetricFamily("threadcast_edge_messages_published", "Messages published", value=stats.published)
        yield CounterMetricFamily(
            "threadcast_edge_messages_delivered", "Messages handed to subscribers", value=stats.delivered
        )
        yield CounterMetricFamily(
            "threadcast_edge_subscribers_dropped", "Subscribers dropped for being slow", value=stats.dropped
        )


def create_edge_app(
    hub: Hub,
    settings: Settings,
    *,
    longpoll_timeout: float = LONGPOLL_TIMEOUT,
    live: Callable[[], LiveConfig] | None = None,
    limits: RateLimits | None = None,
) -> Starlette:
    """A standalone edge: the edge routes (`live`, `limits`: see `edge_routes`) plus
    `/healthz` and `/metrics`. Its lifespan starts and closes `hub`."""
    registry = CollectorRegistry()
    registry.register(HubCollector(hub))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await hub.start()
        try:
            yield
        finally:
            await hub.close()

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    routes = [
        *edge_routes(hub, settings, longpoll_timeout=longpoll_timeout, live=live, limits=limits),
        Route("/healthz", healthz),
        Route("/metrics", metrics),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
