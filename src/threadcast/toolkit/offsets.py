"""Which log offsets may be committed when records finish out of order."""

from __future__ import annotations


class OffsetTracker:
    """Records of a partition are begun in offset order and may finish in any order. The
    committable position of a partition is its oldest unfinished offset, or one past the
    newest begun offset when all are finished: a commit never skips unfinished work."""

    def __init__(self) -> None:
        self._pending: dict[int, set[int]] = {}
        self._next: dict[int, int] = {}
        self._committed: dict[int, int] = {}

    def begin(self, partition: int, offset: int) -> None:
        self._pending.setdefault(partition, set()).add(offset)
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)

    def finish(self, partition: int, offset: int) -> None:
        self._pending[partition].discard(offset)

    def committable(self) -> dict[int, int]:
        """Per partition, the position to commit, for those that moved since the last commit."""
        positions: dict[int, int] = {}
        for partition, following in self._next.items():
            pending = self._pending[partition]
            position = min(pending) if pending else following
            if position > self._committed.get(partition, -1):
                positions[partition] = position
        return positions

    def committed(self, positions: dict[int, int]) -> None:
        self._committed.update(positions)
