"""GET /api/v1/stats/{forum} and the /stats page, in process, over Parquet results in the
configured object store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.stats_results import Window, key, write_window
from threadcast.app import create_app
from threadcast.config import Settings
from threadcast.system import System


@pytest.fixture
async def client(data_dir, tmp_path):
    system = System(Settings(data_dir=data_dir, store_url=str(tmp_path / "objects"), seed_demo=False))
    app = create_app(system)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest.fixture
def objects(tmp_path):
    return tmp_path / "objects"


def minute(ago: int) -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=ago)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def test_a_forum_without_stats_has_empty_lists(client):
    res = await client.get("/api/v1/stats/demo")
    assert res.status_code == 200
    body = res.json()
    assert body["forum"] == "demo" and body["windows"] == [] and body["top_threads"] == []


async def test_windows_and_top_threads_since(client, objects):
    write_window(objects, Window(minute(120), {9: 50}))
    write_window(objects, Window(minute(3), {1: 2, 2: 5}, replies=1, unique_authors=2))
    write_window(objects, Window(minute(2), {1: 4}, latency_ms=None))
    write_window(objects, Window(minute(2), {8: 1}, forum="other"))

    body = (await client.get("/api/v1/stats/demo", params={"since": "1h"})).json()
    assert [w["window_start"] for w in body["windows"]] == [iso(minute(3)), iso(minute(2))]
    first, second = body["windows"]
    assert first == {
        "window_start": iso(minute(3)),
        "window_end": iso(minute(2)),
        "forum": "demo",
        "posts": 7,
        "replies": 1,
        "votes": 0,
        "active_threads": 2,
        "unique_authors": 2,
        "late_events": 0,
        "latency_count": 7,
        "latency_p50_ms": 12.0,
        "latency_p90_ms": 30.0,
        "latency_p99_ms": 80.0,
        "latency_max_ms": 95.0,
        "top_threads": [{"rank": 1, "thread_id": 2, "posts": 5}, {"rank": 2, "thread_id": 1, "posts": 2}],
    }
    assert second["latency_p99_ms"] is None
    assert body["top_threads"] == [{"rank": 1, "thread_id": 1, "posts": 6}, {"rank": 2, "thread_id": 2, "posts": 5}]

    longer = (await client.get("/api/v1/stats/demo", params={"since": "3h"})).json()
    assert len(longer["windows"]) == 3
    assert longer["top_threads"][0] == {"rank": 1, "thread_id": 9, "posts": 50}


@pytest.mark.parametrize("since", ["1x", "0m", "soon", "99999999999d"])
async def test_a_bad_since_is_422(client, since):
    res = await client.get("/api/v1/stats/demo", params={"since": since})
    assert res.status_code == 422
    assert res.json()["error"]["code"] == "invalid_since"


async def test_a_forum_name_that_cannot_exist_is_422(client):
    res = await client.get("/api/v1/stats/No%20Such")
    assert res.status_code == 422
    assert res.json()["error"]["code"] == "invalid_request"


async def test_a_damaged_store_is_503(client, objects):
    bad = objects / key("forum", Window(minute(2), {}))
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not parquet")
    res = await client.get("/api/v1/stats/demo")
    assert res.status_code == 503
    assert res.json()["error"]["code"] == "stats_unavailable"


async def test_the_stats_page_is_served_and_linked_from_the_demo_page(client):
    page = await client.get("/stats")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<title>Forum stats" in page.text and "/static/stats.js" in page.text
    assert (await client.get("/static/stats.js")).status_code == 200
    assert 'href="/stats"' in (await client.get("/")).text
