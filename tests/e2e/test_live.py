"""End to end: `threadcast up` in a subprocess; a comment POSTed reaches live subscribers over
SSE, WebSocket and long-poll, and a subscriber that reconnects resumes without loss."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from threadcast.edge import subscriber

from .conftest import UpProcess

TRANSPORTS = ["sse", "websocket", "longpoll"]


async def demo_thread(base_url: str) -> int:
    async with httpx.AsyncClient(base_url=base_url) as client:
        res = await client.get("/api/v1/threads", params={"forum": "demo", "identifier": "welcome"})
        return res.json()["id"]


async def post(base_url: str, thread_id: int, message: str) -> dict:
    async with httpx.AsyncClient(base_url=base_url) as client:
        res = await client.post(
            f"/api/v1/threads/{thread_id}/posts", json={"author_name": "e2e", "message": message}
        )
        assert res.status_code == 201, res.text
        return res.json()


class Reader:
    """One subscription on a background task, collecting (edge id, push message)."""

    def __init__(self, transport: str, base_url: str, channel: str, last_id: str | None = None) -> None:
        self.base_url, self.channel = base_url, channel
        self.received: list[tuple[str, dict]] = []
        self._arrived = asyncio.Condition()
        self._task = asyncio.create_task(self._run(transport, base_url, channel, last_id))

    async def _run(self, transport: str, base_url: str, channel: str, last_id: str | None) -> None:
        if transport == "longpoll":
            stream = subscriber.longpoll(base_url, [channel], etag=last_id)
        else:
            stream = getattr(subscriber, transport)(base_url, [channel], last_event_id=last_id)
        async for item in stream:
            async with self._arrived:
                self.received.append((item.id, json.loads(item.data)))
                self._arrived.notify_all()

    async def wait_for(self, count: int, timeout: float = 15.0) -> list[dict]:
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.received) >= count), timeout)
        return [message for _, message in self.received]

    @property
    def last_id(self) -> str:
        return self.received[-1][0]

    async def wait_for_ids(self, post_ids: set[int], timeout: float) -> set[int]:
        """Wait until every post in `post_ids` arrived; return the distinct post ids seen."""

        def seen() -> set[int]:
            return {message["data"]["id"] for _, message in self.received}

        async with self._arrived:
            try:
                await asyncio.wait_for(self._arrived.wait_for(lambda: post_ids <= seen()), timeout)
            except TimeoutError:
                pass
        return seen()

    async def ready(self, timeout: float = 10.0) -> None:
        """Wait until the edge counts this subscriber on its channel."""
        async with httpx.AsyncClient(base_url=self.base_url) as client:
            async with asyncio.timeout(timeout):
                while (await client.get(f"/pub/{self.channel}")).json().get("subscribers", 0) < 1:
                    await asyncio.sleep(0.02)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_comment_reaches_subscriber_and_resume_is_exact(up: UpProcess, transport: str):
    thread_id = await demo_thread(up.base_url)
    channel = f"thread:{thread_id}"
    reader = Reader(transport, up.base_url, channel)
    await reader.ready()
    first = await post(up.base_url, thread_id, "first")
    [message] = await reader.wait_for(1)
    assert message["data"]["id"] == first["id"] and message["channel"] == channel
    assert message["type"] == "post.created" and message["seq"] == first["seq"]
    last_id = reader.last_id
    await reader.close()

    missed = [await post(up.base_url, thread_id, f"missed {i}") for i in range(3)]
    resumed = Reader(transport, up.base_url, channel, last_id=last_id)
    got = await resumed.wait_for(3)
    assert [m["data"]["id"] for m in got] == [p["id"] for p in missed]
    marker = await post(up.base_url, thread_id, "after")
    got = await resumed.wait_for(4)
    assert got[3]["data"]["id"] == marker["id"], "a resumed subscriber got something it should not"
    await resumed.close()


async def test_kill_before_publish_loses_nothing(tmp_path):
    """Posts saved by an API-only process that is then killed -9 are published after restart;
    a subscriber resuming from before the crash gets each exactly once by id."""
    api_only = UpProcess(tmp_path / "data", env={"THREADCAST_SERVICES": ""})
    api_only.start()
    thread_id = await demo_thread(api_only.base_url)
    posts = [await post(api_only.base_url, thread_id, f"saved {i}") for i in range(5)]
    api_only.kill()

    full = UpProcess(tmp_path / "data")
    full.port, full.base_url = api_only.port, api_only.base_url
    full.start()
    try:
        reader = Reader("sse", full.base_url, f"thread:{thread_id}", last_id="0:0")
        got = await reader.wait_for(5)
        ids = [m["data"]["id"] for m in got]
        assert sorted(set(ids)) == sorted(p["id"] for p in posts)
        assert [m["seq"] for m in got] == [1, 2, 3, 4, 5]
        await reader.close()
    finally:
        full.stop()


async def test_sigterm_exits_cleanly(up: UpProcess):
    thread_id = await demo_thread(up.base_url)
    reader = Reader("sse", up.base_url, f"thread:{thread_id}")
    await reader.ready()
    await post(up.base_url, thread_id, "bye")
    await reader.wait_for(1)
    assert up.stop() == 0
    await reader.close()
