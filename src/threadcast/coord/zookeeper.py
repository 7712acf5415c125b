"""The coordination backend on Apache ZooKeeper, through kazoo.

Layout, under the URL's chroot (`zk://host:port[,host:port]/CHROOT`):

    /threadcast/members/{role}/m-{uid}-{seq}   ephemeral sequential: one per member, data MemberInfo (JSON)
    /threadcast/config                         persistent: the LiveConfig tree (JSON); its mzxid is the version
    /threadcast/leaders/{duty}/c-{uid}-{seq}   ephemeral sequential: one per candidate; the lowest leads
    /threadcast/locks/{name}/c-{uid}-{seq}     the same, for locks

Election: the candidate whose znode has the lowest sequence number holds the term; the others
each watch the znode just before their own (no herd). The epoch is the sequence number plus
one: every later candidate znode of the duty gets a greater number, so epochs grow strictly.
The parents are persistent and never deleted (their sequence counter would restart).
A znode name carries a random `uid`, so that a create whose answer was lost to a connection
drop is found again instead of left behind.

Sessions: kazoo reports SUSPENDED when the server stops answering for two thirds of the
session timeout, before the server expires the session: every term ends then, so a duty stops
before another candidate can be elected. On CONNECTED the members are checked and created again
where missing (after LOST, the session expired and all were gone), and the candidacies run
again with new znodes, so a term that resumes has a new epoch. kazoo's blocking calls
(connect, close, the watch recipes' first read) run on worker threads; every other call uses
kazoo's asynchronous API, bridged to asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog
from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    BadVersionError,
    ConnectionClosedError,
    ConnectionLoss,
    NodeExistsError,
    NoNodeError,
    OperationTimeoutError,
    SessionExpiredError,
)
from kazoo.interfaces import IAsyncResult
from kazoo.protocol.states import EventType, WatchedEvent, ZnodeStat
from kazoo.recipe.watchers import ChildrenWatch, DataWatch
from kazoo.retry import KazooRetry

from threadcast.coord import live_config
from threadcast.coord.base import (
    Coordinator,
    Leadership,
    Member,
    MemberInfo,
    Registration,
    SessionState,
    Term,
    check_name,
)
from threadcast.coord.errors import BackendUnavailable, ConfigError, CoordinationError
from threadcast.coord.live_config import LiveConfig

log = structlog.get_logger("threadcast.coord")

_UNAVAILABLE = (ConnectionLoss, SessionExpiredError, ConnectionClosedError, OperationTimeoutError)
RETRY_DELAY = 0.1
"""Seconds between two tries of an operation the connection dropped."""


def _sequence(name: str) -> int:
    """The number ZooKeeper appended to a sequential znode's name."""
    return int(name[-10:])


@dataclass
class _Node:
    """An ephemeral sequential znode this process creates: `parent/prefix{sequence}`."""

    parent: str
    data: bytes
    prefix: str = ""
    path: str = ""

    @classmethod
    def new(cls, parent: str, tag: str, data: bytes) -> _Node:
        return cls(parent, data, prefix=f"{tag}-{uuid.uuid4().hex[:12]}-")

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


class ZooKeeperCoordinator(Coordinator):
    def __init__(
        self,
        hosts: str,
        *,
        chroot: str = "",
        session_timeout: float = 10.0,
        connect_timeout: float = 15.0,
        defaults: LiveConfig | None = None,
    ) -> None:
        super().__init__(session_timeout=session_timeout, defaults=defaults)
        self.hosts = hosts
        self.root = f"{chroot.rstrip('/')}/threadcast"
        self.connect_timeout = connect_timeout
        self._client: KazooClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session_id: int | None = None
        self._registrations: dict[Registration, _Node] = {}
        self._restoring: asyncio.Task[None] | None = None
        self._closing = False
        self._start_lock = asyncio.Lock()

    @property
    def client(self) -> KazooClient:
        if self._client is None:
            raise CoordinationError("the ZooKeeper coordinator is not started")
        return self._client

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        async with self._start_lock:
            if self._client is not None:
                return
            self._loop = asyncio.get_running_loop()
            self._closing = False
            client = KazooClient(
                hosts=self.hosts,
                timeout=self.session_timeout,
                connection_retry=KazooRetry(max_tries=-1, delay=0.1, max_delay=1.0),
                command_retry=KazooRetry(max_tries=5, delay=0.1, max_delay=1.0),
            )
            client.add_listener(self._listener)
            self._client = client
            try:
                await asyncio.to_thread(client.start, self.connect_timeout)
                for kind in ("members", "leaders", "locks"):
                    await self._call(client.ensure_path_async(f"{self.root}/{kind}"))
            except BaseException as exc:
                self._closing = True
                await asyncio.to_thread(_stop, client)
                self._client = None
                if isinstance(exc, Exception):
                    raise BackendUnavailable(f"ZooKeeper at {self.hosts}: {type(exc).__name__} {exc}") from exc
                raise

    async def close(self) -> None:
        if self._client is None:
            return
        self._closing = True
        await self._close_candidacies()
        if self._restoring is not None:
            self._restoring.cancel()
            await asyncio.gather(self._restoring, return_exceptions=True)
        for registration in self._registrations:
            registration.closed = True
        self._registrations.clear()
        client, self._client = self._client, None
        await asyncio.to_thread(_stop, client)  # ends the session: its ephemeral znodes go at once

    async def ping(self) -> None:
        await self._call(self.client.exists_async(self.root))

    # --- bridging kazoo to asyncio ---------------------------------------------------------

    async def _call(self, result: IAsyncResult) -> Any:
        """Await a kazoo asynchronous result; a dropped connection raises BackendUnavailable."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def settle(done: IAsyncResult) -> None:
            if future.done():
                return
            try:
                future.set_result(done.get_nowait())
            except _UNAVAILABLE as exc:
                future.set_exception(BackendUnavailable(f"ZooKeeper: {type(exc).__name__}"))
            except Exception as exc:
                future.set_exception(exc)

        result.rawlink(lambda done: self._soon(settle, done))
        return await future

    def _soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` on the event loop, from any thread (nothing once the loop closed)."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(fn, *args)

    def _setter(self, event: asyncio.Event) -> Callable[[WatchedEvent], None]:
        """A kazoo watch that sets `event` (kazoo also fires every watch when the connection drops)."""
        return lambda _: self._soon(event.set)

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking kazoo call on a worker thread; a dropped connection raises
        BackendUnavailable."""
        try:
            return await asyncio.to_thread(fn, *args)
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"ZooKeeper: {type(exc).__name__}") from exc

    async def _children(self, path: str) -> list[str]:
        try:
            names: list[str] = await self._call(self.client.get_children_async(path))
        except NoNodeError:
            return []
        return names

    async def _exists(self, path: str, watch: Callable[[WatchedEvent], None] | None = None) -> ZnodeStat | None:
        return await self._call(self.client.exists_async(path, watch=watch))

    async def _delete(self, path: str) -> None:
        with contextlib.suppress(NoNodeError):
            await self._call(self.client.delete_async(path))

    async def _retrying(self, operation: Callable[[], Any]) -> Any:
        """`await operation()`, tried again once connected each time the connection drops."""
        while True:
            await self.connected()
            try:
                return await operation()
            except BackendUnavailable:
                await asyncio.sleep(RETRY_DELAY)

    async def _mine(self, node: _Node) -> list[str]:
        """The names of the znodes created for `node` (its prefix is unique)."""
        return [name for name in await self._children(node.parent) if name.startswith(node.prefix)]

    async def _remove(self, node: _Node) -> None:
        """Delete `node`, also when its create was sent but never answered."""
        for name in await self._mine(node):
            await self._delete(f"{node.parent}/{name}")

    async def _ensure(self, node: _Node) -> None:
        """Create `node` unless it exists already (a create whose answer was lost)."""

        async def attempt() -> None:
            mine = await self._mine(node)
            if mine:
                node.path = f"{node.parent}/{mine[0]}"
            else:
                node.path = await self._call(
                    self.client.create_async(
                        f"{node.parent}/{node.prefix}", node.data, ephemeral=True, sequence=True, makepath=True
                    )
                )

        await self._retrying(attempt)

    # --- session ---------------------------------------------------------------------------

    def _listener(self, state: str) -> None:
        """kazoo's session listener (its connection thread: must not block)."""
        self._soon(self._on_state, state)

    def _on_state(self, state: str) -> None:
        if self._closing or self._client is None:
            return
        if state == KazooState.SUSPENDED:
            self._set_state(SessionState.SUSPENDED, reason="no answer from ZooKeeper", hosts=self.hosts)
        elif state == KazooState.LOST:
            self._set_state(SessionState.LOST, session=_hex(self._session_id))
        elif state == KazooState.CONNECTED:
            session = self._client.client_id[0] if self._client.client_id else None
            renewed = self._session_id is not None and session != self._session_id
            self._session_id = session
            self._set_state(SessionState.CONNECTED, session=_hex(session), new_session=renewed, hosts=self.hosts)
            if self._registrations:
                if self._restoring is not None:
                    self._restoring.cancel()
                self._restoring = asyncio.create_task(self._restore_members(), name="coord-restore")

    async def _restore_members(self) -> None:
        """Create again every member znode the session lost."""
        restored = 0
        for registration, node in list(self._registrations.items()):
            if await self._retrying(lambda n=node: self._exists(n.path)) is None:
                fresh = _Node.new(node.parent, "m", node.data)
                await self._ensure(fresh)
                if registration.closed:
                    await self._delete(fresh.path)
                    continue
                self._registrations[registration] = fresh
                registration.id = fresh.name
                restored += 1
        if restored:
            log.info("members registered again", backend="zookeeper", count=restored)

    # --- registry --------------------------------------------------------------------------

    async def register(self, role: str, info: MemberInfo) -> Registration:
        check_name("role", role)
        node = _Node.new(f"{self.root}/members/{role}", "m", msgspec.json.encode(info))
        await self._ensure(node)
        registration = Registration(self, role, info, node.name)
        self._registrations[registration] = node
        return registration

    async def _deregister(self, registration: Registration) -> None:
        node = self._registrations.pop(registration, None)
        if node is not None and self._client is not None:
            await self._delete(node.path)

    async def roles(self) -> list[str]:
        parent = f"{self.root}/members"
        names = await self._children(parent)
        counts = await asyncio.gather(*(self._call(self.client.exists_async(f"{parent}/{name}")) for name in names))
        return sorted(name for name, stat in zip(names, counts, strict=True) if stat is not None and stat.numChildren)

    async def members(self, role: str) -> list[Member]:
        return await self._members(role, await self._children(f"{self.root}/members/{role}"), {})

    async def _members(self, role: str, names: list[str], known: dict[str, MemberInfo]) -> list[Member]:
        """The members named by `names` (read once each: member znodes never change)."""
        parent = f"{self.root}/members/{role}"

        async def read(name: str) -> None:
            with contextlib.suppress(NoNodeError):
                data, _ = await self._call(self.client.get_async(f"{parent}/{name}"))
                known[name] = msgspec.json.decode(data, type=MemberInfo)

        await asyncio.gather(*(read(name) for name in names if name not in known))
        for gone in known.keys() - set(names):
            del known[gone]
        return [Member(name, role, known[name]) for name in sorted(names, key=_sequence) if name in known]

    async def watch_members(self, role: str) -> AsyncGenerator[list[Member], None]:
        check_name("role", role)
        parent = f"{self.root}/members/{role}"
        await self._retrying(lambda: self._call(self.client.ensure_path_async(parent)))
        updates: asyncio.Queue[list[str]] = asyncio.Queue()
        watching = True

        def on_children(names: list[str]) -> bool:
            self._soon(updates.put_nowait, names)
            return watching

        await self._retrying(lambda: self._in_thread(ChildrenWatch, self.client, parent, on_children))
        known: dict[str, MemberInfo] = {}
        previous: list[Member] | None = None
        try:
            while True:
                names = await updates.get()
                while not updates.empty():
                    names = updates.get_nowait()
                current = await self._retrying(lambda n=names: self._members(role, n, known))
                if current != previous:
                    yield current
                    previous = current
        finally:
            watching = False

    # --- live configuration ----------------------------------------------------------------

    @property
    def _config_path(self) -> str:
        return f"{self.root}/config"

    def _decode_config(self, data: bytes | None, stat: ZnodeStat | None) -> tuple[int, LiveConfig]:
        if stat is None or data is None:
            return 0, self.defaults
        return stat.mzxid, live_config.decode(data)

    async def _read_config(self) -> tuple[int, LiveConfig]:
        try:
            data, stat = await self._call(self.client.get_async(self._config_path))
        except NoNodeError:
            return 0, self.defaults
        return self._decode_config(data, stat)

    async def _update_config(self, change: Callable[[LiveConfig], LiveConfig]) -> LiveConfig:
        while True:
            try:
                data, stat = await self._call(self.client.get_async(self._config_path))
            except NoNodeError:
                data, stat = None, None
            updated = change(self._decode_config(data, stat)[1])
            document = live_config.encode(updated)
            try:
                if stat is None:
                    await self._call(self.client.create_async(self._config_path, document, makepath=True))
                else:
                    await self._call(self.client.set_async(self._config_path, document, version=stat.version))
                return updated
            except (NodeExistsError, BadVersionError):
                continue  # changed meanwhile: apply the change to the new tree

    async def _config_versions(self) -> AsyncGenerator[tuple[int, LiveConfig], None]:
        updates: asyncio.Queue[tuple[bytes | None, ZnodeStat | None]] = asyncio.Queue()
        watching = True

        def on_data(data: bytes | None, stat: ZnodeStat | None) -> bool:
            self._soon(updates.put_nowait, (data, stat))
            return watching

        await self._retrying(lambda: self._in_thread(DataWatch, self.client, self._config_path, on_data))
        try:
            while True:
                data, stat = await updates.get()
                try:
                    yield self._decode_config(data, stat)
                except ConfigError as exc:
                    log.error("ignoring an invalid live configuration", path=self._config_path, error=str(exc))
        finally:
            watching = False

    # --- leader election -------------------------------------------------------------------

    def _candidacy(self, kind: str, name: str) -> Leadership:
        return _ZooKeeperLeadership(self, kind, name)


class _ZooKeeperLeadership(Leadership):
    def __init__(self, coordinator: ZooKeeperCoordinator, kind: str, name: str) -> None:
        super().__init__(coordinator, kind, name)
        self._coord = coordinator
        self._parent = f"{coordinator.root}/{kind}/{name}"
        self._data = msgspec.json.encode(MemberInfo.this_process())
        self._stale: list[_Node] = []
        """Candidate znodes of ended terms that may still exist: deleted before running again."""

    async def _campaign(self) -> None:
        coord = self._coord
        while True:
            await self._drop_stale()
            node = _Node.new(self._parent, "c", self._data)
            self._stale.append(node)
            await coord._ensure(node)
            epoch = await self._wait_until_first(node)
            if epoch is None:
                continue
            term = self._begin_term(epoch, lambda n=node: self._holds(n))

            def on_node(event: WatchedEvent, term: Term = term) -> None:
                if event.type == EventType.DELETED:
                    coord._soon(term.end, "its candidate znode was deleted")

            try:
                if await coord._exists(node.path, watch=on_node) is None:
                    term.end("its candidate znode is gone")
            except BackendUnavailable:
                term.end("the connection dropped")
            await term.lost.wait()

    async def _holds(self, node: _Node) -> bool:
        return self._coord.state is SessionState.CONNECTED and await self._coord._exists(node.path) is not None

    async def _wait_until_first(self, node: _Node) -> int | None:
        """Wait until `node` is the lowest candidate; its epoch then, or None if it vanished."""
        coord = self._coord
        while True:
            await coord.connected()
            changed = asyncio.Event()
            try:
                names = sorted(await coord._children(self._parent), key=_sequence)
                if node.name not in names:
                    return None
                index = names.index(node.name)
                if index == 0:
                    return _sequence(node.name) + 1
                if await coord._exists(f"{self._parent}/{names[index - 1]}", watch=coord._setter(changed)) is None:
                    continue
            except BackendUnavailable:
                await asyncio.sleep(RETRY_DELAY)
                continue
            await changed.wait()  # the predecessor went, or the connection dropped

    async def _drop_stale(self) -> None:
        while self._stale:
            await self._coord._retrying(lambda n=self._stale[0]: self._coord._remove(n))
            self._stale.pop(0)

    async def _withdraw(self) -> None:
        """Delete the candidate znodes now if ZooKeeper answers in time; else the session's end
        removes them."""
        if self._coord._client is None:
            return
        try:
            async with asyncio.timeout(self._coord.session_timeout):
                for node in self._stale:
                    await self._coord._remove(node)
        except (BackendUnavailable, TimeoutError) as exc:
            log.warning("could not withdraw the candidacy", kind=self.kind, name=self.name, error=repr(exc))
        self._stale.clear()


def _stop(client: KazooClient) -> None:
    client.stop()
    client.close()


def _hex(session: int | None) -> str:
    return "none" if session is None else f"{session:#x}"
