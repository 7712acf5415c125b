"""Outbox relay: moves committed events from the database outbox to the event log, in order.

Crash-safe: rows are deleted only after the log acknowledged them, so a crash in between
appends them again (same event ids; consumers skip duplicates)."""

from __future__ import annotations

import asyncio
import itertools

import structlog

from threadcast.bus.log import EventLog, Message
from threadcast.metrics import EVENTS_RELAYED
from threadcast.store.repository import Repository

log = structlog.get_logger("relay")


async def relay_once(repo: Repository, event_log: EventLog, batch: int = 500) -> int:
    """Relay one batch; return how many events moved."""
    rows = await repo.outbox_batch(batch)
    if not rows:
        return 0
    for topic, group in itertools.groupby(rows, key=lambda row: row.topic):
        messages = [Message(value=r.payload, key=r.key, headers={"event_id": r.event_id}) for r in group]
        await event_log.append(topic, messages)
    await repo.outbox_delete([row.id for row in rows])
    EVENTS_RELAYED.inc(len(rows))
    return len(rows)


async def run_relay(
    repo: Repository,
    event_log: EventLog,
    wakeup: asyncio.Event,
    stop: asyncio.Event,
    poll_interval: float,
) -> None:
    """Relay until `stop` is set. `wakeup` is set by the API after each commit; other
    processes' commits are picked up within `poll_interval`."""
    while not stop.is_set():
        try:
            moved = await relay_once(repo, event_log)
        except Exception:
            log.exception("relay failed, retrying")
            moved = 0
            await asyncio.sleep(1.0)
        if moved:
            continue
        wakeup.clear()
        try:
            await asyncio.wait_for(wakeup.wait(), timeout=poll_interval)
        except TimeoutError:
            pass
