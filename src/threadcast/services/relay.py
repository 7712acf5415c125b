"""Outbox relay: moves committed events from the database outbox to the event log, in order.

Crash-safe: rows are deleted only after the log acknowledged them, so a crash in between
appends them again (same event ids; consumers skip duplicates). The API process wakes the
relay after each commit (`runner.wake("relay", "relay")`); commits made by other processes
are picked up within `poll_interval`. Run one relay per database.
"""

from __future__ import annotations

import itertools

from threadcast.bus.log import EventLog, Message
from threadcast.metrics import EVENTS_RELAYED
from threadcast.store.repository import Repository
from threadcast.toolkit import EVENT_ID_HEADER, Context, Service, setting

BATCH = 500

service = Service("relay", description="moves committed events from the database outbox to the event log, in order")


@service.on_startup
async def open_outbox(ctx: Context) -> None:
    ctx.state.repo = Repository(ctx.database, ctx.settings.events_topic)
    await ctx.log.create_topic(ctx.settings.events_topic, ctx.settings.log_partitions)


async def relay_once(repo: Repository, event_log: EventLog, batch: int = BATCH) -> int:
    """Relay one batch; return how many events moved."""
    rows = await repo.outbox_batch(batch)
    if not rows:
        return 0
    for topic, group in itertools.groupby(rows, key=lambda row: row.topic):
        messages = [Message(value=r.payload, key=r.key, headers={EVENT_ID_HEADER: r.event_id}) for r in group]
        await event_log.append(topic, messages)
    await repo.outbox_delete([row.id for row in rows])
    EVENTS_RELAYED.inc(len(rows))
    return len(rows)


@service.timer(every=setting("poll_interval"), run_at_start=True)
async def relay(ctx: Context) -> None:
    """Relay until the outbox is empty."""
    while await relay_once(ctx.state.repo, ctx.log):
        pass
