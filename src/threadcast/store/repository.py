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
from threadcast.store.models import Forum, OutboxEvent, Post, Thread, Vote


class NotFound(LookupError):
    pass


class Conflict(ValueError):
    pass


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


def post_dict(post: Post) -> dict:
    return {
        "id": post.id,
        "thread_id": post.thread_id,
        "parent_id": post.parent_id,
        "seq": post.seq,
        "author_name": post.author_name,
        "message": post.message,
        "created_at": post.created_at.isoformat(),
        "version": post.version,
        "score": post.score,
        "upvotes": post.upvotes,
        "downvotes": post.downvotes,
        "score_version": post.score_version,
    }


class Repository:
    def __init__(self, db: Database, topic: str = "events") -> None:
        self.db = db
        self.topic = topic

    # forums

    async def create_forum(self, name: str, title: str) -> tuple[Forum, bool]:
        """Create a forum; an existing one with the same name is returned (created=False)."""
        async with self.db.session() as session:
            existing = await session.scalar(select(Forum).where(Forum.name == name))
            if existing is not None:
                return existing, False
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
        """Save a post and its `post.created` event in one transaction. With an idempotency
        key already used on this thread, return that post instead (created=False)."""
        if idempotency_key is not None:
            existing = await self._post_by_key(thread_id, idempotency_key)
            if existing is not None:
                return existing, False
        try:
            return await self._insert_post(thread_id, author_name, message, parent_id, idempotency_key), True
        except IntegrityError:
            existing = None
            if idempotency_key is not None:  # the same key won a race
                existing = await self._post_by_key(thread_id, idempotency_key)
            if existing is None:
                raise
            return existing, False

    async def _insert_post(
        self, thread_id: int, author_name: str, message: str, parent_id: int | None, key: str | None
    ) -> dict:
        async with self.db.session() as session, session.begin():
            # The write comes first so that SQLite takes its write lock at once.
            bumped = (
                await session.execute(
                    update(Thread)
                    .where(Thread.id == thread_id)
                    .values(last_seq=Thread.last_seq + 1)
                    .returning(Thread.last_seq, Thread.forum_id)
                )
            ).first()
            if bumped is None:
                raise NotFound(f"thread {thread_id} does not exist")
            seq, forum_id = bumped
            if parent_id is not None:
                await _check_parent(session, thread_id, parent_id)
            forum_name = await session.scalar(select(Forum.name).where(Forum.id == forum_id))
            post = Post(
                thread_id=thread_id,
                parent_id=parent_id,
                seq=seq,
                author_name=author_name,
                message=message,
                idempotency_key=key,
            )
            session.add(post)
            await session.flush()
            body = post_dict(post)
            session.add(self._event("post.created", thread_id, forum_name, post.version, body))
        return body

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

    async def _post_by_key(self, thread_id: int, key: str) -> dict | None:
        async with self.db.session() as session:
            post = await session.scalar(
                select(Post).where(Post.thread_id == thread_id, Post.idempotency_key == key)
            )
            return post_dict(post) if post is not None else None


async def _check_parent(session: AsyncSession, thread_id: int, parent_id: int) -> None:
    parent_thread = await session.scalar(select(Post.thread_id).where(Post.id == parent_id))
    if parent_thread is None:
        raise NotFound(f"parent post {parent_id} does not exist")
    if parent_thread != thread_id:
        raise Conflict(f"parent post {parent_id} belongs to another thread")


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
            upvotes=Post.upvotes + (value == 1) - (previous == 1),
            downvotes=Post.downvotes + (value == -1) - (previous == -1),
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
