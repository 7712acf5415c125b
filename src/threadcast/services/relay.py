"""Outbox relay: moves committed events from the database outbox to the event log, in order.

A singleton duty: every relay process stands for election (`leader="relay"`) and only the
leader relays. Each batch is read (the oldest rows first), appended to the log, then deleted in
a short write transaction that first advances the relay's fence to the leader's epoch
(`threadcast.store.fences`). No database lock is held while the log is written to, so posts are
never held up by a slow or unavailable log (on SQLite a write transaction locks the whole file).

Order: a batch always starts at the oldest row not yet deleted, and rows are deleted only
after the log acknowledged them, so every event's first copy in the log comes after those of
the events committed before it (per thread: posts of one thread commit one at a time). A
deposed leader checks the fence before appending and is refused at the delete; the most it can
do, if the newer leader starts between its check and its delete, is append one batch again.

Crash-safe: a crash between the append and the delete appends the batch again (same event ids;
consumers skip duplicates). The API process wakes the relay after each commit
(`runner.wake("relay", "relay")`); commits made by other processes are picked up within
`poll_interval`.
"""

from __future__ import annotations

import itertools

from sqlalchemy import delete, select

from threadcast.bus.log import EventLog, Message
from threadcast.metrics import EVENTS_RELAYED
from threadcast.store.db import Database
from threadcast.store.fences import advance_fence, check_fence
from threadcast.store.models import OutboxEvent
from threadcast.toolkit import EVENT_ID_HEADER, Context, Service, setting

BATCH = 500
DUTY = "relay"

service = Service("relay", description="moves committed events from the database outbox to the event log, in order")


@service.on_startup
async def create_topic(ctx: Context) -> None:
    await ctx.log.create_topic(ctx.settings.events_topic, ctx.settings.log_partitions)


async def relay_once(database: Database, event_log: EventLog, epoch: int, batch: int = BATCH) -> int:
    """Relay one batch as the leader of `epoch` (`NotLeaderError` when a newer leader acted);
    return how many events moved."""
    async with database.session() as session:
        await check_fence(session, DUTY, epoch)
        rows = list((await session.scalars(select(OutboxEvent).order_by(OutboxEvent.id).limit(batch))).all())
    if not rows:
        return 0
    for topic, group in itertools.groupby(rows, key=lambda row: row.topic):
        messages = [Message(value=r.payload, key=r.key, headers={EVENT_ID_HEADER: r.event_id}) for r in group]
        await event_log.append(topic, messages)
    async with database.session() as session, session.begin():
        await advance_fence(session, DUTY, epoch)
        await session.execute(delete(OutboxEvent).where(OutboxEvent.id.in_([row.id for row in rows])))
    EVENTS_RELAYED.inc(len(rows))
    return len(rows)


@service.timer(every=setting("poll_interval"), run_at_start=True, leader=DUTY)
async def relay(ctx: Context) -> None:
    """Relay until the outbox is empty."""
    assert ctx.term is not None
    while await relay_once(ctx.database, ctx.log, ctx.term.epoch):
        pass
