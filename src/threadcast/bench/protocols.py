"""What the load clients read: EventSource events, `ws+meta.nchan` frames, and the post id
inside a push message (`{"id", "type", "channel", "ts", "seq", "data": {"id": <post id>, ...}}`)."""

from __future__ import annotations

import orjson


class ProtocolError(Exception):
    """A message the bench cannot read a post id from."""


class SseParser:
    """Incremental EventSource parsing: `feed` returns the data of each event the new bytes
    complete (several `data:` lines joined by LF). Comments (`: hi`, `: ping`) and events
    without data yield nothing; ids are not needed to measure."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[bytes]:
        blocks = (self._pending + data.replace(b"\r\n", b"\n")).split(b"\n\n")
        self._pending = blocks.pop()
        events = []
        for block in blocks:
            lines = [line[5:].removeprefix(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
            if lines:
                events.append(b"\n".join(lines))
        return events


def meta_frame_payload(frame: bytes) -> bytes:
    """The payload of a `ws+meta.nchan` frame: header lines (`id: ...`), a blank line, the data."""
    head, sep, payload = frame.partition(b"\n\n")
    if not sep:
        raise ProtocolError(f"a ws+meta frame without a blank line: {frame[:60]!r}")
    return payload


def prime_message(channel: str, round_: int) -> bytes:
    """A message the bench publishes on a channel to learn who is subscribed: post id
    `-round_` (0 or less), which subscribers count as primed, never as a receipt."""
    return orjson.dumps(
        {
            "id": f"bench-prime-{round_}",
            "type": "bench.prime",
            "channel": channel,
            "ts": 0,
            "seq": 0,
            "data": {"id": -round_},
        }
    )


def post_id(payload: bytes) -> int:
    """The post id a push message carries."""
    try:
        return int(orjson.loads(payload)["data"]["id"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"not a push message with a post id: {payload[:60]!r}") from exc
