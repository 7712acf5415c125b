"""Open an object store from its URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from threadcast.store.objects.base import ObjectStore
from threadcast.store.objects.local import FolderStore


def open_object_store(url: str, default_root: Path) -> ObjectStore:
    """`""` -> a folder at `default_root`; `file:///PATH` or a plain path -> that folder;
    `s3://BUCKET[/PREFIX][?endpoint=...&region=...]` -> S3 (see `threadcast.store.objects.s3`)."""
    if not url:
        return FolderStore(default_root)
    parts = urlsplit(url)
    if parts.scheme == "s3":
        from threadcast.store.objects.s3 import S3Store

        return S3Store(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or parts.query:
            raise ValueError(f"expected file:///ABSOLUTE/PATH, got {url!r}")
        return FolderStore(Path(unquote(parts.path)))
    if not parts.scheme:
        return FolderStore(Path(url))
    raise ValueError(
        f"unknown object store URL {url!r}: use a folder (file:///PATH or a path) or s3://BUCKET/PREFIX?endpoint=..."
    )
