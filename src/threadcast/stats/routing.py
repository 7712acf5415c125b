"""Which tasks of a bolt receive a tuple, per grouping.

Fields grouping hashes the grouping fields' values with CRC-32 (stable across processes and
runs, unlike Python's salted `hash`), so one forum always goes to the same task of a given
parallelism, replay or not.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any

from threadcast.stats.topology import Fields, Grouping

Chooser = Callable[[Sequence[Any]], range | list[int]]
"""Values -> the indexes (0 .. parallelism-1) of the target tasks."""


def stable_hash(values: Sequence[Any]) -> int:
    return zlib.crc32("\x1f".join(map(str, values)).encode())


def chooser(grouping: Grouping, fields: Fields, parallelism: int) -> Chooser:
    if grouping.kind == "all":
        every = range(parallelism)
        return lambda _values: every
    if grouping.kind == "global" or parallelism == 1:
        first = [0]
        return lambda _values: first
    if grouping.kind == "fields":
        positions = [fields.index[name] for name in grouping.fields]
        if len(positions) == 1:
            [position] = positions
            return lambda values: [zlib.crc32(str(values[position]).encode()) % parallelism]
        return lambda values: [stable_hash([values[p] for p in positions]) % parallelism]
    if grouping.kind == "shuffle":
        turn = [0]

        def round_robin(_values: Sequence[Any]) -> list[int]:
            turn[0] = (turn[0] + 1) % parallelism
            return [turn[0]]

        return round_robin
    raise ValueError(f"unknown grouping {grouping.kind!r}")
