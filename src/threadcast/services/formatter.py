"""Formatter: turns one event into push messages and publishes them to every channel it
concerns. The job is acked only after every publish succeeded; a redelivered job publishes
messages with the same ids, which the edge and the client drop as duplicates."""

from __future__ import annotations

import asyncio
import random
import time

import msgspec
import structlog

from threadcast.bus.queue import Delivery, WorkQueue
from threadcast.edge.publisher import EdgeError, EdgePublisher
from threadcast.events import Event, PushMessage, decode_event, encode
from threadcast.metrics import JOBS_FORMATTED, PUBLISH_LATENCY

log = structlog.get_logger("formatter")


def channels_for(event: Event) -> list[str]:
    channels = [f"thread:{event.thread_id}", f"forum:{event.forum}"]
    post_id = event.payload.get("id")
    if post_id is not None:
        channels.append(f"post:{post_id}")
    return channels


def render(event: Event) -> list[tuple[str, bytes]]:
    """(channel, message bytes) for each channel of the event."""
    seq = int(event.payload.get("seq", 0))
    return [
        (channel, encode(PushMessage(id=event.event_id, type=event.type, channel=channel, ts=event.ts, seq=seq, data=event.payload)))
        for channel in channels_for(event)
    ]


def retry_delay(attempt: int) -> float:
    """Exponential backoff with full jitter: up to 0.2 s, 0.4 s, 0.8 s ... capped at 30 s."""
    return random.uniform(0, min(30.0, 0.2 * 2 ** (attempt - 1)))


async def format_job(delivery: Delivery, edge: EdgePublisher) -> None:
    try:
        event = decode_event(delivery.body)
    except msgspec.DecodeError as exc:
        await delivery.reject(f"undecodable event: {exc}")
        return
    try:
        for channel, message in render(event):
            await edge.publish(channel, message, message_id=event.event_id)
    except EdgeError as exc:
        log.warning("publish failed", event_id=event.event_id, attempt=delivery.attempt, error=str(exc))
        await delivery.nack(str(exc), delay=retry_delay(delivery.attempt))
        return
    await delivery.ack()
    JOBS_FORMATTED.inc()
    PUBLISH_LATENCY.observe(max(0.0, time.time() - event.ts))


async def run_formatter(queue: WorkQueue, job_queue: str, edge: EdgePublisher, stop: asyncio.Event) -> None:
    """Format jobs until `stop` is set; the job in hand is finished first."""
    consumer = queue.consume(job_queue, prefetch=64)
    deliveries = aiter(consumer)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while True:
            receiving = asyncio.ensure_future(anext(deliveries))
            await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not receiving.done():
                receiving.cancel()
                break
            try:
                delivery = receiving.result()
            except StopAsyncIteration:
                break
            await format_job(delivery, edge)
    finally:
        stopping.cancel()
        await consumer.close()
