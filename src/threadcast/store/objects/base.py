"""The object store interface, shaped after S3: flat keys with `/` as a separator by
convention, whole objects written and read at once, listing by prefix.

Keys are relative (`stats/forum/dt=2026-11-29/hour=06/minute=45/part-demo.parquet`); a
backend adds its own root (a folder, or a bucket and a prefix). A put replaces the object
whole: readers see the old object or the new one, never a mix, so writers can be idempotent
by writing the same key again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class ObjectNotFound(KeyError):
    """No object has that key."""


class InvalidKey(ValueError):
    """The key is empty, absolute, or climbs out of the store (`..`)."""


def check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise InvalidKey(f"invalid object key {key!r}")
    return key


class ObjectStore(ABC):
    url: str
    """Where the store is, as configured (`file:///...` or `s3://bucket/prefix?...`)."""

    @abstractmethod
    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Write the object whole, replacing any object with that key."""

    @abstractmethod
    async def get(self, key: str) -> bytes:
        """The object's bytes; `ObjectNotFound` when there is none."""

    @abstractmethod
    async def exists(self, key: str) -> bool: ...

    @abstractmethod
    async def list(self, prefix: str = "") -> list[str]:
        """Every key that starts with `prefix`, sorted."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove the object; removing a missing object is not an error."""

    @abstractmethod
    def location(self, key_or_glob: str) -> str:
        """Where DuckDB reads `key_or_glob` (a key, or a pattern such as `stats/forum/**/*.parquet`):
        a local path, or an `s3://` URL."""

    async def start(self) -> None:
        """Connect (and create what the store needs, such as its bucket); idempotent. Every
        other method starts the store first when it is not started yet."""

    async def ping(self) -> None:
        """Raise when the store cannot be read (one small request)."""
        await self.exists("threadcast-ping")

    async def close(self) -> None:
        """Release connections."""
