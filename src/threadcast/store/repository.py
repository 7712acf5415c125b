"""What the API does to the database. Every change to a post writes its event to the outbox
in the same transaction, so an event exists if and only if the change committed."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from threadcast.events import Event, encode
from threadcast.store.db import Database
from threadcast.store.errors import Conflict, NotFound
from threadcast.store.models import Forum, OutboxEvent, Post, Thread, Vote
from threadcast.store.post_writer import NewPost, PostWriter, post_dict

__all__ = ["Conflict", "NotFound", "Repository", "ThreadView", "VoteResult", "post_dict"]


@dataclass(frozen=True, slots=True)
class ThreadView:
    id: int
    forum: str
    identifier: str
    title: str
    url: str
    post_count: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class VoteResult:
    """A voter's vote on a post after a vote request (0: none), and the post's tally then."""

    post_id: int
    voter: str
    value: int
    score: int
    upvotes: int
    downvotes: int
    score_version: int
    created: bool
    """A vote was cast where there was none."""
    changed: bool
    """Something was written (and an event with it)."""


def vote_event_type(previous: int, value: int) -> str:
    """`vote.created`: a vote where there was none; `vote.deleted`: a vote taken back;
    `vote.updated`: a vote turned the other way."""
    if previous == 0:
        return "vote.created"
    return "vote.deleted" if value == 0 else "vote.updated"


class Repository:
    def __init__(self, db: Database, topic: str = "events") -> None:
        self.db = db
        self.topic = topic
        self._posts = PostWriter(db, self._event)

    # forums

    async def create_forum(self, name: str, title: str) -> tuple[Forum, bool]:
        """Create a forum; an existing one with the same name is returned (created=False)."""
        try:
            return await self.get_forum(name), False
        except NotFound:
            pass
        # A transaction of its own that writes first: an SQLite transaction that read first
        # cannot write once another connection wrote meanwhile ("database is locked").
        async with self.db.session() as session:
            forum = Forum(name=name, title=title)
            session.add(forum)
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
                return await self.get_forum(name), False
            return forum, True

    async def get_forum(self, name: str) -> Forum:
        async with self.db.session() as session:
            forum = await session.scalar(select(Forum).where(Forum.name == name))
            if forum is None:
                raise NotFound(f"forum {name!r} does not exist")
            return forum

    # threads

    async def get_or_create_thread(
        self, forum_name: str, identifier: str, title: str, url: str
    ) -> tuple[ThreadView, bool]:
        forum = await self.get_forum(forum_name)
        try:
            return await self.find_thread(forum_name, identifier), False
        except NotFound:
            pass
        async with self.db.session() as session:
            thread = Thread(forum_id=forum.id, identifier=identifier, title=title, url=url)
            session.add(thread)
            try:
                await session.commit()
            except IntegrityError:  # created concurrently: same forum + identifier
                await session.rollback()
                return await self.find_thread(forum_name, identifier), False
            return _thread_view(thread, forum.name), True

    async def get_thread(self, thread_id: int) -> ThreadView:
        async with self.db.session() as session:
            row = (
                await session.execute(
                    select(Thread, Forum.name).join(Forum).where(Thread.id == thread_id)
                )
            ).first()
        if row is None:
            raise NotFound(f"thread {thread_id} does not exist")
        return _thread_view(row[0], row[1])

    async def find_thread(self, forum_name: str, identifier: str) -> ThreadView:
        async with self.db.session() as session:
            row = (
                await session.execute(
                    select(Thread, Forum.name)
                    .join(Forum)
                    .where(Forum.name == forum_name, Thread.identifier == identifier)
                )
            ).first()
        if row is None:
            raise NotFound(f"no thread {identifier!r} in forum {forum_name!r}")
        return _thread_view(row[0], row[1])

    # posts

    async def create_post(
        self,
        thread_id: int,
        author_name: str,
        message: str,
        parent_id: int | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[dict, bool]:
        """Save a post and its `post.created` event in one transaction (shared with the posts
        requested meanwhile: `threadcast.store.post_writer`). With an idempotency key already
        used on this thread, return that post instead (created=False)."""
        return await self._posts.create(NewPost(thread_id, author_name, message, parent_id, idempotency_key))

    async def list_posts(
        self, thread_id: int, *, after_seq: int | None, before_seq: int | None, limit: int, descending: bool
    ) -> list[dict]:
        await self.get_thread(thread_id)
        query = select(Post).where(Post.thread_id == thread_id)
        if after_seq is not None:
            query = query.where(Post.seq > after_seq)
        if before_seq is not None:
            query = query.where(Post.seq < before_seq)
        query = query.order_by(Post.seq.desc() if descending else Post.seq.asc()).limit(limit)
        async with self.db.session() as session:
            return [post_dict(p) for p in (await session.scalars(query)).all()]

    # votes

    async def vote(self, post_id: int, voter: str, value: int) -> VoteResult:
        """Set `voter`'s vote on a post to `value` (1 or -1; 0 takes it back). The vote, the
        post's new tally and the event (see `vote_event_type`) are written in one transaction.
        A vote equal to the one stored writes nothing and returns the tally as it is."""
        async with self.db.session() as session, session.begin():
            thread_id, *tally = await _lock_post(session, post_id)
            vote = await session.scalar(select(Vote).where(Vote.post_id == post_id, Vote.voter == voter))
            previous = vote.value if vote is not None else 0
            if value == previous:
                return VoteResult(post_id, voter, value, *tally, created=False, changed=False)
            tally = await _count_vote(session, post_id, previous, value)
            if vote is None:
                vote = Vote(post_id=post_id, voter=voter, value=value)
                session.add(vote)
                await session.flush()  # its id, for the event
            elif value == 0:
                await session.delete(vote)
            else:
                vote.value = value
            result = VoteResult(post_id, voter, value, *tally, created=previous == 0, changed=True)
            forum_name = await session.scalar(select(Forum.name).join(Thread).where(Thread.id == thread_id))
            payload = {
                "id": vote.id,
                "post_id": post_id,
                "thread_id": thread_id,
                "voter": voter,
                "value": value,
                "previous": previous,
                "score": result.score,
                "upvotes": result.upvotes,
                "downvotes": result.downvotes,
                "score_version": result.score_version,
            }
            event_type = vote_event_type(previous, value)
            session.add(self._event(event_type, thread_id, forum_name, result.score_version, payload))
        return result

    # outbox

    async def outbox_size(self) -> int:
        async with self.db.session() as session:
            return await session.scalar(select(func.count()).select_from(OutboxEvent)) or 0

    # helpers

    def _event(self, type_: str, thread_id: int, forum: str, version: int, payload: dict) -> OutboxEvent:
        event = Event(
            event_id=uuid.uuid4().hex,
            type=type_,
            thread_id=thread_id,
            forum=forum,
            ts=time.time(),
            version=version,
            payload=payload,
        )
        return OutboxEvent(
            event_id=event.event_id, topic=self.topic, key=str(thread_id), payload=encode(event)
        )


async def _lock_post(session: AsyncSession, post_id: int) -> tuple[int, int, int, int, int]:
    """A write first: SQLite takes its write lock at once and PostgreSQL locks the post's row, so
    the votes on one post are applied one at a time. Returns the post's thread id and tally
    (score, upvotes, downvotes, score_version)."""
    locked = (
        await session.execute(
            update(Post)
            .where(Post.id == post_id)
            .values(score=Post.score)
            .returning(Post.thread_id, Post.score, Post.upvotes, Post.downvotes, Post.score_version)
        )
    ).first()
    if locked is None:
        raise NotFound(f"post {post_id} does not exist")
    return tuple(locked)  # type: ignore[return-value]


async def _count_vote(session: AsyncSession, post_id: int, previous: int, value: int) -> tuple[int, int, int, int]:
    """Replace the vote `previous` by `value` in the post's tally; returns the new tally."""
    tally = await session.execute(
        update(Post)
        .where(Post.id == post_id)
        .values(
            score=Post.score + value - previous,
            upvotes=Post.upvotes + int(value == 1) - int(previous == 1),  # ints: PostgreSQL adds no booleans
            downvotes=Post.downvotes + int(value == -1) - int(previous == -1),
            score_version=Post.score_version + 1,
        )
        .returning(Post.score, Post.upvotes, Post.downvotes, Post.score_version)
    )
    return tuple(tally.one())  # type: ignore[return-value]


def _thread_view(thread: Thread, forum_name: str) -> ThreadView:
    return ThreadView(
        id=thread.id,
        forum=forum_name,
        identifier=thread.identifier,
        title=thread.title,
        url=thread.url,
        post_count=thread.last_seq,
        created_at=thread.created_at,
    )
