"""Realtime stats of a forum under /api/v1/stats, read from the object store with DuckDB (in a
worker thread: DuckDB blocks)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from threadcast.api.errors import ApiError
from threadcast.api.schemas import FORUM_NAME, ErrorOut
from threadcast.stats import query
from threadcast.store.objects.base import ObjectStore


class TopThread(BaseModel):
    rank: int = Field(description="1 is the thread with the most posts.")
    thread_id: int
    posts: int


class StatsWindow(BaseModel):
    """One minute of a forum, as the stats topology wrote it (and published it on channel
    `stats:{forum}` as a `stats.window` message)."""

    window_start: datetime
    window_end: datetime
    forum: str
    posts: int
    replies: int
    votes: int
    active_threads: int
    unique_authors: int
    late_events: int = Field(description="Events that came after their window had ended (by the newer events of their log partition) and still counted, within the allowed lateness.")
    latency_count: int = Field(description="Deliveries measured for the latency figures.")
    latency_p50_ms: float | None
    latency_p90_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    top_threads: list[TopThread] = Field(description="The window's own top threads by posts.")


class ForumStatsOut(BaseModel):
    forum: str
    since: datetime = Field(description="Windows starting at this moment or later are included.")
    windows: list[StatsWindow] = Field(description="Oldest first; empty for a forum without stats.")
    top_threads: list[TopThread] = Field(description="The threads with the most posts over those windows.")


def build_stats_router(store: ObjectStore) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["stats"], responses={code: {"model": ErrorOut} for code in (422, 503)})

    @router.get("/stats/{forum}", response_model=ForumStatsOut)
    async def forum_stats(
        forum: Annotated[str, Path(pattern=FORUM_NAME)],
        since: Annotated[str, Query(description="How far back: 30m, 1h, 2d (s, m, h, d, w).")] = "1h",
    ) -> ForumStatsOut:
        """The forum's minute windows since a while ago, and its top threads over them."""
        try:
            cutoff = query.parse_since(since)
        except ValueError as exc:
            raise ApiError(422, "invalid_since", str(exc)) from None
        try:
            windows, top = await asyncio.to_thread(query.forum_stats, store, forum, cutoff)
        except query.StoreUnreadable as exc:
            raise ApiError(503, "stats_unavailable", str(exc)) from None
        return ForumStatsOut(
            forum=forum,
            since=cutoff,
            windows=[StatsWindow.model_validate(window) for window in windows],
            top_threads=[TopThread.model_validate(row) for row in top],
        )

    return router
