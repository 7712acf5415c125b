"""A timer: calls its function every `every` seconds, one run at a time."""

from __future__ import annotations

import asyncio

import structlog

from threadcast.coord import NotLeaderError, Term
from threadcast.toolkit.aio import Shutdown, Stopped, until
from threadcast.toolkit.backoff import Backoff
from threadcast.toolkit.callables import Call
from threadcast.toolkit.context import Context, Scope
from threadcast.toolkit.service import TimerSpec

log = structlog.get_logger("threadcast.toolkit")

ERROR_BACKOFF = Backoff(base=0.25, cap=10.0)
"""After failed runs, the next one waits for this backoff too (a broken backend is not
hammered, nor the log flooded), whatever `every` or `wake()` say."""


class TimerWorker:
    """Runs `spec.handler` every `spec.every` seconds (counted from the end of the previous
    run), or at once when woken with `wake()`; after failed runs, not before a backoff. A run
    in progress when the shutdown begins finishes within the grace period.

    A leader-only timer runs in a term (`run(term)`); `NotLeaderError` from a run ends it."""

    def __init__(self, scope: Scope, spec: TimerSpec, shutdown: Shutdown) -> None:
        self.scope = scope
        self.spec = spec
        self._call = Call(spec.handler, ("ctx",))
        self._shutdown = shutdown
        self._woken = asyncio.Event()
        self._running = False
        self._ok = scope.metrics.timer_runs.labels(scope.service, spec.name, "ok")
        self._errors = scope.metrics.timer_runs.labels(scope.service, spec.name, "error")
        if spec.run_at_start:
            self._woken.set()

    @property
    def in_flight(self) -> int:
        return int(self._running)

    def wake(self) -> None:
        """Run now instead of at the next tick."""
        self._woken.set()

    async def run(self, term: Term | None = None) -> None:
        failures = 0
        while True:
            try:
                if failures:
                    await self._shutdown.sleep(ERROR_BACKOFF.delay(failures))
                await until(self._shutdown.stopping_waiter, self._next_tick())
            except Stopped:
                return
            self._running = True
            try:
                if not await self._shutdown.finish(self._call(Context(self.scope, self.spec.name, term=term))):
                    return  # cancelled: the grace period expired
                self._ok.inc()
                failures = 0
            except NotLeaderError:
                raise
            except Exception:
                failures += 1
                log.exception("timer failed", service=self.scope.service, timer=self.spec.name, failures=failures)
                self._errors.inc()
            finally:
                self._running = False

    async def _next_tick(self) -> None:
        try:
            await asyncio.wait_for(self._woken.wait(), timeout=float(self.spec.every))
        except TimeoutError:
            pass
        self._woken.clear()
