"""Fencing singleton duties by leadership epoch, inside the duty's own database transaction.

`advance_fence` moves the duty's fence to the given epoch unless a newer epoch already acted.
The update (or insert) write-locks the fence row until the transaction ends, so the work of
two leaders never interleaves: a deposed leader waits for the newer leader's transaction,
then finds the fence ahead of it and stops."""

from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from threadcast.coord import NotLeaderError
from threadcast.store.models import Fence


async def advance_fence(session: AsyncSession, duty: str, epoch: int) -> None:
    """In `session`'s transaction: set the fence of `duty` to `epoch`; raise `NotLeaderError`
    when a newer epoch already acted."""
    if await _move(session, duty, epoch):
        return
    newest = await session.scalar(select(Fence.epoch).where(Fence.duty == duty))
    if newest is None:
        try:
            async with session.begin_nested():
                await session.execute(insert(Fence).values(duty=duty, epoch=epoch))
            return
        except IntegrityError:  # another leader inserted it first (PostgreSQL: and committed)
            if await _move(session, duty, epoch):
                return
            newest = await session.scalar(select(Fence.epoch).where(Fence.duty == duty))
    raise NotLeaderError(f"epoch {epoch} of {duty!r} is fenced off: epoch {newest} already acted")


async def _move(session: AsyncSession, duty: str, epoch: int) -> bool:
    """Set the fence to `epoch` unless it is ahead; False also when there is no fence yet."""
    moved = await session.execute(update(Fence).where(Fence.duty == duty, Fence.epoch <= epoch).values(epoch=epoch))
    return moved.rowcount == 1  # type: ignore[attr-defined]


async def check_fence(session: AsyncSession, duty: str, epoch: int) -> None:
    """Raise `NotLeaderError` when a newer epoch than `epoch` already acted; a read, which
    locks nothing (the check that counts is `advance_fence` in the duty's write transaction)."""
    newest = await session.scalar(select(Fence.epoch).where(Fence.duty == duty))
    if newest is not None and newest > epoch:
        raise NotLeaderError(f"epoch {epoch} of {duty!r} is fenced off: epoch {newest} already acted")
