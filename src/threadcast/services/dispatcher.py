"""Dispatcher: reads the event log as group `realtime` and turns each event into one
`realtime.format` job. Offsets are committed only after the jobs were published."""

from __future__ import annotations

import asyncio

import structlog

from threadcast.bus.log import EventLog, Record
from threadcast.bus.queue import WorkQueue
from threadcast.events import decode_event
from threadcast.metrics import JOBS_DISPATCHED

GROUP = "realtime"
log = structlog.get_logger("dispatcher")


def event_id_of(record: Record) -> str:
    return record.headers.get("event_id") or decode_event(record.value).event_id


async def run_dispatcher(event_log: EventLog, queue: WorkQueue, topic: str, job_queue: str, stop: asyncio.Event) -> None:
    consumer = event_log.consumer(topic, GROUP)
    try:
        while not stop.is_set():
            try:
                records = await consumer.poll(max_records=500, timeout=0.5)
                for record in records:
                    await queue.publish(job_queue, record.value, message_id=event_id_of(record))
                if records:
                    await consumer.commit()
                    JOBS_DISPATCHED.inc(len(records))
            except Exception:
                log.exception("dispatch failed, retrying")
                await asyncio.sleep(1.0)
    finally:
        await consumer.close()
