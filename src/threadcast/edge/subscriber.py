"""An async subscriber client for the push edge (embedded or Nchan): EventSource, WebSocket
and long-poll, each an async iterator of `Received`.

Ids are opaque: they are handed back to the edge to resume, never parsed. Each iterator ends
when the edge closes the connection (for example after dropping a slow subscriber); resume by
calling again with the last id. A refused subscription raises `SubscribeError`.

    async for item in sse("http://127.0.0.1:8000", ["thread:1"]):
        print(item.id, item.data)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import httpx
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

META_SUBPROTOCOL = "ws+meta.nchan"
STREAM_TIMEOUT = httpx.Timeout(10.0, read=None)
"""Streams and long-polls wait for messages as long as the edge holds them."""


@dataclass(frozen=True, slots=True)
class Received:
    """One message. `id` resumes the subscription; long-poll also gives the `Last-Modified`
    validator to send back with the id (Nchan needs both)."""

    id: str
    data: bytes
    last_modified: str | None = None


class SubscribeError(Exception):
    """The edge refused the subscription (`status` is its HTTP status)."""

    def __init__(self, status: int, detail: str = "") -> None:
        super().__init__(f"subscription refused: HTTP {status} {detail}".rstrip())
        self.status = status
        self.detail = detail


def subscribe_url(base_url: str, channels: Sequence[str], **query: str | None) -> str:
    path = quote(",".join(channels), safe=":,")
    args = urlencode({name: value for name, value in query.items() if value is not None})
    return f"{base_url.rstrip('/')}/sub/{path}" + (f"?{args}" if args else "")


async def sse(
    base_url: str,
    channels: Sequence[str],
    last_event_id: str | None = None,
    *,
    auth: str | None = None,
    client: httpx.AsyncClient | None = None,
) -> AsyncIterator[Received]:
    """EventSource: resumes after `last_event_id` (sent as `Last-Event-ID`)."""
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    url = subscribe_url(base_url, channels, auth=auth)
    async with AsyncExitStack() as stack:
        http = client or await stack.enter_async_context(httpx.AsyncClient(timeout=STREAM_TIMEOUT))
        response = await stack.enter_async_context(http.stream("GET", url, headers=headers))
        await _raise_for_refusal(response)
        event_id = last_event_id or ""
        data: list[str] = []
        async for line in response.aiter_lines():
            if not line:
                if data:
                    yield Received(event_id, "\n".join(data).encode())
                    data = []
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                data.append(value)
            elif field == "id":
                event_id = value


async def websocket(
    base_url: str, channels: Sequence[str], last_event_id: str | None = None, *, auth: str | None = None
) -> AsyncIterator[Received]:
    """WebSocket with the `ws+meta.nchan` subprotocol, so every message carries its id;
    resumes after `last_event_id` (sent as the `last_event_id` query argument)."""
    url = subscribe_url(base_url, channels, last_event_id=last_event_id, auth=auth)
    url = "ws" + url.removeprefix("http")
    try:
        connection = await ws_connect(url, subprotocols=[Subprotocol(META_SUBPROTOCOL)], max_size=None)
    except InvalidStatus as exc:
        raise SubscribeError(exc.response.status_code, (exc.response.body or b"").decode(errors="replace")) from None
    async with connection:
        try:
            async for frame in connection:
                yield _parse_meta_frame(frame.encode() if isinstance(frame, str) else frame)
        except ConnectionClosed:
            return


def _parse_meta_frame(frame: bytes) -> Received:
    """`id: ...` and optional `content-type: ...` lines, a blank line, then the payload."""
    head, _, data = frame.partition(b"\n\n")
    message_id = ""
    for line in head.split(b"\n"):
        name, _, value = line.partition(b": ")
        if name == b"id":
            message_id = value.decode()
    return Received(message_id, data)


async def longpoll(
    base_url: str,
    channels: Sequence[str],
    etag: str | None = None,
    last_modified: str | None = None,
    *,
    auth: str | None = None,
    client: httpx.AsyncClient | None = None,
) -> AsyncIterator[Received]:
    """Long-poll: each request answers the message after the one named by `etag` /
    `last_modified` (sent as `If-None-Match` / `If-Modified-Since`); without them, the next
    new message. A 304 (the edge's wait timed out) just polls again."""
    url = subscribe_url(base_url, channels, auth=auth)
    async with AsyncExitStack() as stack:
        http = client or await stack.enter_async_context(httpx.AsyncClient(timeout=STREAM_TIMEOUT))
        while True:
            headers: dict[str, str] = {}
            if etag is not None:
                headers["If-None-Match"] = etag
            if last_modified is not None:
                headers["If-Modified-Since"] = last_modified
            response = await http.get(url, headers=headers)
            if response.status_code == 304:
                continue
            await _raise_for_refusal(response)
            etag = response.headers.get("etag", etag)
            last_modified = response.headers.get("last-modified", last_modified)
            yield Received(etag or "", response.content, last_modified)


async def _raise_for_refusal(response: httpx.Response) -> None:
    if not response.is_success:
        body = await response.aread()
        raise SubscribeError(response.status_code, body.decode(errors="replace"))
