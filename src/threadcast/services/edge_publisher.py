"""Publishing to the push edge, as a pipeline stage that any service can reuse.

The edge publisher is a stage rather than a service of its own: a format job is acked only
once every one of its messages was accepted by every edge (end-to-end ack), which holds
when the publishes run inside the job's handler. A separate service would need a second
durable queue hop per message (more latency, more broker traffic) for no added guarantee.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from threadcast.toolkit import Context


@dataclass(frozen=True, slots=True)
class Push:
    """One message for one channel."""

    channel: str
    data: bytes


class Outgoing(Protocol):
    """Whatever a stage before `publish_to_edge` produced: it carries the pushes."""

    @property
    def pushes(self) -> Sequence[Push]: ...


O = TypeVar("O", bound=Outgoing)


async def publish_to_edge(outgoing: O, ctx: Context) -> O:
    """Publish each push, in order, on the edge (on every edge, with a multi-edge publisher).

    The message id is the event being handled, so a redelivered job publishes the same ids
    again, and the edge drops the ones it still buffers. An edge that refuses raises
    `EdgeError`: the toolkit retries the job with backoff and acks it only after every
    publish was accepted. Returns `outgoing` for the stages after it."""
    for push in outgoing.pushes:
        await ctx.push(push.channel, push.data)
    return outgoing
