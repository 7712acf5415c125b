"""Votes on posts under /api/v1: one vote per post and voter, set (not toggled) by each request."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Depends, Response

from threadcast.api.rate_limits import rate_limit
from threadcast.api.routes import ERRORS, writable
from threadcast.api.schemas import VoteIn, VoteOut
from threadcast.coord import LiveConfig
from threadcast.store.repository import Repository


def build_vote_router(repo: Repository, live: Callable[[], LiveConfig], on_vote: Callable[[], None]) -> APIRouter:
    """`on_vote` is called after a vote change committed (it wakes the outbox relay)."""
    router = APIRouter(prefix="/api/v1", responses=ERRORS, dependencies=[Depends(writable(live))])

    @router.post(
        "/posts/{post_id}/votes",
        status_code=201,
        response_model=VoteOut,
        tags=["votes"],
        dependencies=[rate_limit("votes_per_minute")],
    )
    async def vote(post_id: int, body: VoteIn, response: Response) -> VoteOut:
        """Set `voter`'s vote on the post: 1 up, -1 down, 0 takes it back. 201 when a vote was
        cast where there was none, else 200. The request sets a state, so sending it again
        (a retry) changes nothing and answers 200 with the same body: no Idempotency-Key is needed."""
        result = await repo.vote(post_id, body.voter, body.value)
        if result.changed:
            on_vote()
        if not result.created:
            response.status_code = 200
        return VoteOut.model_validate(result, from_attributes=True)

    return router
