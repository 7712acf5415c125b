"""New posts, written by group commit.

Posts requested while a batch is being written wait for the next one, so under load many posts
share one transaction and a handful of statements (bump the threads' sequence numbers, insert
the posts, insert their events), and an idle writer adds no delay: a lone post is a batch of
one. Each caller still gets its own answer: its post, the post its idempotency key already
named, or its own error.

Checks made before the write transaction (parents, idempotency keys already used) rely on posts
never being deleted or moved. A key used by another process between the check and the write
makes the batch fail on the unique constraint (a value the database refuses, its data check);
its posts are then written one by one, so only the post at fault fails, and the post that won
the race is returned for the key.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sqlalchemy import case, insert, select, tuple_, update
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from threadcast.store.db import Database
from threadcast.store.errors import Conflict, NotFound
from threadcast.store.models import Forum, OutboxEvent, Post, Thread

MAX_BATCH = 256
"""Most posts in one transaction."""

PostResult = tuple[dict, bool]
MakeEvent = Callable[[str, int, str, int, dict], OutboxEvent]
"""(event type, thread id, forum name, version, payload) -> the outbox row."""


@dataclass(eq=False)
class NewPost:
    thread_id: int
    author_name: str
    message: str
    parent_id: int | None
    idempotency_key: str | None
    answer: asyncio.Future[PostResult] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    same_key: list[NewPost] = field(default_factory=list)
    """Later posts of the same batch with this post's key: answered with its post or error."""

    @property
    def key(self) -> tuple[int, str] | None:
        return None if self.idempotency_key is None else (self.thread_id, self.idempotency_key)

    def resolve(self, post: dict, created: bool) -> None:
        if not self.answer.done():  # the caller may have gone (cancelled)
            self.answer.set_result((post, created))
        for later in self.same_key:
            later.resolve(post, False)

    def fail(self, error: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(error)
        for later in self.same_key:
            later.fail(error)


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


class PostWriter:
    def __init__(self, db: Database, make_event: MakeEvent, max_batch: int = MAX_BATCH) -> None:
        self.db = db
        self.make_event = make_event
        self.max_batch = max_batch
        self._pending: list[NewPost] = []
        self._writing: asyncio.Task[None] | None = None

    async def create(self, post: NewPost) -> PostResult:
        """Save `post` and its `post.created` event in one transaction; with an idempotency
        key already used on the thread, the post saved with it (created=False)."""
        self._pending.append(post)
        if self._writing is None:
            self._writing = asyncio.create_task(self._write_pending())
        return await post.answer

    async def _write_pending(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                await self._write_batch(batch)
        finally:
            self._writing = None

    async def _write_batch(self, batch: list[NewPost]) -> None:
        try:
            fresh = await self._check(batch)
            try:
                await self._insert(fresh)
            except DBAPIError as error:
                if isinstance(error, (OperationalError, InterfaceError)) or error.connection_invalidated:
                    raise  # the database failed, not a post: every caller gets the error
                if len(fresh) > 1:  # a post broke the batch (a key used meanwhile, a refused value)
                    for post in fresh:
                        await self._write_batch([post])
                elif isinstance(error, IntegrityError):
                    await self._answer_race(fresh[0], error)
                else:
                    raise
        except Exception as error:  # noqa: BLE001 - each caller gets the error of its batch
            for post in batch:
                post.fail(error)

    async def _check(self, batch: list[NewPost]) -> list[NewPost]:
        """Answer the posts whose key was used or whose parent is wrong; return the posts to
        insert, first of each key only (later ones get the first one's post)."""
        keys = {post.key for post in batch if post.key is not None}
        parents = {post.parent_id for post in batch if post.parent_id is not None}
        async with self.db.session() as session:
            used: dict[tuple[int, str], dict] = {}
            if keys:
                rows = await session.scalars(select(Post).where(tuple_(Post.thread_id, Post.idempotency_key).in_(keys)))
                used = {(row.thread_id, row.idempotency_key): post_dict(row) for row in rows}  # type: ignore[misc]
            parent_threads: dict[int, int] = {}
            if parents:
                parent_threads = dict((await session.execute(select(Post.id, Post.thread_id).where(Post.id.in_(parents)))).all())
        fresh: list[NewPost] = []
        first: dict[tuple[int, str], NewPost] = {}
        for post in batch:
            if post.key in used:
                post.resolve(used[post.key], False)  # type: ignore[index]
            elif post.key in first:
                first[post.key].same_key.append(post)  # type: ignore[index]
            elif (error := _parent_error(post, parent_threads)) is not None:
                post.fail(error)
            else:
                fresh.append(post)
                if post.key is not None:
                    first[post.key] = post
        return fresh

    async def _insert(self, posts: list[NewPost]) -> None:
        if not posts:
            return
        counts = Counter(post.thread_id for post in posts)
        async with self.db.session() as session, session.begin():
            # The write comes first so that SQLite takes its write lock at once.
            bumped = await session.execute(
                update(Thread)
                .where(Thread.id.in_(counts))
                .values(last_seq=Thread.last_seq + case(counts, value=Thread.id, else_=0))
                .returning(Thread.id, Thread.last_seq, Thread.forum_id)
            )
            threads = {thread_id: (last - counts[thread_id], forum_id) for thread_id, last, forum_id in bumped}
            found = [post for post in posts if post.thread_id in threads]
            for post in posts:
                if post.thread_id not in threads:
                    post.fail(NotFound(f"thread {post.thread_id} does not exist"))
            if not found:
                return
            forum_ids = {forum_id for _, forum_id in threads.values()}
            forums = dict((await session.execute(select(Forum.id, Forum.name).where(Forum.id.in_(forum_ids)))).all())
            seqs = _number(found, {thread_id: seq for thread_id, (seq, _) in threads.items()})
            rows = (
                await session.scalars(
                    insert(Post).returning(Post, sort_by_parameter_order=True),
                    [
                        {
                            "thread_id": post.thread_id,
                            "parent_id": post.parent_id,
                            "seq": seq,
                            "author_name": post.author_name,
                            "message": post.message,
                            "idempotency_key": post.idempotency_key,
                        }
                        for post, seq in zip(found, seqs, strict=True)
                    ],
                )
            ).all()
            bodies = [post_dict(row) for row in rows]
            session.add_all(
                self.make_event("post.created", row.thread_id, forums[threads[row.thread_id][1]], row.version, body)
                for row, body in zip(rows, bodies, strict=True)
            )
        for post, body in zip(found, bodies, strict=True):
            post.resolve(body, True)

    async def _answer_race(self, post: NewPost, error: IntegrityError) -> None:
        """`post` lost a race for its key (or broke another constraint): answer with the
        winner's post, or the error."""
        if post.key is not None:
            async with self.db.session() as session:
                winner = await session.scalar(
                    select(Post).where(Post.thread_id == post.thread_id, Post.idempotency_key == post.idempotency_key)
                )
            if winner is not None:
                post.resolve(post_dict(winner), False)
                return
        raise error


def _number(posts: Iterable[NewPost], last_before: dict[int, int]) -> list[int]:
    """Each post's seq: the next numbers of its thread, in the order the posts came."""
    seqs = []
    for post in posts:
        last_before[post.thread_id] += 1
        seqs.append(last_before[post.thread_id])
    return seqs


def _parent_error(post: NewPost, parent_threads: dict[int, int]) -> Exception | None:
    if post.parent_id is None:
        return None
    thread_id = parent_threads.get(post.parent_id)
    if thread_id is None:
        return NotFound(f"parent post {post.parent_id} does not exist")
    if thread_id != post.thread_id:
        return Conflict(f"parent post {post.parent_id} belongs to another thread")
    return None

