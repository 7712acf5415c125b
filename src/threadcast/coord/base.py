"""The coordination interface, shaped after ZooKeeper: what keeps threadcast's processes in sync.

- **Registry.** A process registers ephemeral members (`register(role, info)`); a member
  disappears when it is closed, when its process dies or when its session expires. Anyone can
  list a role's members or watch them change (the formatter finds every push edge this way).
- **Live configuration.** One typed tree (`LiveConfig`), changed with `set_config(path, value)`
  (validated whole), read with `get_config()` and watched with `watch_config()`.
- **Leader election.** `leader(duty)` is a candidacy: at most one candidate of a duty holds a
  `Term` at a time. Terms carry an epoch that grows strictly from one term to the next (a
  fencing token), an event set when the term ends, and `check()`, which asks the backend whether
  the term still holds. `Leadership.run(duty)` performs a duty in every term won and stops it as
  soon as the term ends.
- **Locks.** `lock(name)` holds a named lock for the body of an `async with` (a candidacy that
  withdraws once it is done), fenced by its own epochs.

Sessions: every coordinator has one session with its backend. When the backend stops answering,
the session is *suspended*: every term ends at once (leader duties pause), well before the
session expires for the others (after `session_timeout`), so a duty stops before another
process can start it. When the session comes back the candidacies run for election again (a
new term, a new epoch); when it had expired (*lost*), the backend first re-registers its
members. Each step is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import structlog
from msgspec import Struct

from threadcast import __version__
from threadcast.coord.errors import BackendUnavailable, CoordinationError, NotLeaderError
from threadcast.coord.live_config import ConfigUpdate, LiveConfig, changed_paths, type_at, with_value

log = structlog.get_logger("threadcast.coord")

LEADERS = "leaders"
LOCKS = "locks"
"""The two kinds of candidacy: a leader runs a duty as long as it can, a lock is released."""

CAMPAIGN_RETRY = 1.0
"""Seconds a candidacy waits after an unexpected error before it runs again."""


def check_name(what: str, name: str) -> None:
    """Roles, duties and lock names become znode names: not empty, no '/'."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"a {what} name is not empty, not . or .., and has no '/': {name!r}")


class SessionState(enum.Enum):
    CONNECTED = "connected"
    SUSPENDED = "suspended"
    """The backend does not answer; the session may still be alive there."""
    LOST = "lost"
    """The session expired: its members and candidacies are gone from the backend."""


class MemberInfo(Struct, frozen=True, kw_only=True):
    """What a member says about itself."""

    host: str
    pid: int
    started_at: float
    """Seconds since the epoch."""
    version: str = ""
    port: int = 0
    url: str = ""
    """Where the member is reached (for a push edge: the base URL it takes publishes on)."""
    health_url: str = ""

    @classmethod
    def this_process(cls, *, port: int = 0, url: str = "", health_url: str = "") -> MemberInfo:
        return cls(
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=time.time(),
            version=__version__,
            port=port,
            url=url,
            health_url=health_url,
        )


class Member(Struct, frozen=True):
    id: str
    """Unique among the members of the backend; ordered by registration within a role."""
    role: str
    info: MemberInfo


class Registration:
    """A member registered by this process, until `close()`. After a lost session the backend
    registers it again, under a new `id`."""

    def __init__(self, coordinator: Coordinator, role: str, info: MemberInfo, member_id: str) -> None:
        self.role = role
        self.info = info
        self.id = member_id
        self.closed = False
        self._coordinator = coordinator

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self._coordinator._deregister(self)

    async def __aenter__(self) -> Registration:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Term:
    """One period of leadership (or of holding a lock)."""

    def __init__(self, duty: str, epoch: int, verify: Callable[[], Awaitable[bool]]) -> None:
        self.duty = duty
        self.epoch = epoch
        """The fencing token: greater than the epoch of every earlier term of this duty."""
        self.lost = asyncio.Event()
        """Set when the term ends; never cleared."""
        self.reason = ""
        """Why the term ended."""
        self._verify = verify

    @property
    def active(self) -> bool:
        return not self.lost.is_set()

    def end(self, reason: str) -> None:
        if self.active:
            self.reason = reason
            self.lost.set()
            log.warning("leadership ended", duty=self.duty, epoch=self.epoch, reason=reason)

    async def check(self) -> None:
        """Raise `NotLeaderError` unless the backend still names this term's holder (a round
        trip: call it before an action that must never happen twice)."""
        if self.active:
            try:
                holds = await self._verify()
            except Exception as exc:
                self.end(f"cannot confirm the term: {type(exc).__name__}: {exc}")
            else:
                if not holds:
                    self.end("the backend names another holder")
        if not self.active:
            raise NotLeaderError(f"term {self.epoch} of {self.duty!r} is over: {self.reason}")


class Leadership(ABC):
    """A candidacy for a duty. `start()` (or `async with`) enters the election, `elected()`
    waits for a term, `close()` resigns and withdraws. After a term ends (its session was
    suspended, the backend named another holder) the candidacy runs again."""

    def __init__(self, coordinator: Coordinator, kind: str, name: str) -> None:
        check_name(kind.rstrip("s"), name)
        self.kind = kind
        self.name = name
        self.term: Term | None = None
        """The current or the last term."""
        self._coordinator = coordinator
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._changed = asyncio.Event()

    @property
    def is_leader(self) -> bool:
        return self.term is not None and self.term.active

    @property
    def epoch(self) -> int | None:
        """The current term's epoch, None while not leader."""
        return self.term.epoch if self.term is not None and self.term.active else None

    async def start(self) -> None:
        if self._closed:
            raise CoordinationError(f"the candidacy for {self.name!r} is closed")
        if self._task is None:
            self._coordinator._candidacies.add(self)
            self._task = asyncio.create_task(self._campaign_forever(), name=f"coord-{self.kind}-{self.name}")

    async def _campaign_forever(self) -> None:
        while True:
            try:
                await self._campaign()
            except asyncio.CancelledError:
                raise
            except BackendUnavailable as exc:
                log.info(
                    "candidacy interrupted; running again once connected",
                    kind=self.kind,
                    name=self.name,
                    error=str(exc),
                )
                self.end_term("the backend did not answer")
                await self._coordinator.connected()
            except Exception:
                log.exception("candidacy failed; running again", kind=self.kind, name=self.name)
                self.end_term("the candidacy failed")
                await asyncio.sleep(CAMPAIGN_RETRY)

    @abstractmethod
    async def _campaign(self) -> None:
        """Run for election until cancelled: wait to win, `_begin_term`, wait for the term to
        end, give up what the term held, run again."""

    @abstractmethod
    async def _withdraw(self) -> None:
        """Remove this candidacy from the backend (the campaign task is stopped)."""

    def _begin_term(self, epoch: int, verify: Callable[[], Awaitable[bool]]) -> Term:
        """A new term, unless the session was suspended while the backend answered."""
        term = self.term = Term(self.name, epoch, verify)
        if self._coordinator.state is not SessionState.CONNECTED:
            term.end(f"session {self._coordinator.state.value}")
            return term
        log.info("leadership won", kind=self.kind, duty=self.name, epoch=epoch)
        self._changed.set()
        self._changed = asyncio.Event()
        return term

    def end_term(self, reason: str) -> None:
        if self.term is not None:
            self.term.end(reason)

    async def elected(self) -> Term:
        """The current term, once this candidacy holds one."""
        await self.start()
        while not self.is_leader:
            if self._closed:
                raise CoordinationError(f"the candidacy for {self.name!r} is closed")
            await self._changed.wait()
        assert self.term is not None
        return self.term

    async def close(self) -> None:
        """End the term (if any) and withdraw from the election."""
        if self._closed:
            return
        self._closed = True
        self.end_term("resigned")
        self._changed.set()
        self._coordinator._candidacies.discard(self)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            await self._withdraw()

    async def run(self, duty: Callable[[Term], Coroutine[Any, Any, None]]) -> None:
        """Perform `duty(term)` in every term won, until `duty` returns (or raises anything but
        `NotLeaderError`, which `term.check()` raises once the term is over, and a fence raises
        for an epoch older than one it saw: that ends the term). When a term ends,
        `duty` is cancelled and awaited before the next term is sought; cancelling `run` cancels
        and awaits `duty` too, so closing the candidacy after `run` never lets another holder
        start while `duty` still runs."""
        while True:
            term = await self.elected()
            task = asyncio.create_task(duty(term), name=f"duty-{self.name}-{term.epoch}")
            ended = asyncio.create_task(term.lost.wait())
            try:
                await asyncio.wait({task, ended}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ended.cancel()
                if not task.done():
                    log.warning("stopping leader duty", duty=self.name, epoch=term.epoch, reason=term.reason)
                    await _cancel_and_wait(task)
                    log.info("leader duty stopped", duty=self.name, epoch=term.epoch)
            if task.cancelled():
                continue
            if isinstance(error := task.exception(), NotLeaderError):
                # The duty found the term over (a fence ahead of its epoch) even if the backend
                # still names this candidate: end the term, so that the next one has a new epoch.
                term.end(f"the duty found the term over: {error}")
                log.warning(
                    "leader duty stopped: the term is over", duty=self.name, epoch=term.epoch, reason=term.reason
                )
                continue
            task.result()
            return

    async def __aenter__(self) -> Leadership:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it finished, even if the caller is cancelled meanwhile
    (then re-raise that cancellation)."""
    task.cancel()
    interrupted = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            interrupted = True
    if interrupted:
        raise asyncio.CancelledError


class Coordinator(ABC):
    """A session with a coordination backend. `start()` before use; `close()` removes this
    process's members and candidacies at once."""

    def __init__(self, *, session_timeout: float, defaults: LiveConfig | None) -> None:
        if session_timeout <= 0:
            raise ValueError("session_timeout must be positive")
        self.session_timeout = session_timeout
        """After this long without hearing from a process, the backend drops its session."""
        self.defaults = defaults or LiveConfig()
        """The live configuration while none is stored."""
        self.state = SessionState.SUSPENDED
        self._connected_before = False
        self._state_changed = asyncio.Event()
        self._candidacies: set[Leadership] = set()

    # --- lifecycle -----------------------------------------------------------------------

    @abstractmethod
    async def start(self) -> None:
        """Connect and open a session. Idempotent."""

    @abstractmethod
    async def close(self) -> None:
        """Resign every candidacy, remove every member, end the session."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the backend does not answer (readiness)."""

    # --- registry ------------------------------------------------------------------------

    @abstractmethod
    async def register(self, role: str, info: MemberInfo) -> Registration:
        """Add an ephemeral member of `role`; it lasts until closed or until this session ends."""

    @abstractmethod
    async def _deregister(self, registration: Registration) -> None: ...

    @abstractmethod
    async def roles(self) -> list[str]:
        """The roles that have live members, sorted."""

    @abstractmethod
    async def members(self, role: str) -> list[Member]:
        """The live members of `role`, in registration order."""

    @abstractmethod
    def watch_members(self, role: str) -> AsyncGenerator[list[Member], None]:
        """The members of `role` now, then again after every change (close the iterator with
        `contextlib.aclosing` to stop watching)."""

    # --- live configuration --------------------------------------------------------------

    @abstractmethod
    async def _read_config(self) -> tuple[int, LiveConfig]:
        """(version, tree): version 0 and `defaults` while none is stored."""

    @abstractmethod
    async def _update_config(self, change: Callable[[LiveConfig], LiveConfig]) -> LiveConfig:
        """Replace the tree by `change(tree)` atomically (retrying on a concurrent change)."""

    @abstractmethod
    def _config_versions(self) -> AsyncGenerator[tuple[int, LiveConfig], None]:
        """(version, tree) now and after each change; may repeat a version."""

    async def get_config(self) -> LiveConfig:
        return (await self._read_config())[1]

    async def set_config(self, path: str, value: Any) -> LiveConfig:
        """Set one value (raises `ConfigError` for an unknown path or an invalid value);
        returns the new tree."""
        type_at(path)
        updated = await self._update_config(lambda current: with_value(current, path, value))
        log.info("live configuration set", path=path, value=value)
        return updated

    async def watch_config(self) -> AsyncGenerator[ConfigUpdate, None]:
        """The tree now, then every change (within a second), with the paths that changed."""
        previous: tuple[int, LiveConfig] | None = None
        async with contextlib.aclosing(self._config_versions()) as versions:
            async for version, config in versions:
                if previous is None:
                    yield ConfigUpdate(version, config, ())
                elif version != previous[0]:
                    changed = changed_paths(previous[1], config)
                    if changed:
                        yield ConfigUpdate(version, config, changed)
                previous = (version, config)

    # --- leader election and locks -------------------------------------------------------

    @abstractmethod
    def _candidacy(self, kind: str, name: str) -> Leadership: ...

    def leader(self, duty: str) -> Leadership:
        """A candidacy for `duty` (not started: use `async with` or `start()`)."""
        return self._candidacy(LEADERS, duty)

    @contextlib.asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[Term]:
        """Hold the lock `name` for the body; the term's `lost` event says if it was lost
        meanwhile (its session was suspended)."""
        candidacy = self._candidacy(LOCKS, name)
        try:
            yield await candidacy.elected()
        finally:
            await candidacy.close()

    # --- session state -------------------------------------------------------------------

    def _set_state(self, state: SessionState, **detail: Any) -> None:
        """Record a session change: a suspended or lost session ends every term at once."""
        previous, self.state = self.state, state
        backend = type(self).__name__
        if state is SessionState.SUSPENDED:
            log.warning("coordination session suspended; pausing leader duties", backend=backend, **detail)
        elif state is SessionState.LOST:
            log.error("coordination session lost; its members and candidacies are gone", backend=backend, **detail)
        elif previous is not SessionState.CONNECTED and self._connected_before:
            log.info("coordination session reconnected; resuming leader duties", backend=backend, **detail)
        elif previous is not SessionState.CONNECTED:
            log.info("coordination session connected", backend=backend, **detail)
            self._connected_before = True
        if state is not SessionState.CONNECTED:
            for candidacy in list(self._candidacies):
                candidacy.end_term(f"session {state.value}")
        self._state_changed.set()
        self._state_changed = asyncio.Event()

    def state_changed(self) -> asyncio.Event:
        """Set at the next session change: take it before looking at `state`, then wait."""
        return self._state_changed

    async def connected(self) -> None:
        """Return once the session is connected."""
        while self.state is not SessionState.CONNECTED:
            await self.state_changed().wait()

    async def _close_candidacies(self) -> None:
        for candidacy in list(self._candidacies):
            await candidacy.close()
