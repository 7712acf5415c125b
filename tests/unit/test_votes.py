"""Votes below the API: how the formatter publishes a vote event (the API's side is in
test_api.py; the store's, and the migration that adds votes, in
tests/contract/test_store_contract.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest
from sqlalchemy import select

from threadcast.events import Event, decode_event, decode_push
from threadcast.services import formatter
from threadcast.store.db import Database
from threadcast.store.models import OutboxEvent
from threadcast.store.repository import Repository
from threadcast.toolkit import TestKit

FORMAT_QUEUE = "realtime.format"


@pytest.fixture
async def database(data_dir) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{data_dir / 'threadcast.db'}")
    yield db
    await db.close()


def vote_event(**payload: object) -> Event:
    body = {"id": 5, "post_id": 42, "thread_id": 9, "voter": "bob", "value": 1, "previous": 0, "score": 3, **payload}
    return Event(event_id="vote-1", type="vote.created", thread_id=9, forum="demo", ts=0.0, version=4, payload=body)


def test_a_vote_goes_to_its_post_and_thread_with_seq_zero():
    assert formatter.channels_for(vote_event()) == ["thread:9", "post:42"], "post:{post_id}, not post:{vote id}"
    for kind in ("vote.updated", "vote.deleted"):
        assert formatter.channels_for(msgspec.structs.replace(vote_event(), type=kind)) == ["thread:9", "post:42"]
    rendered = formatter.render(vote_event(seq=7))
    messages = [decode_push(push.data) for push in rendered.pushes]
    assert [(m.channel, m.seq, m.type, m.id) for m in messages] == [
        ("thread:9", 0, "vote.created", "vote-1"),
        ("post:42", 0, "vote.created", "vote-1"),
    ]
    assert all(m.data["score"] == 3 and m.data["post_id"] == 42 for m in messages)


async def test_a_saved_vote_is_published_by_the_formatter(database):
    """The event the repository writes, through the real formatter service, to the edge."""
    await database.migrate()
    repo = Repository(database)
    await repo.create_forum("demo", "Demo")
    thread, _ = await repo.get_or_create_thread("demo", "t", "T", "/")
    post, _ = await repo.create_post(thread.id, "ann", "hello")
    await repo.vote(post["id"], "bob", 1)
    await repo.vote(post["id"], "cy", -1)
    await repo.vote(post["id"], "bob", 0)
    async with database.session() as session:
        events = [decode_event(row.payload) for row in (await session.scalars(select(OutboxEvent))).all()]

    async with TestKit(formatter.service) as kit:
        for event in events:
            await kit.send_to_queue(FORMAT_QUEUE, event, headers={"event_id": event.event_id})
        await kit.drain()
        assert await kit.queue.dead_letters(FORMAT_QUEUE) == []

    on_post = [decode_push(data) for data in kit.edge.messages(f"post:{post['id']}")]
    assert [(m.type, m.seq, m.data["score"]) for m in on_post] == [
        ("post.created", 1, 0),
        ("vote.created", 0, 1),
        ("vote.created", 0, 0),
        ("vote.deleted", 0, -1),
    ]
    on_thread = [decode_push(data) for data in kit.edge.messages(f"thread:{thread.id}")]
    assert [m.id for m in on_thread] == [m.id for m in on_post]
    assert [decode_push(data).type for data in kit.edge.messages("forum:demo")] == ["post.created"]
