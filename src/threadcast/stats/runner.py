"""The embedded runner: a topology in one process, on asyncio.

One asyncio task per spout and bolt instance (a Storm executor), a bounded queue in front of each
bolt task (a full queue holds back the tasks that emit into it, up to the spout), the acker of
`threadcast.stats.acker`, tick tuples at each bolt's `tick` interval, and a sweep that fails
the spout tuples older than the topology's `message_timeout`. A spout task stops asking for
tuples while `max_spout_pending` of its tuples are in flight.

A bolt that raises fails the tuple it was given (its spout tuples are replayed) and keeps
running, as after an error reported by a Storm shell bolt that Storm restarted.

`stop()`: the spouts stop emitting, the tuples in the queues are processed (for up to `grace`
seconds), the spouts commit their acked prefix and leave their groups. Tuples held by bolts
(for example in open windows) are not acked, so they are read again after a restart.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from threadcast.bus.log import EventLog
from threadcast.stats import metrics
from threadcast.stats.acker import Acker
from threadcast.stats.routing import Chooser, chooser
from threadcast.stats.spout import LogSpout, MessageId
from threadcast.stats.topology import DEFAULT_STREAM, Bolt, Fields, Topology, TopologyContext, Tuple

log = structlog.get_logger("threadcast.stats")

TICK = object()
FLUSH = object()
QUIET_CHECK = 0.01
LEVELS = {"trace": "debug", "debug": "debug", "info": "info", "warn": "warning", "warning": "warning", "error": "error"}


@dataclass(frozen=True, slots=True)
class _Route:
    """Where one stream of a component goes: a subscribing bolt's queues and how to choose."""

    choose: Chooser
    queues: list[asyncio.Queue[Any]]
    task_ids: list[int]


@dataclass(eq=False)
class _Task:
    component: str
    task_id: int
    queue: asyncio.Queue[Any] | None = None
    busy: bool = False
    tick_queued: bool = False


@dataclass(eq=False)
class _Emitter:
    """What one task emits: routes per stream, and the tuples waiting to be put in queues."""

    component: str
    task_id: int
    fields: Mapping[str, Fields]
    routes: Mapping[str, list[_Route]]
    outbox: list[tuple[asyncio.Queue[Any], Tuple]] = field(default_factory=list)


class EmbeddedCollector:
    """A bolt's collector in the embedded runner."""

    def __init__(self, runner: EmbeddedRunner, emitter: _Emitter) -> None:
        self._runner = runner
        self._emitter = emitter
        self._log = log.bind(component=emitter.component, task=emitter.task_id)

    def emit(self, values: Sequence[Any], anchors: Iterable[Tuple] = (), stream: str = DEFAULT_STREAM) -> list[int]:
        anchors = anchors if isinstance(anchors, (list, tuple)) else list(anchors)
        if len(anchors) == 1:
            roots = anchors[0].roots
        else:
            roots = tuple({root for anchor in anchors for root in anchor.roots})
        return self._runner.route(self._emitter, stream, list(values), roots)

    def ack(self, tup: Tuple) -> None:
        if not tup.settled:
            tup.settled = True
            self._runner.acker.acked(tup.roots)

    def fail(self, tup: Tuple) -> None:
        if not tup.settled:
            tup.settled = True
            self._runner.acker.failed(tup.roots)

    def log(self, msg: str, level: str = "info") -> None:
        getattr(self._log, LEVELS.get(level, "info"))(msg)


class EmbeddedRunner:
    """Runs `topology` in this process. Spouts read `event_log`; `resources` are handed to the
    bolts in their context (see `TopologyContext.resources`)."""

    def __init__(
        self,
        topology: Topology,
        event_log: EventLog,
        *,
        resources: Mapping[str, Any] | None = None,
        queue_size: int = 2048,
    ) -> None:
        topology.validate()
        self.topology = topology
        self._log = event_log
        self._resources = dict(resources or {})
        self._queue_size = queue_size
        self.acker = Acker(self._tree_done, self._tree_failed)
        self._ids = itertools.count(1)
        self._tasks: dict[str, list[_Task]] = {}
        self._spouts: dict[int, LogSpout] = {}
        self._spout_emitters: dict[int, _Emitter] = {}
        self._bolts: list[tuple[_Task, Bolt, _Emitter]] = []
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._pending_changed = asyncio.Event()
        self.done = 0
        """Spout tuples whose tree completed."""
        self.failure: BaseException | None = None
        """Set when a task of the runner itself died (a bug): the topology no longer runs."""
        self.state = "created"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self.state != "created":
            raise RuntimeError(f"an embedded runner starts once; this one is {self.state}")
        self.state = "starting"
        self._make_tasks()
        emitters = {task.task_id: self._emitter(task) for tasks in self._tasks.values() for task in tasks}
        try:
            for spout in self.topology.spouts.values():
                for task in self._tasks[spout.id]:
                    emitter = emitters[task.task_id]
                    owner = task.task_id
                    instance = LogSpout(spout.spec, self._log, lambda v, m, e=emitter, o=owner: self._spout_emit(e, o, v, m))
                    await instance.open()
                    self._spouts[owner] = instance
                    self._spout_emitters[owner] = emitter
            for bolt in self.topology.bolts.values():
                conf = self.topology.bolt_conf(bolt.id)
                for index, task in enumerate(self._tasks[bolt.id]):
                    instance = bolt.factory()
                    emitter = emitters[task.task_id]
                    context = TopologyContext(
                        self.topology.name, bolt.id, task.task_id, index, bolt.parallelism, self._resources
                    )
                    await _maybe(instance.prepare(conf, context, EmbeddedCollector(self, emitter)))
                    self._bolts.append((task, instance, emitter))
        except BaseException:
            await self._close_spouts()
            raise
        self._loops = [asyncio.create_task(self._spout_loop(owner), name=f"spout-{owner}") for owner in self._spouts]
        for task, bolt, emitter in self._bolts:
            self._loops.append(asyncio.create_task(self._bolt_loop(task, bolt, emitter), name=f"bolt-{task.task_id}"))
            tick = self.topology.bolts[task.component].tick
            if tick is not None:
                self._loops.append(asyncio.create_task(self._tick_loop(task, tick), name=f"tick-{task.task_id}"))
        self._loops.append(asyncio.create_task(self._expire_loop(), name="acker-timeouts"))
        for loop in self._loops:
            loop.add_done_callback(self._loop_ended)
        self.state = "running"

    async def stop(self, grace: float = 10.0) -> None:
        """Stop emitting, process what is queued (up to `grace` seconds), commit, close."""
        if self.state != "running":
            return
        self.state = "stopping"
        self._stopping.set()
        spout_loops = [loop for loop in self._loops if loop.get_name().startswith("spout-")]
        await asyncio.wait(spout_loops, timeout=grace)
        try:
            await asyncio.wait_for(self.until(self.quiet), timeout=grace)
        except TimeoutError:
            log.warning("stats topology: grace period over with tuples still queued")
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self._close_spouts()
        for _task, bolt, _emitter in self._bolts:
            try:
                await _maybe(bolt.cleanup())
            except Exception:
                log.exception("bolt cleanup failed", bolt=type(bolt).__name__)
        self.state = "stopped"

    async def run_bounded(self, *, flush_rounds: int = 3) -> None:
        """Start, read every spout to its end (`LogSpoutSpec.stop_at_end`), flush the bolts in
        declaration order until every tree is done, then stop."""
        if not all(spout.spec.stop_at_end for spout in self.topology.spouts.values()):
            raise ValueError("a bounded run needs spouts with stop_at_end")
        await self.start()
        try:
            for _ in range(flush_rounds):
                await self.until(lambda: all(s.exhausted for s in self._spouts.values()) and self.quiet())
                for bolt in self.topology.bolts.values():
                    for task in self._tasks[bolt.id]:
                        assert task.queue is not None
                        await task.queue.put(FLUSH)
                    await self.until(self.quiet)
                if not len(self.acker):
                    break
        finally:
            await self.stop()

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait until `condition()` holds (checked every 10 ms); raise the runner's failure."""
        while not condition():
            if self.failure is not None:
                raise RuntimeError("the stats topology failed") from self.failure
            await asyncio.sleep(QUIET_CHECK)

    def quiet(self) -> bool:
        """No tuple is queued or being processed."""
        return all(not task.busy and (task.queue is None or task.queue.empty()) for task, _, _ in self._bolts)

    def pending(self) -> int:
        """Spout tuples in flight."""
        return len(self.acker)

    # -- routing and acking ------------------------------------------------------------------

    def route(self, emitter: _Emitter, stream: str, values: list[Any], roots: tuple[int, ...]) -> list[int]:
        """Queue one tuple per target task; count the copies in the acker."""
        fields = emitter.fields.get(stream)
        if fields is None:
            raise ValueError(f"{emitter.component!r} declares no stream {stream!r}")
        if len(values) != len(fields):
            raise ValueError(f"{emitter.component!r} emitted {len(values)} values on {stream!r}, declared {fields}")
        targets: list[int] = []
        for route in emitter.routes.get(stream, ()):
            for index in route.choose(values):
                tup = Tuple(next(self._ids), emitter.component, stream, emitter.task_id, values, fields, roots)
                emitter.outbox.append((route.queues[index], tup))
                targets.append(route.task_ids[index])
        if targets and roots:
            self.acker.emitted(roots, len(targets))
        return targets

    def _spout_emit(self, emitter: _Emitter, owner: int, values: Sequence[Any], msg_id: MessageId) -> None:
        root = self.acker.root(owner, msg_id)
        self.route(emitter, DEFAULT_STREAM, list(values), (root,))
        self.acker.started(root)

    def _tree_done(self, owner: int, msg_id: object) -> None:
        self._spouts[owner].ack(msg_id)  # type: ignore[arg-type]
        self.done += 1
        self._pending_changed.set()

    def _tree_failed(self, owner: int, msg_id: object) -> None:
        self._spouts[owner].fail(msg_id)  # type: ignore[arg-type]
        self._pending_changed.set()

    # -- loops -------------------------------------------------------------------------------

    async def _spout_loop(self, owner: int) -> None:
        spout, emitter = self._spouts[owner], self._spout_emitters[owner]
        limit = self.topology.max_spout_pending
        counted_done = self.done
        while not self._stopping.is_set():
            room = limit - self.acker.pending(owner)
            metrics.PENDING.set(len(self.acker))
            metrics.DONE.inc(self.done - counted_done)
            counted_done = self.done
            if room <= 0:
                self._pending_changed.clear()
                try:
                    await asyncio.wait_for(self._pending_changed.wait(), timeout=0.1)
                except TimeoutError:
                    pass
                continue
            emitted = await spout.next_tuple(room)
            metrics.EMITTED.inc(emitted)
            await _deliver(emitter)

    async def _bolt_loop(self, task: _Task, bolt: Bolt, emitter: _Emitter) -> None:
        queue = task.queue
        assert queue is not None
        errors = metrics.BOLT_ERRORS.labels(task.component)
        while True:
            item = await queue.get()
            task.busy = True
            try:
                if item is TICK:
                    task.tick_queued = False
                    await _maybe(bolt.tick(time.time()))
                elif item is FLUSH:
                    await _maybe(bolt.flush())
                else:
                    await _maybe(bolt.process(item))
            except Exception:
                errors.inc()
                log.exception("bolt failed", component=task.component, task=task.task_id)
                if isinstance(item, Tuple) and not item.settled:
                    item.settled = True
                    self.acker.failed(item.roots)
            await _deliver(emitter)
            task.busy = False

    async def _tick_loop(self, task: _Task, every: float) -> None:
        assert task.queue is not None
        while True:
            await asyncio.sleep(every)
            if not task.tick_queued:
                task.tick_queued = True
                await task.queue.put(TICK)

    async def _expire_loop(self) -> None:
        timeout = self.topology.message_timeout
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            expired = self.acker.expire(timeout)
            if expired:
                metrics.TIMED_OUT.inc(expired)
                log.warning("stats topology: spout tuples timed out", count=expired, timeout=timeout)

    def _loop_ended(self, loop: asyncio.Task[None]) -> None:
        if not loop.cancelled() and loop.exception() is not None and self.failure is None:
            self.failure = loop.exception()
            log.error("stats topology task died", task=loop.get_name(), exc_info=self.failure)

    # -- setup -------------------------------------------------------------------------------

    def _make_tasks(self) -> None:
        task_ids = itertools.count(1)
        for spout in self.topology.spouts.values():
            self._tasks[spout.id] = [_Task(spout.id, next(task_ids)) for _ in range(spout.parallelism)]
        for bolt in self.topology.bolts.values():
            self._tasks[bolt.id] = [
                _Task(bolt.id, next(task_ids), asyncio.Queue(self._queue_size)) for _ in range(bolt.parallelism)
            ]

    def _emitter(self, task: _Task) -> _Emitter:
        component = self.topology.component(task.component)
        outputs = component.outputs()
        routes: dict[str, list[_Route]] = {}
        for stream, fields in outputs.items():
            for bolt, grouping in self.topology.subscribers(task.component, stream):
                targets = self._tasks[bolt.id]
                routes.setdefault(stream, []).append(
                    _Route(
                        chooser(grouping, fields, bolt.parallelism),
                        [target.queue for target in targets],  # type: ignore[misc]
                        [target.task_id for target in targets],
                    )
                )
        return _Emitter(task.component, task.task_id, outputs, routes)

    async def _close_spouts(self) -> None:
        for owner, spout in self._spouts.items():
            try:
                await spout.close()
            except Exception:
                log.exception("closing the stats spout failed", task=owner)


async def _deliver(emitter: _Emitter) -> None:
    """Put the emitted tuples in their queues, waiting where a queue is full."""
    outbox = emitter.outbox
    if not outbox:
        return
    emitter.outbox = []
    for queue, tup in outbox:
        if queue.full():
            await queue.put(tup)
        else:
            queue.put_nowait(tup)


async def _maybe(result: None | Awaitable[None]) -> None:
    """Await what a bolt method returned, if it returned something (it was a coroutine)."""
    if result is not None:
        await result
