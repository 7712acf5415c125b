"""Message bodies: JSON decoded into a typed model with msgspec, or raw bytes."""

from __future__ import annotations

from typing import Any

import msgspec

from threadcast.toolkit.errors import Undecodable


class Codec:
    """Decodes bodies into `model` (a msgspec.Struct, or any type msgspec can decode JSON
    into). With no model, handlers get the raw bytes."""

    def __init__(self, model: Any = None) -> None:
        self.model = model
        self._decoder = None if model is None else msgspec.json.Decoder(model)

    def decode(self, body: bytes) -> Any:
        if self._decoder is None:
            return body
        try:
            return self._decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise Undecodable(f"undecodable as {_name(self.model)}: {exc}") from exc


def encode(value: Any) -> bytes:
    """Bytes as they are; anything else (a Struct, a dict...) as JSON."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return msgspec.json.encode(value)


def _name(model: Any) -> str:
    return getattr(model, "__name__", repr(model))
