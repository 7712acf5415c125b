"""The inbox: event ids a consumer has processed, so that a redelivery is skipped.

Entries are kept for a time to live and then compacted away; a redelivery older than the
TTL is no longer recognised, so the TTL must exceed the longest redelivery horizon you care
about (retries, dead-letter replays, log replays).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class Inbox(ABC):
    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the storage is unreachable (readiness)."""

    @abstractmethod
    async def seen(self, consumer: str, event_id: str) -> bool:
        """Whether `consumer` recorded `event_id` as processed."""

    @abstractmethod
    async def record(self, consumer: str, event_id: str) -> None:
        """Record `event_id` as processed by `consumer`. Recording twice is harmless."""

    @abstractmethod
    async def compact(self, older_than: float) -> int:
        """Forget entries recorded more than `older_than` seconds ago; return how many."""


async def once(inbox: Inbox, consumer: str, key: str, effect: Callable[[], Awaitable[T]]) -> bool:
    """Run `effect` unless `key` is already recorded for `consumer`, then record it.

    Returns whether `effect` ran. Guarantee: an effect that completed and was recorded never
    runs again for the same key (within the inbox TTL). The record is written *after* the
    effect, so if the process dies between the two, the effect runs again on redelivery: it
    is applied at least once, and exactly once only if the effect itself tolerates a repeat
    (carries an idempotency key the other side checks) or is a database write made in the same
    transaction as the record (see `SqlInbox.transaction`).
    """
    if await inbox.seen(consumer, key):
        return False
    await effect()
    await inbox.record(consumer, key)
    return True


class MemoryInbox(Inbox):
    """An inbox in process memory, for tests and for services that need no durability."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], float] = {}

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ping(self) -> None:
        pass

    async def seen(self, consumer: str, event_id: str) -> bool:
        return (consumer, event_id) in self._entries

    async def record(self, consumer: str, event_id: str) -> None:
        self._entries.setdefault((consumer, event_id), time.time())

    async def compact(self, older_than: float) -> int:
        cutoff = time.time() - older_than
        stale = [entry for entry, at in self._entries.items() if at < cutoff]
        for entry in stale:
            del self._entries[entry]
        return len(stale)
