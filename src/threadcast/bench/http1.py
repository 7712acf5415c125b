"""Just enough HTTP/1.1 over asyncio streams for the load clients: one request at a time on a
keep-alive connection, bodies framed by Content-Length, chunked encoding, or the end of the
connection (Nchan's EventSource streams). Thousands of these cost far less than full clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024
READ_SIZE = 64 * 1024


class HttpError(Exception):
    """A malformed response, or one with an unexpected status."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a server listens (plain HTTP on loopback)."""

    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{url!r} is not an http://host:port URL")
        return cls(parts.hostname, parts.port or 80)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD)


def request(
    method: str, path: str, endpoint: Endpoint, headers: Mapping[str, str] | None = None, body: bytes = b""
) -> bytes:
    """The bytes of one keep-alive request."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {endpoint.host}:{endpoint.port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    headers: dict[str, str]
    """Lower-case names."""

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("content-length")
        return int(value) if value is not None and value.isdigit() else None

    @property
    def bodyless(self) -> bool:
        return self.status in (204, 304) or 100 <= self.status < 200


def parse_head(raw: bytes) -> ResponseHead:
    """Status line and headers (up to and without the blank line)."""
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HttpError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return ResponseHead(int(parts[1]), headers)


async def read_head(reader: asyncio.StreamReader) -> ResponseHead:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise HttpError("the connection closed before a response") from exc
    except asyncio.LimitOverrunError as exc:
        raise HttpError("response head too large") from exc
    return parse_head(raw[:-4])


class ChunkedDecoder:
    """Incremental `Transfer-Encoding: chunked` decoding: `feed` returns the body bytes the new
    data completes; `done` turns true at the last (empty) chunk. Trailers are not read."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data_left = 0
        self._crlf_left = 0
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out: list[bytes] = []
        while self._buffer and not self.done:
            if self._data_left:
                take = self._buffer[: self._data_left]
                out.append(take)
                self._data_left -= len(take)
                self._buffer = self._buffer[len(take) :]
            elif self._crlf_left:
                skip = min(self._crlf_left, len(self._buffer))
                self._crlf_left -= skip
                self._buffer = self._buffer[skip:]
            else:
                line_end = self._buffer.find(b"\r\n")
                if line_end < 0:
                    break
                size_text = self._buffer[:line_end].split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise HttpError(f"bad chunk size {size_text[:20]!r}") from None
                self._buffer = self._buffer[line_end + 2 :]
                self.done = size == 0
                self._data_left, self._crlf_left = size, 2
        return b"".join(out)


async def read_body(reader: asyncio.StreamReader, head: ResponseHead) -> bytes:
    """The whole body of a response on a keep-alive connection."""
    if head.bodyless:
        return b""
    if head.chunked:
        decoder = ChunkedDecoder()
        parts: list[bytes] = []
        while not decoder.done:
            data = await reader.read(READ_SIZE)
            if not data:
                raise HttpError("the connection closed inside a chunked body")
            parts.append(decoder.feed(data))
        return b"".join(parts)
    length = head.content_length
    if length is None:
        return await reader.read()
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise HttpError("the connection closed inside a body") from exc


async def stream_body(reader: asyncio.StreamReader, head: ResponseHead) -> AsyncIterator[bytes]:
    """A streamed body (EventSource), piece by piece as it arrives, until it ends."""
    decoder = ChunkedDecoder() if head.chunked else None
    while decoder is None or not decoder.done:
        data = await reader.read(READ_SIZE)
        if not data:
            return
        if decoder is not None:
            data = decoder.feed(data)
        if data:
            yield data
