"""A threadcast bolt as a Storm shell bolt: `python -m threadcast.stats.storm.bolt module:Class`.

Storm starts one such process per bolt task (the command comes from `threadcast.stats.storm.flux`)
and speaks the multilang protocol with it (`threadcast.stats.storm.multilang`). This module builds
the bolt from its class, prepares it with the conf the Flux definition put under the topology
conf key `threadcast` (the topology's conf, then the bolt's own; the settings that stand in the
environment, such as THREADCAST_STORE_URL, on top), and hands it Storm's tuples as threadcast
`Tuple`s, with the field names of the component and stream they come from.

`prepare`, `process` and `tick` may be coroutine functions: they run on one event loop of this
process. As on the embedded runner, a `process` that raises has its error reported to Storm
(shown with the component's errors) and its tuple failed, if the bolt had not acked or failed it,
so that the spout replays it; the process keeps running. A bolt whose `prepare` raises ends the
process, and Storm restarts the worker.
"""

from __future__ import annotations

import asyncio
import os
import sys
import traceback
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import Any

from threadcast.stats.storm.flux import CONF_KEY, ENV_CONF
from threadcast.stats.storm.multilang import Collector as StormCollector
from threadcast.stats.storm.multilang import Setup, StormTuple, run_bolt
from threadcast.stats.topology import DEFAULT_STREAM, Bolt, Fields, TopologyContext, Tuple, load_bolt


class SettlingCollector:
    """The bolt's collector: Storm's, except that a tuple is acked or failed once at most (Storm
    kills a shell bolt that settles a tuple twice)."""

    def __init__(self, storm: StormCollector) -> None:
        self._storm = storm

    def emit(self, values: Sequence[Any], anchors: Iterable[Tuple] = (), stream: str = DEFAULT_STREAM) -> None:
        self._storm.emit(values, anchors=anchors, stream=stream)

    def ack(self, tup: Tuple) -> None:
        if not tup.settled:
            tup.settled = True
            self._storm.ack(tup)

    def fail(self, tup: Tuple) -> None:
        if not tup.settled:
            tup.settled = True
            self._storm.fail(tup)

    def log(self, msg: str, level: str = "info") -> None:
        self._storm.log(msg, level)

    def error(self, msg: str) -> None:
        self._storm.error(msg)


class ShellBolt:
    """Runs one threadcast bolt in this process for the multilang adapter."""

    def __init__(self, factory: type[Bolt], collector: StormCollector, setup: Setup) -> None:
        self._loop = asyncio.new_event_loop()
        self._collector = SettlingCollector(collector)
        threadcast = setup.conf[CONF_KEY]
        component = setup.component_id
        self._fields = {
            (source, stream): Fields(names)
            for source, streams in threadcast["outputs"].items()
            for stream, names in streams.items()
        }
        self.bolt = factory()
        self._run(self.bolt.prepare(bolt_conf(threadcast, component), _context(threadcast["name"], setup), self._collector))

    def process(self, tup: StormTuple) -> None:
        received = Tuple(tup.id, tup.component, tup.stream, tup.task, tup.values, self._fields[(tup.component, tup.stream)])
        try:
            self._run(self.bolt.process(received))
        except Exception:
            self._collector.error(traceback.format_exc())
            self._collector.fail(received)

    def tick(self, now: float) -> None:
        try:
            self._run(self.bolt.tick(now))
        except Exception:
            self._collector.error(traceback.format_exc())

    def close(self) -> None:
        try:
            self._run(self.bolt.cleanup())
        finally:
            self._loop.close()

    def _run(self, result: None | Awaitable[None]) -> None:
        if result is not None:
            self._loop.run_until_complete(result)  # type: ignore[arg-type]


def bolt_conf(threadcast: Mapping[str, Any], component: str, environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The conf a bolt's `prepare` gets: the topology's, the bolt's own, then the environment's."""
    conf = {**threadcast["conf"], **threadcast["bolts"].get(component, {})}
    for name, key in ENV_CONF.items():
        if name in environ:
            conf[key] = environ[name]
    return conf


def _context(topology: str, setup: Setup) -> TopologyContext:
    """This task's place in its component, from the handshake's task -> component map."""
    component = setup.component_id
    tasks = sorted(int(task) for task, owner in setup.context["task->component"].items() if owner == component)
    return TopologyContext(topology, component, setup.task_id, tasks.index(setup.task_id), len(tasks))


def main(argv: Sequence[str]) -> None:
    if len(argv) != 1:
        sys.exit("usage: python -m threadcast.stats.storm.bolt module:BoltClass")
    factory = load_bolt(argv[0])
    made: list[ShellBolt] = []

    def make(collector: StormCollector, setup: Setup) -> ShellBolt:
        made.append(ShellBolt(factory, collector, setup))
        return made[-1]

    try:
        run_bolt(make)
    finally:
        for bolt in made:
            bolt.close()


if __name__ == "__main__":
    main(sys.argv[1:])
