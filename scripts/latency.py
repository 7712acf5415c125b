"""POST -> SSE receipt latency of a running threadcast, or of one this script starts.

    python scripts/latency.py [--url http://127.0.0.1:8000] [--posts 200] [--subscribers 10] [--rate 50]

Opens N SSE subscribers on the demo thread, POSTs comments at a steady rate and records, for each
subscriber and each post, the time from the POST's response to the message's arrival. Prints the
median, p90, p99 and max, and the count of lost and duplicate deliveries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

from threadcast.edge import subscriber


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"{url} did not become ready")


async def measure(url: str, posts: int, subscribers: int, rate: float) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        thread = (await client.get("/api/v1/threads", params={"forum": "demo", "identifier": "welcome"})).json()
        channel = f"thread:{thread['id']}"
        arrivals: list[dict[int, list[float]]] = [{} for _ in range(subscribers)]

        async def read(index: int) -> None:
            async for item in subscriber.sse(url, [channel]):
                post_id = json.loads(item.data)["data"]["id"]
                arrivals[index].setdefault(post_id, []).append(time.perf_counter())

        readers = [asyncio.create_task(read(i)) for i in range(subscribers)]
        while (await client.get(f"/pub/{channel}")).json().get("subscribers", 0) < subscribers:
            await asyncio.sleep(0.05)
        accepted: dict[int, float] = {}
        for n in range(posts):
            started = time.perf_counter()
            res = await client.post(f"/api/v1/threads/{thread['id']}/posts", json={"author_name": "bench", "message": f"m{n}"})
            accepted[res.json()["id"]] = time.perf_counter()
            await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - started)))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(len(a) < posts for a in arrivals):
            await asyncio.sleep(0.05)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

    latencies = [(times[0] - accepted[pid]) * 1000 for a in arrivals for pid, times in a.items() if pid in accepted]
    lost = sum(1 for a in arrivals for pid in accepted if pid not in a)
    duplicates = sum(len(times) - 1 for a in arrivals for times in a.values())
    return {
        "posts": posts,
        "subscribers": subscribers,
        "deliveries": len(latencies),
        "lost": lost,
        "duplicates": duplicates,
        "median_ms": round(statistics.median(latencies), 2),
        "p90_ms": round(percentile(latencies, 0.90), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a running threadcast; default: start one on a temporary data dir")
    parser.add_argument("--posts", type=int, default=200)
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--rate", type=float, default=50.0, help="posts per second")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    if args.posts < 1 or args.subscribers < 1 or args.rate <= 0:
        parser.error("--posts, --subscribers and --rate must be positive")

    server = None
    url = args.url
    if url is None:
        url = f"http://127.0.0.1:{args.port}"
        data_dir = tempfile.mkdtemp(prefix="threadcast-latency-")
        server = subprocess.Popen(
            [sys.executable, "-m", "threadcast", "up", "--port", str(args.port), "--data-dir", data_dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy(),
        )
    try:
        asyncio.run(wait_ready(url))
        print(f"measuring {args.posts} posts at {args.rate}/s with {args.subscribers} SSE subscribers on {url} ...", file=sys.stderr)
        result = asyncio.run(measure(url, args.posts, args.subscribers, args.rate))
    finally:
        if server is not None:
            server.terminate()
            server.wait(20)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
