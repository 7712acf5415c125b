"""Wire formats: events on the log, jobs on the work queue, messages on the push edge."""

from __future__ import annotations

from typing import Any

import msgspec


class Event(msgspec.Struct, frozen=True):
    """One fact, as written to the outbox and carried by the event log."""

    event_id: str
    type: str
    thread_id: int
    forum: str
    ts: float
    version: int
    payload: dict[str, Any]


class PushMessage(msgspec.Struct, frozen=True):
    """What a browser receives on a channel. `id` is the event id (stable across
    redeliveries), `seq` the post's per-thread sequence number (holes mean loss)."""

    id: str
    type: str
    channel: str
    ts: float
    seq: int
    data: dict[str, Any]


class Delivery(msgspec.Struct, frozen=True):
    """A delivery report: the formatter published the event's messages on the push edge.
    Appended to the log topic `deliveries` (key: the thread id) for the stats' latency."""

    event_id: str
    forum: str
    thread_id: int
    created_ts: float
    """The event's creation time (`Event.ts`)."""
    published_ts: float
    """When the edge accepted the event's last message."""


_event_decoder = msgspec.json.Decoder(Event)
_push_decoder = msgspec.json.Decoder(PushMessage)
_delivery_decoder = msgspec.json.Decoder(Delivery)
encode = msgspec.json.encode


def decode_event(raw: bytes | str) -> Event:
    return _event_decoder.decode(raw)


def decode_delivery(raw: bytes | str) -> Delivery:
    return _delivery_decoder.decode(raw)


def decode_push(raw: bytes) -> PushMessage:
    return _push_decoder.decode(raw)
