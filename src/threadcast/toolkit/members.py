"""The live members of one role, as a process sees them: a single `watch_members` task and the
components that follow it (`on_change`). The formatter's edge publisher follows role `edge`."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from threadcast.coord import Coordinator, Member
from threadcast.toolkit.watched import Watched


class MemberView(Watched[list[Member]]):
    """`current` is the newest list of members of `role` (empty until read)."""

    def __init__(self, coord: Coordinator, role: str) -> None:
        super().__init__([])
        self.role = role
        self.what = f"members of {role}"
        self._coord = coord

    def updates(self) -> AsyncGenerator[list[Member], None]:
        return self._coord.watch_members(self.role)
