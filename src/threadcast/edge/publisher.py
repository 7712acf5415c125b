"""The publisher side of a push edge: what services use to put a message on a channel.

Implementations: the embedded edge's hub (in process), an HTTP publisher that posts to an
edge's `/pub/{channel}` location (a remote embedded edge, or nginx + Nchan).
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class EdgeError(Exception):
    """A publish was not accepted; the caller should retry (the job is not acked)."""


class EdgePublisher(ABC):
    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the edge is unreachable (readiness)."""

    @abstractmethod
    async def publish(self, channel: str, data: bytes, *, message_id: str) -> None:
        """Append `data` to `channel`'s buffer and deliver it to its subscribers. Returns once
        the edge accepted it; raises `EdgeError` otherwise. `message_id` is the stable id of
        the message: an edge that can, drops a second publish of an id still in the buffer."""
