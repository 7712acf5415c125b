"""Publish to remote edges over HTTP: `POST {edge}/pub/{channel}` on every edge.

Works with a standalone embedded edge and with nginx + Nchan (`nchan+http://host:port`), both
of which take the raw body as the message. The message id travels in `X-Message-Id` (the
embedded edge drops a second publish of an id it still buffers). A publish returns only once
every edge accepted it (any 2xx: Nchan answers 201 or 202); connection errors and 5xx are
retried with backoff, anything else raises `EdgeError` at once.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import httpx

from threadcast.edge.publisher import EdgeError, EdgePublisher

PING_CHANNEL = "threadcast.ping"
"""`ping` asks for this channel's figures: 200 or 404 both prove the /pub/ location answers."""


def edge_base_url(url: str) -> str:
    """`nchan+http://host:port/` -> `http://host:port`."""
    return url.strip().removeprefix("nchan+").rstrip("/")


class HttpEdgePublisher(EdgePublisher):
    def __init__(
        self,
        urls: list[str],
        *,
        concurrency: int = 64,
        retries: int = 3,
        timeout: float = 5.0,
        backoff: float = 0.05,
    ) -> None:
        self.urls: list[str] = []
        self.set_urls(urls)
        self.concurrency = concurrency
        self.retries = retries
        self.timeout = timeout
        self.backoff = backoff
        self._client: httpx.AsyncClient | None = None
        self._slots = asyncio.Semaphore(concurrency)

    def set_urls(self, urls: list[str]) -> None:
        """Publish to these edges from now on (publishes in flight keep their targets)."""
        if not urls:
            raise ValueError("at least one edge URL is needed")
        self.urls = [edge_base_url(url) for url in urls]

    async def start(self) -> None:
        if self._client is None:
            limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
            self._client = httpx.AsyncClient(limits=limits, timeout=self.timeout)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def ping(self) -> None:
        for base in self.urls:
            try:
                response = await self._http().get(f"{base}/pub/{PING_CHANNEL}")
            except httpx.HTTPError as exc:
                raise EdgeError(f"edge {base} unreachable: {exc!r}") from exc
            if response.status_code not in (200, 404):
                raise EdgeError(f"edge {base} answered {response.status_code} on its /pub/ location")

    async def publish(self, channel: str, data: bytes, *, message_id: str) -> None:
        path = f"/pub/{quote(channel, safe=':')}"
        outcomes = await asyncio.gather(
            *(self._publish_to(base + path, data, message_id) for base in self.urls), return_exceptions=True
        )
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        for failure in failures:
            if not isinstance(failure, EdgeError):
                raise failure
        if failures:
            raise EdgeError("; ".join(str(failure) for failure in failures))

    async def _publish_to(self, url: str, data: bytes, message_id: str) -> None:
        client = self._http()
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                async with self._slots:
                    response = await client.post(url, content=data, headers={"X-Message-Id": message_id})
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if response.is_success:
                return
            problem = f"HTTP {response.status_code}: {response.text[:200]}"
            if response.status_code < 500:
                break
        raise EdgeError(f"publish to {url} failed: {problem}")

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            raise EdgeError("HttpEdgePublisher is not started")
        return self._client
