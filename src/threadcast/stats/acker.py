"""The embedded runner's acker: tracks each spout tuple's tree of descendants.

Storm's acker XORs random edge ids; in one process a reference count per spout tuple (root)
says the same thing exactly: emitting a tuple anchored to a root adds one, acking a tuple that
descends from it takes one away, and the root is done at zero. Emits are counted when they are
made, before the input is acked, so a tree never looks done while a child is on its way.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(slots=True)
class _Tree:
    pending: int
    started: float
    owner: int
    """The spout task that emitted the root."""
    msg_id: object


Settle = Callable[[int, object], None]
"""Called with (spout task, message id)."""


class Acker:
    def __init__(self, on_done: Settle, on_failed: Settle, clock: Callable[[], float] = time.monotonic) -> None:
        self._trees: dict[int, _Tree] = {}
        """In creation order, so the oldest come first."""
        self._per_owner: dict[int, int] = {}
        self._ids = itertools.count(1)
        self._on_done = on_done
        self._on_failed = on_failed
        self._clock = clock

    def root(self, owner: int, msg_id: object) -> int:
        """A new spout tuple with no descendants yet; `emitted` counts its copies."""
        root = next(self._ids)
        self._trees[root] = _Tree(0, self._clock(), owner, msg_id)
        self._per_owner[owner] = self._per_owner.get(owner, 0) + 1
        return root

    def emitted(self, roots: Iterable[int], copies: int = 1) -> None:
        for root in roots:
            tree = self._trees.get(root)
            if tree is not None:
                tree.pending += copies

    def started(self, root: int) -> None:
        """The spout finished emitting `root`: with no copy sent anywhere, it is done."""
        tree = self._trees.get(root)
        if tree is not None and tree.pending == 0:
            del self._trees[root]
            self._settle(tree, self._on_done)

    def acked(self, roots: Iterable[int]) -> None:
        for root in roots:
            tree = self._trees.get(root)
            if tree is None:
                continue  # failed or timed out before: its replay is a new root
            tree.pending -= 1
            if tree.pending == 0:
                del self._trees[root]
                self._settle(tree, self._on_done)

    def failed(self, roots: Iterable[int]) -> None:
        for root in roots:
            tree = self._trees.pop(root, None)
            if tree is not None:
                self._settle(tree, self._on_failed)

    def expire(self, timeout: float) -> int:
        """Fail the roots older than `timeout` seconds; return how many."""
        deadline = self._clock() - timeout
        old = list(itertools.takewhile(lambda item: item[1].started < deadline, self._trees.items()))
        self.failed(root for root, _ in old)
        return len(old)

    def pending(self, owner: int) -> int:
        """Spout tuples of `owner` not done yet."""
        return self._per_owner.get(owner, 0)

    def _settle(self, tree: _Tree, callback: Settle) -> None:
        self._per_owner[tree.owner] -= 1
        callback(tree.owner, tree.msg_id)

    def __len__(self) -> int:
        return len(self._trees)
