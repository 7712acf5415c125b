"""A push edge in memory: keeps what was published, per channel."""

from __future__ import annotations

from dataclasses import dataclass

from threadcast.edge.publisher import EdgePublisher


@dataclass(frozen=True, slots=True)
class Pushed:
    channel: str
    data: bytes
    message_id: str


class MemoryEdge(EdgePublisher):
    """Accepts every publish; a second publish of a message id on a channel is dropped, as
    the interface allows. `pushed` lists the accepted ones in order."""

    def __init__(self) -> None:
        self.pushed: list[Pushed] = []
        self._seen: set[tuple[str, str]] = set()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ping(self) -> None:
        pass

    async def publish(self, channel: str, data: bytes, *, message_id: str) -> None:
        if (channel, message_id) in self._seen:
            return
        self._seen.add((channel, message_id))
        self.pushed.append(Pushed(channel, data, message_id))

    def messages(self, channel: str) -> list[bytes]:
        return [p.data for p in self.pushed if p.channel == channel]
