"""Running services: workers, lifecycle, signals, operations endpoints."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from threadcast.bus.queue import QueueSpec
from threadcast.config import Settings
from threadcast.coord import LiveConfig, MemberInfo, Registration
from threadcast.toolkit.aio import Shutdown, Stopped
from threadcast.toolkit.backends import Backends
from threadcast.toolkit.backoff import Backoff
from threadcast.toolkit.codec import Codec
from threadcast.toolkit.context import Context, Scope
from threadcast.toolkit.handling import Handler
from threadcast.toolkit.leader import run_as_leader
from threadcast.toolkit.live import LiveView
from threadcast.toolkit.log_worker import LogWorker
from threadcast.toolkit.members import MemberView
from threadcast.toolkit.metrics import Metrics
from threadcast.toolkit.ops import OpsServer, ops_app
from threadcast.toolkit.queue_worker import QueueWorker
from threadcast.toolkit.service import ConsumerSpec, Endpoint, Service, SubscriberSpec, TimerSpec, key_function
from threadcast.toolkit.timer_worker import TimerWorker
from threadcast.toolkit.worker import Worker

log = structlog.get_logger("threadcast.toolkit")

AnyWorker = Worker | TimerWorker
DEFAULT_INBOX_TTL = 7 * 24 * 3600.0


class Runner:
    """Runs one or more services on the given backends.

    `start()` starts the backends, the live configuration watch and the member watches
    (`watch_members`), declares the queues and creates the topics the handlers use, runs each
    service's startup hooks, starts consuming and registers each service as a member (role:
    its name) on the coordinator. Leader-only
    timers run only while this process leads their duty. `stop()` deregisters, stops taking
    work, lets the work in flight finish (acked, committed) for up to `grace` seconds and
    cancels the rest (unacked: delivered again), runs the shutdown hooks and closes the
    backends. `serve()` does both around SIGTERM / SIGINT (a second signal cuts the grace
    period short); `run()` is `serve()` in a new event loop, returning the exit status 0.

    Options: `configs` (per service name, instead of calling the service's config type),
    `concurrency` (overrides every handler's prefetch), `ops_port` (serve /healthz, /readyz,
    /metrics; 0 picks a free port), `backoff` (overrides every handler's retry backoff, for
    tests), `inbox_ttl` (seconds an inbox entry is kept), `registry` (for the metrics).
    """

    def __init__(
        self,
        services: Sequence[Service],
        backends: Backends,
        *,
        settings: Settings | None = None,
        configs: Mapping[str, Any] | None = None,
        concurrency: int | None = None,
        grace: float = 10.0,
        ops_host: str = "127.0.0.1",
        ops_port: int | None = None,
        backoff: Backoff | None = None,
        inbox_ttl: float = DEFAULT_INBOX_TTL,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        names = [service.name for service in services]
        if len(set(names)) != len(names):
            raise ValueError(f"service names must differ: {names}")
        if concurrency is not None and concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if inbox_ttl <= 0:
            raise ValueError("inbox_ttl must be positive")
        self.services = list(services)
        self.backends = backends
        self.settings = settings or Settings()
        self.metrics = Metrics.on(registry)
        self.live = LiveView(backends.coord, LiveConfig.from_settings(self.settings))
        """The live configuration (the settings' values when no coordinator is given)."""
        self._member_views: dict[str, MemberView] = {}
        self._configs = dict(configs or {})
        self._concurrency = concurrency
        self._grace = grace
        self._ops_address = (ops_host, ops_port)
        self._backoff = backoff
        self._inbox_ttl = inbox_ttl
        self._shutdown = Shutdown()
        self._scopes: list[tuple[Service, Scope]] = []
        self._workers: list[AnyWorker] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._ops: OpsServer | None = None
        self._registrations: list[Registration] = []
        self.state = "created"
        """created, starting, running, stopping or stopped."""

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self.state != "created":
            raise RuntimeError(f"a runner starts once; this one is {self.state}")
        self.state = "starting"
        await self.backends.start()
        try:
            await self.live.start()
            for view in self._member_views.values():
                await view.start()
            for service in self.services:
                await self._start_service(service)
            if self._ops_address[1] is not None:
                self._ops = OpsServer(ops_app(self.health, self.readiness, self.metrics_text), *self._ops_address)
                await self._ops.start()
            await self._register()
        except BaseException:
            await self._deregister()
            if self._ops is not None:
                await self._ops.stop()
            await self._run_shutdown_hooks()
            await self._close_backends()
            self.state = "stopped"
            raise
        self._tasks = [
            asyncio.create_task(self._run_worker(worker), name=_task_name(worker)) for worker in self._workers
        ]
        if self.backends.inbox is not None:
            self._tasks.append(asyncio.create_task(self._compact_inbox(), name="inbox-compaction"))
        self.state = "running"
        log.info("services started", services=[s.name for s in self.services], ops_port=self.ops_port)

    async def stop(self) -> None:
        if self.state != "running":
            return
        self.state = "stopping"
        await self._deregister()
        log.info("stopping: finishing the work in flight", grace=self._grace)
        self._shutdown.stopping.set()
        _, pending = await asyncio.wait(self._tasks, timeout=self._grace) if self._tasks else (set(), set())
        if pending:
            log.warning("grace period over: cancelling the work still in flight", workers=len(pending))
            self._shutdown.expired.set()
            await asyncio.wait(pending)
        for task in self._tasks:
            if not task.cancelled() and (error := task.exception()) is not None:
                log.error("worker crashed", worker=task.get_name(), exc_info=error)
        await self._run_shutdown_hooks()
        if self._ops is not None:
            await self._ops.stop()
        await self._close_backends()
        self._shutdown.close()
        self.state = "stopped"
        log.info("services stopped")

    async def __aenter__(self) -> Runner:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def serve(self) -> None:
        """Start, run until SIGTERM or SIGINT, stop."""
        loop = asyncio.get_running_loop()
        requested = asyncio.Event()

        def on_signal(signum: int) -> None:
            if requested.is_set():
                log.warning("second signal: cancelling the work in flight", signal=signal.Signals(signum).name)
                self._shutdown.expired.set()
            requested.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            await self.start()
            await requested.wait()
            await self.stop()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    def run(self) -> int:
        asyncio.run(self.serve())
        return 0

    def watch_members(self, role: str) -> MemberView:
        """The live members of `role`, kept up to date while the runner runs (one watch per
        role; call before `start()`, on a runner with a coordinator)."""
        if self.state != "created":
            raise RuntimeError("watch members before the runner starts")
        coord = self.backends.require("coord", f"watching the members of {role!r}")
        if role not in self._member_views:
            self._member_views[role] = MemberView(coord, role)
        return self._member_views[role]

    # -- state -----------------------------------------------------------------------------

    @property
    def ops_port(self) -> int | None:
        return None if self._ops is None else self._ops.port

    def wake(self, service: str, timer: str) -> None:
        """Run a timer now (for example the outbox relay, right after a commit)."""
        for worker in self._workers:
            if isinstance(worker, TimerWorker) and worker.scope.service == service and worker.spec.name == timer:
                worker.wake()
                return
        raise LookupError(f"no timer {timer!r} in service {service!r}")

    def in_flight(self) -> int:
        return sum(worker.in_flight for worker in self._workers)

    async def backlog(self) -> int:
        """Messages waiting in the queues and log groups the handlers consume (also updates
        the consumer-lag gauges)."""
        total = 0
        for worker in self._workers:
            if isinstance(worker, Worker):
                total += await worker.backlog()
        return total

    def health(self) -> dict[str, str]:
        if self.state != "running":
            return {"runner": self.state}
        crashed = [task.get_name() for task in self._tasks if task.done()]
        return {"workers": "ok" if not crashed else f"stopped: {', '.join(crashed)}"}

    async def readiness(self) -> dict[str, str]:
        if self.state != "running":
            return {"runner": self.state}
        return await self.backends.readiness()

    async def metrics_text(self) -> bytes:
        try:
            await self.backlog()
        except Exception:
            log.warning("could not measure the consumer lag", exc_info=True)
        return generate_latest(self.metrics.registry)

    # -- internals -------------------------------------------------------------------------

    async def _start_service(self, service: Service) -> None:
        if service.name in self._configs:
            config = self._configs[service.name]
        else:
            config = service.config() if service.config is not None else None
        scope = Scope(service.name, self.backends, self.settings, self.metrics, config=config, live=self.live)
        endpoints = service.resolved(self.settings)
        for endpoint in endpoints:
            await self._prepare(service.name, endpoint)
        self._scopes.append((service, scope))
        for hook in service.startup_hooks:
            await hook(Context(scope, "startup"))
        self._workers += [worker for endpoint in endpoints for worker in self._workers_for(scope, endpoint)]

    async def _prepare(self, service: str, endpoint: Endpoint) -> None:
        """Check the backends an endpoint needs; declare its queues, create its topic."""
        needed_by = f"{service}.{endpoint.name}"
        if isinstance(endpoint, TimerSpec) and endpoint.leader is not None:
            self.backends.require("coord", needed_by)
        elif isinstance(endpoint, ConsumerSpec):
            queue = self.backends.require("queue", needed_by)
            await queue.declare(QueueSpec(endpoint.queue, max_attempts=endpoint.max_attempts))
        elif isinstance(endpoint, SubscriberSpec):
            event_log = self.backends.require("log", needed_by)
            queue = self.backends.require("queue", needed_by)
            await event_log.create_topic(endpoint.topic, self.backends.log_partitions)
            await queue.declare(QueueSpec(endpoint.retry_queue_name, max_attempts=endpoint.max_attempts))

    def _workers_for(self, scope: Scope, endpoint: Endpoint) -> list[AnyWorker]:
        if isinstance(endpoint, TimerSpec):
            return [TimerWorker(scope, endpoint, self._shutdown)]
        prefetch = self._concurrency or endpoint.prefetch
        backoff = self._backoff or endpoint.backoff
        codec = Codec(endpoint.model)
        queue = self.backends.queue
        assert queue is not None  # checked by _prepare
        if isinstance(endpoint, ConsumerSpec):
            handler = Handler(scope, endpoint.name, endpoint.handler, idempotent=endpoint.idempotent)
            return [
                QueueWorker(
                    handler,
                    queue,
                    endpoint.queue,
                    codec=codec,
                    prefetch=prefetch,
                    key_of=key_function(endpoint.ordered_by),
                    max_attempts=endpoint.max_attempts,
                    backoff=backoff,
                    shutdown=self._shutdown,
                )
            ]
        assert self.backends.log is not None
        subscriber = LogWorker(
            Handler(scope, endpoint.name, endpoint.handler, idempotent=endpoint.idempotent),
            self.backends.log,
            queue,
            topic=endpoint.topic,
            group=endpoint.group,
            retry_queue=endpoint.retry_queue_name,
            codec=codec,
            prefetch=prefetch,
            batch=endpoint.batch,
            key_of=key_function(endpoint.ordered_by),
            max_attempts=endpoint.max_attempts,
            backoff=backoff,
            shutdown=self._shutdown,
        )
        retries = QueueWorker(
            Handler(
                scope, endpoint.name, endpoint.handler, idempotent=endpoint.idempotent, label=f"{endpoint.name}.retry"
            ),
            queue,
            endpoint.retry_queue_name,
            codec=codec,
            prefetch=prefetch,
            key_of=None,
            max_attempts=endpoint.max_attempts,
            backoff=backoff,
            shutdown=self._shutdown,
            as_batch=endpoint.batch is not None,
        )
        return [subscriber, retries]

    async def _run_worker(self, worker: AnyWorker) -> None:
        if isinstance(worker, TimerWorker) and worker.spec.leader is not None:
            assert self.backends.coord is not None  # checked by _prepare
            await run_as_leader(worker, self.backends.coord, self._shutdown)
        else:
            await worker.run()

    async def _register(self) -> None:
        """Register each service as a member of its name's role (with the ops port and health
        URL when the ops server runs)."""
        coord = self.backends.coord
        if coord is None:
            return
        port = self.ops_port or 0
        health_url = f"http://{self._ops_address[0]}:{port}/healthz" if port else ""
        info = MemberInfo.this_process(port=port, health_url=health_url)
        for service in self.services:
            self._registrations.append(await coord.register(service.name, info))

    async def _close_backends(self) -> None:
        """Stop the member watches and the live configuration, then close the backends."""
        for view in self._member_views.values():
            await view.close()
        await self.live.close()
        await self.backends.close()

    async def _deregister(self) -> None:
        while self._registrations:
            registration = self._registrations.pop()
            try:
                await registration.close()
            except Exception:
                log.warning("deregistering failed", role=registration.role, exc_info=True)

    async def _run_shutdown_hooks(self) -> None:
        while self._scopes:
            service, scope = self._scopes.pop()
            for hook in service.shutdown_hooks:
                try:
                    await hook(Context(scope, "shutdown"))
                except Exception:
                    log.exception("shutdown hook failed", service=service.name)

    async def _compact_inbox(self) -> None:
        inbox = self.backends.inbox
        assert inbox is not None
        interval = min(3600.0, self._inbox_ttl / 10)
        while True:
            try:
                await self._shutdown.sleep(interval)
            except Stopped:
                return
            try:
                forgotten = await inbox.compact(self._inbox_ttl)
                log.info("inbox compacted", forgotten=forgotten)
            except Exception:
                log.exception("inbox compaction failed")


def _task_name(worker: AnyWorker) -> str:
    if isinstance(worker, TimerWorker):
        return f"{worker.scope.service}.{worker.spec.name} (timer)"
    return f"{worker.handler.scope.service}.{worker.handler.label} <- {worker.source}"
