"""The comments API against the embedded backends, in process (no services running)."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from tests.toolkit.helpers import wait_until
from threadcast.app import create_app
from threadcast.config import Settings
from threadcast.events import Event, decode_event
from threadcast.store.models import OutboxEvent
from threadcast.system import System


@pytest.fixture
async def system(data_dir):
    system = System(Settings(data_dir=data_dir, max_message_bytes=1024))
    await system.start()
    yield system
    await system.close()


@pytest.fixture
async def client(system):
    transport = httpx.ASGITransport(app=create_app(system))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
async def thread(client):
    await client.post("/api/v1/forums", json={"name": "news", "title": "News"})
    res = await client.post("/api/v1/threads", json={"forum": "news", "identifier": "a-1", "title": "A"})
    return res.json()


async def test_forum_create_and_get(client):
    res = await client.post("/api/v1/forums", json={"name": "tech", "title": "Tech"})
    assert res.status_code == 201
    assert (await client.post("/api/v1/forums", json={"name": "tech", "title": "Tech"})).status_code == 200
    got = await client.get("/api/v1/forums/tech")
    assert got.json()["title"] == "Tech"
    assert (await client.get("/api/v1/forums/nope")).status_code == 404


async def test_thread_is_idempotent_by_forum_and_identifier(client, thread):
    again = await client.post("/api/v1/threads", json={"forum": "news", "identifier": "a-1"})
    assert again.status_code == 200
    assert again.json()["id"] == thread["id"]
    found = await client.get("/api/v1/threads", params={"forum": "news", "identifier": "a-1"})
    assert found.json()["id"] == thread["id"]
    assert (await client.get(f"/api/v1/threads/{thread['id']}")).json()["identifier"] == "a-1"
    assert set(thread) >= {"id", "forum", "identifier", "title", "url", "created_at"}


async def test_idempotency_key_returns_same_post(client, system, thread):
    url = f"/api/v1/threads/{thread['id']}/posts"
    body = {"author_name": "ann", "message": "once"}
    first = await client.post(url, json=body, headers={"Idempotency-Key": "k1"})
    second = await client.post(url, json=body, headers={"Idempotency-Key": "k1"})
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json() == second.json()
    page = (await client.get(url)).json()
    assert len(page["posts"]) == 1
    assert await system.repo.outbox_size() == 1


async def test_replies_and_parent_checks(client, thread):
    url = f"/api/v1/threads/{thread['id']}/posts"
    parent = (await client.post(url, json={"author_name": "a", "message": "root"})).json()
    reply = await client.post(url, json={"author_name": "b", "message": "re", "parent_id": parent["id"]})
    assert reply.json()["parent_id"] == parent["id"]
    missing = await client.post(url, json={"author_name": "b", "message": "re", "parent_id": 999})
    assert missing.status_code == 404
    other = (await client.post("/api/v1/threads", json={"forum": "news", "identifier": "b"})).json()
    cross = await client.post(
        f"/api/v1/threads/{other['id']}/posts", json={"author_name": "b", "message": "x", "parent_id": parent["id"]}
    )
    assert cross.status_code == 409
    assert cross.json()["error"]["code"] == "conflict"


async def test_cursor_pagination_both_orders(client, thread):
    url = f"/api/v1/threads/{thread['id']}/posts"
    for i in range(7):
        await client.post(url, json={"author_name": "a", "message": f"m{i}"})
    for order, expected in (("asc", list(range(1, 8))), ("desc", list(range(7, 0, -1)))):
        seqs, cursor = [], None
        while True:
            params = {"limit": 3, "order": order, **({"cursor": cursor} if cursor else {})}
            page = (await client.get(url, params=params)).json()
            seqs += [p["seq"] for p in page["posts"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seqs == expected
    after = (await client.get(url, params={"after_seq": 5})).json()
    assert [p["seq"] for p in after["posts"]] == [6, 7]


async def test_script_is_sanitized(client, thread):
    res = await client.post(
        f"/api/v1/threads/{thread['id']}/posts",
        json={"author_name": "x", "message": 'hi<script>alert(1)</script><img src=x onerror=alert(1)><a href="javascript:x">l</a>'},
    )
    message = res.json()["message"]
    assert "<script" not in message and "onerror" not in message and "javascript:" not in message
    assert message.startswith("hi")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "malformed_json"),
        (b'{"message": "no author"}', 422, "invalid_request"),
        (b'{"author_name": "a", "message": "m", "extra": 1}', 422, "invalid_request"),
        (b'{"author_name": "a", "message": "<script>x</script>"}', 422, "empty_message"),
        (b'{"author_name": "a\\u0000b", "message": "m"}', 422, "invalid_request"),  # PostgreSQL text refuses NUL
        (b"[]", 422, "invalid_request"),
    ],
)
async def test_bad_post_bodies(client, thread, body, status, code):
    res = await client.post(
        f"/api/v1/threads/{thread['id']}/posts", content=body, headers={"Content-Type": "application/json"}
    )
    assert res.status_code == status
    assert res.json()["error"]["code"] == code


async def test_oversize_message_and_body(client, thread):
    url = f"/api/v1/threads/{thread['id']}/posts"
    res = await client.post(url, json={"author_name": "a", "message": "x" * 1025})
    assert res.status_code == 413 and res.json()["error"]["code"] == "message_too_large"
    huge = await client.post(url, content=b"x" * 100_000, headers={"Content-Type": "application/json"})
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "payload_too_large"


async def test_unknown_things_are_404_json(client):
    assert (await client.post("/api/v1/threads/424242/posts", json={"author_name": "a", "message": "m"})).status_code == 404
    res = await client.get("/api/v1/nothing-here")
    assert res.status_code == 404 and res.json()["error"]["code"] == "not_found"
    bad = await client.get("/api/v1/threads/abc")
    assert bad.status_code == 422
    cursor = await client.get("/api/v1/threads/1/posts", params={"cursor": "!!"})
    assert cursor.status_code in (400, 404)


async def test_nul_characters_are_refused_wherever_text_is_stored_or_looked_up(client):
    """PostgreSQL's text types cannot hold NUL: refused as bad input (422), never a 500."""
    forum = await client.post("/api/v1/forums", json={"name": "nul", "title": "t\x00"})
    thread = await client.post("/api/v1/threads", json={"forum": "demo", "identifier": "a\x00b"})
    found = await client.get("/api/v1/threads", params={"forum": "demo", "identifier": "a\x00b"})
    named = await client.get("/api/v1/forums/a%00b")
    for res in (forum, thread, found, named):
        assert (res.status_code, res.json()["error"]["code"]) == (422, "invalid_request")


async def test_openapi_and_health(client):
    spec = (await client.get("/api/v1/openapi.json")).json()
    assert "/api/v1/threads/{thread_id}/posts" in spec["paths"]
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True


async def test_the_api_follows_the_live_configuration(client, system, thread):
    """Maintenance mode and the message size limit apply without a restart."""
    url = f"/api/v1/threads/{thread['id']}/posts"
    coord = system.backends.require("coord", "the test")
    await coord.set_config("maintenance.enabled", True)
    await wait_until(lambda: system.runner.live.current.maintenance.enabled, "maintenance mode")
    closed = await client.post(url, json={"author_name": "a", "message": "m"})
    assert closed.status_code == 503 and closed.json()["error"]["code"] == "maintenance"
    assert (await client.get(url)).status_code == 200
    await coord.set_config("maintenance.enabled", False)
    await coord.set_config("max_message_bytes", 2048)
    await wait_until(lambda: system.runner.live.current.max_message_bytes == 2048, "the new size limit")
    assert (await client.post(url, json={"author_name": "a", "message": "x" * 2000})).status_code == 201
    assert (await client.post(url, json={"author_name": "a", "message": "x" * 2049})).status_code == 413


# -- votes -----------------------------------------------------------------------------------


@pytest.fixture
async def post(client, thread):
    res = await client.post(f"/api/v1/threads/{thread['id']}/posts", json={"author_name": "ann", "message": "vote"})
    return res.json()


async def vote(client: httpx.AsyncClient, post_id: int, voter: str, value: int) -> httpx.Response:
    return await client.post(f"/api/v1/posts/{post_id}/votes", json={"voter": voter, "value": value})


async def outbox_events(system: System) -> list[Event]:
    async with system.db.session() as session:
        rows = (await session.scalars(select(OutboxEvent).order_by(OutboxEvent.id))).all()
    return [decode_event(row.payload) for row in rows]


async def test_a_vote_is_saved_with_its_event_and_a_repeat_changes_nothing(client, system, thread, post):
    first = await vote(client, post["id"], "bob", 1)
    assert first.status_code == 201
    tally = {"post_id": post["id"], "voter": "bob", "value": 1, "score": 1, "upvotes": 1, "downvotes": 0}
    assert first.json() == {**tally, "score_version": 1}
    again = await vote(client, post["id"], "bob", 1)
    assert again.status_code == 200 and again.json() == first.json()

    events = await outbox_events(system)
    assert [e.type for e in events] == ["post.created", "vote.created"]
    cast = events[-1]
    assert (cast.thread_id, cast.forum, cast.version) == (thread["id"], "news", 1)
    assert {k: cast.payload[k] for k in tally} == tally
    assert cast.payload["thread_id"] == thread["id"] and cast.payload["previous"] == 0
    assert isinstance(cast.payload["id"], int)


async def test_a_turned_or_taken_back_vote_is_200_and_a_new_one_201(client, post):
    """How the API answers; the tallies and events are in tests/contract/test_store_contract.py."""
    assert (await vote(client, post["id"], "bob", 1)).status_code == 201
    turned = await vote(client, post["id"], "bob", -1)
    assert turned.status_code == 200 and turned.json()["value"] == -1
    removed = await vote(client, post["id"], "bob", 0)
    assert removed.status_code == 200
    assert removed.json() == {
        "post_id": post["id"], "voter": "bob", "value": 0, "score": 0, "upvotes": 0, "downvotes": 0, "score_version": 3
    }
    assert (await vote(client, post["id"], "bob", 1)).status_code == 201


async def test_score_is_in_listings_and_the_openapi_schema(client, post):
    await vote(client, post["id"], "bob", -1)
    [listed] = (await client.get(f"/api/v1/threads/{post['thread_id']}/posts")).json()["posts"]
    assert (listed["score"], listed["upvotes"], listed["downvotes"], listed["score_version"]) == (-1, 0, 1, 1)
    assert listed["version"] == post["version"], "a vote is not an edit"
    assert (post["score"], post["score_version"]) == (0, 0)
    spec = (await client.get("/api/v1/openapi.json")).json()
    assert "/api/v1/posts/{post_id}/votes" in spec["paths"]
    assert {"score", "upvotes", "downvotes", "score_version"} <= set(spec["components"]["schemas"]["PostOut"]["properties"])
    assert spec["components"]["schemas"]["VoteIn"]["properties"]["value"]["minimum"] == -1


async def test_a_vote_on_an_unknown_post_is_404(client, system, thread):
    res = await vote(client, 424242, "bob", 1)
    assert res.status_code == 404 and res.json()["error"]["code"] == "not_found"
    assert await system.repo.outbox_size() == 0


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"voter": "bob", "value": 2}', 422, "invalid_request"),
        (b'{"voter": "bob", "value": -2}', 422, "invalid_request"),
        (b'{"voter": "bob", "value": true}', 422, "invalid_request"),
        (b'{"voter": "bob", "value": "1"}', 422, "invalid_request"),
        (b'{"voter": "bob", "value": 1.0}', 422, "invalid_request"),
        (b'{"voter": "bob"}', 422, "invalid_request"),
        (b'{"voter": "   ", "value": 1}', 422, "invalid_request"),
        (b'{"voter": "' + b"x" * 101 + b'", "value": 1}', 422, "invalid_request"),
        (b'{"voter": "bob", "value": 1, "weight": 5}', 422, "invalid_request"),
        (b'{"voter": "b\\u0000b", "value": 1}', 422, "invalid_request"),
        (b"{not json", 400, "malformed_json"),
    ],
)
async def test_bad_votes(client, system, post, body, status, code):
    res = await client.post(
        f"/api/v1/posts/{post['id']}/votes", content=body, headers={"Content-Type": "application/json"}
    )
    assert res.status_code == status
    assert res.json()["error"]["code"] == code
    assert await system.repo.outbox_size() == 1, "only the post's event"


async def test_votes_follow_the_live_configuration(system, post):
    """Maintenance mode closes voting; `rate_limits.votes_per_minute` limits each client."""
    coord = system.backends.require("coord", "the test")
    transport = httpx.ASGITransport(app=create_app(system), client=("192.0.2.7", 4321))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as remote:
        await coord.set_config("maintenance.enabled", True)
        await wait_until(lambda: system.runner.live.current.maintenance.enabled, "maintenance mode")
        closed = await vote(remote, post["id"], "bob", 1)
        assert closed.status_code == 503 and closed.json()["error"]["code"] == "maintenance"
        await coord.set_config("maintenance.enabled", False)
        await coord.set_config("rate_limits.votes_per_minute", 2)
        await wait_until(lambda: not system.runner.live.current.maintenance.enabled, "maintenance off")
        await wait_until(lambda: system.runner.live.current.rate_limits.votes_per_minute == 2, "the vote limit")
        assert [(await vote(remote, post["id"], "bob", v)).status_code for v in (1, -1)] == [201, 200]
        limited = await vote(remote, post["id"], "bob", 0)
        assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
        assert int(limited.headers["Retry-After"]) >= 1
