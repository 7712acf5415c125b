"""Forums, threads and posts under /api/v1."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from threadcast.api.errors import ApiError
from threadcast.api.rate_limits import rate_limit
from threadcast.coord import LiveConfig
from threadcast.api.schemas import (
    ErrorOut,
    ForumIn,
    ForumOut,
    PostIn,
    PostOut,
    PostPage,
    Text,
    ThreadIn,
    ThreadOut,
)
from threadcast.store.repository import Repository, ThreadView
from threadcast.store.sanitize import clean_message

ERRORS = {code: {"model": ErrorOut} for code in (400, 404, 409, 413, 422, 429, 503)}


def _thread_out(thread: ThreadView) -> ThreadOut:
    return ThreadOut(
        id=thread.id,
        forum=thread.forum,
        identifier=thread.identifier,
        title=thread.title,
        url=thread.url,
        post_count=thread.post_count,
        created_at=thread.created_at.isoformat(),
    )


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if raw[:1] != "s":
            raise ValueError(raw)
        return int(raw[1:])
    except ValueError:
        raise ApiError(400, "bad_cursor", "cursor is not one this API returned") from None


def writable(live: Callable[[], LiveConfig]) -> Callable[[Request], Awaitable[None]]:
    """A router dependency: every POST answers 503 while maintenance mode is on."""

    async def check(request: Request) -> None:
        maintenance = live().maintenance
        if maintenance.enabled and request.method == "POST":
            raise ApiError(503, "maintenance", maintenance.message or "down for maintenance; try again later")

    return check


def build_router(repo: Repository, live: Callable[[], LiveConfig], on_post: Callable[[], None]) -> APIRouter:
    """`live()` is the live configuration now (message size limit, maintenance mode); `on_post`
    is called after a post committed (it wakes the outbox relay)."""
    router = APIRouter(prefix="/api/v1", responses=ERRORS, dependencies=[Depends(writable(live))])

    @router.post("/forums", status_code=201, response_model=ForumOut, tags=["forums"])
    async def create_forum(body: ForumIn, response: Response) -> ForumOut:
        forum, created = await repo.create_forum(body.name, body.title)
        if not created:
            response.status_code = 200
        return ForumOut(id=forum.id, name=forum.name, title=forum.title, created_at=forum.created_at.isoformat())

    @router.get("/forums/{name}", response_model=ForumOut, tags=["forums"])
    async def get_forum(name: Text) -> ForumOut:
        forum = await repo.get_forum(name)
        return ForumOut(id=forum.id, name=forum.name, title=forum.title, created_at=forum.created_at.isoformat())

    @router.post("/threads", status_code=201, response_model=ThreadOut, tags=["threads"])
    async def create_thread(body: ThreadIn, response: Response) -> ThreadOut:
        """Create a thread, or return the existing one for the same forum + identifier (200)."""
        thread, created = await repo.get_or_create_thread(body.forum, body.identifier, body.title, body.url)
        if not created:
            response.status_code = 200
        return _thread_out(thread)

    @router.get("/threads/{thread_id}", response_model=ThreadOut, tags=["threads"])
    async def get_thread(thread_id: int) -> ThreadOut:
        return _thread_out(await repo.get_thread(thread_id))

    @router.get("/threads", response_model=ThreadOut, tags=["threads"])
    async def find_thread(
        forum: Annotated[Text, Query(min_length=1)], identifier: Annotated[Text, Query(min_length=1)]
    ) -> ThreadOut:
        return _thread_out(await repo.find_thread(forum, identifier))

    # Per-client limits: api/rate_limits.py.
    @router.post(
        "/threads/{thread_id}/posts",
        status_code=201,
        response_model=PostOut,
        tags=["posts"],
        dependencies=[rate_limit("posts_per_minute")],
    )
    async def create_post(
        thread_id: int,
        body: PostIn,
        response: Response,
        idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
    ) -> PostOut:
        """Post a comment. Retrying with the same `Idempotency-Key` returns the same post."""
        max_message_bytes = live().max_message_bytes
        if len(body.message.encode()) > max_message_bytes:
            raise ApiError(413, "message_too_large", f"message over {max_message_bytes} bytes")
        message = clean_message(body.message)
        if not message:
            raise ApiError(422, "empty_message", "message is empty once sanitized")
        post, created = await repo.create_post(
            thread_id, body.author_name, message, body.parent_id, idempotency_key
        )
        if created:
            on_post()
        else:
            response.status_code = 200
        return PostOut(**post)

    @router.get("/threads/{thread_id}/posts", response_model=PostPage, tags=["posts"])
    async def list_posts(
        thread_id: int,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        order: Literal["asc", "desc"] = "asc",
        after_seq: Annotated[int | None, Query(ge=0, description="Only posts with a greater seq (gap recovery).")] = None,
    ) -> PostPage:
        descending = order == "desc"
        after, before = after_seq, None
        if cursor is not None:
            position = decode_cursor(cursor)
            if descending:
                before = position
            else:
                after = max(position, after or 0)
        posts = await repo.list_posts(
            thread_id, after_seq=after, before_seq=before, limit=limit + 1, descending=descending
        )
        more = len(posts) > limit
        posts = posts[:limit]
        next_cursor = encode_cursor(posts[-1]["seq"]) if more else None
        return PostPage(posts=[PostOut(**p) for p in posts], next_cursor=next_cursor)

    return router
