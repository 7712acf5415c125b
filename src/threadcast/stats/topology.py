"""A stream topology, declared the way Apache Storm declares one.

    topology = Topology("stats", conf={"window": 60})
    topology.spout("log", LogSpoutSpec(topics=("events", "deliveries"), group="stats"))
    topology.bolt("parse", ParseBolt, parallelism=2).fields("log", "topic", "partition")
    topology.bolt("window", WindowBolt, tick=1.0).fields("parse", "forum").all_("parse", stream="watermarks")
    topology.bolt("sink", SinkBolt).fields("window", "forum")

A topology is plain data: components with a parallelism, the groupings that connect them, output
fields per stream, and a JSON-able `conf`. It runs on the embedded runner
(`threadcast.stats.runner`) or on Storm, where the spout is Storm's KafkaSpout and the bolts run as
multilang shell bolts, one Python process per task. Hence the rules for bolts:

- a bolt is built from its class alone (`factory()`, no arguments) and configured in `prepare`
  from `conf`, which is plain data (the topology's conf, then the component's own on top);
- a bolt talks to the engine only through its `Collector`: `emit`, `ack`, `fail`, `log`;
- every input tuple is acked or failed exactly once, after any emit anchored to it;
- `process` and `tick` may be coroutine functions: both engines await what they return.

Acking follows Storm: a spout tuple is done when every tuple anchored to it (transitively) was
acked; it fails when one of them fails or when it is not done within `message_timeout` seconds.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

DEFAULT_STREAM = "default"


class Fields(tuple[str, ...]):
    """Output field names of one stream, with their positions."""

    def __new__(cls, names: Iterable[str]) -> Fields:
        fields = super().__new__(cls, tuple(names))
        if len(set(fields)) != len(fields):
            raise ValueError(f"duplicate field names in {tuple(fields)}")
        return fields

    def __init__(self, names: Iterable[str]) -> None:
        self.index = {name: position for position, name in enumerate(self)}


@dataclass(slots=True, eq=False)
class Tuple:
    """One tuple as a bolt receives it. `id` is what anchors refer to; `task` is the task that
    emitted it. Values are read by position (`tup.values[0]`) or by field name (`tup["forum"]`)."""

    id: int | str
    component: str
    stream: str
    task: int
    values: list[Any]
    fields: Fields
    roots: tuple[int, ...] = ()
    """The spout tuples this tuple descends from (kept by the embedded runner's acker)."""
    settled: bool = False
    """Acked or failed already (the embedded runner ignores a second ack or fail)."""

    def __getitem__(self, name: str) -> Any:
        return self.values[self.fields.index[name]]


@dataclass(frozen=True, slots=True)
class TopologyContext:
    """Who a component instance is: what Storm's handshake tells a shell bolt."""

    topology: str
    component: str
    task: int
    """The task id, unique in the topology."""
    task_index: int
    """0 .. parallelism-1 within the component."""
    parallelism: int
    resources: Mapping[str, Any] = field(default_factory=dict)
    """In-process objects the embedded runner shares with its bolts (such as the edge publisher
    or the object store). Empty on Storm: bolts build what they need from `conf` then."""


class Collector(Protocol):
    """How a bolt hands tuples on and settles its inputs (Storm's OutputCollector; the multilang
    adapter implements the same methods)."""

    def emit(self, values: Sequence[Any], anchors: Iterable[Any] = (), stream: str = DEFAULT_STREAM) -> Any:
        """Emit a tuple on `stream`, anchored to the input tuples `anchors` (none: unanchored,
        its loss replays nothing)."""

    def ack(self, tup: Any) -> None: ...

    def fail(self, tup: Any) -> None:
        """Fail the tuple: the spout tuples it descends from are replayed."""

    def log(self, msg: str, level: str = "info") -> None: ...


class Bolt:
    """Base class of bolts. Subclasses set `outputs` (stream -> field names) and implement
    `process`; `tick` runs on tick tuples when the bolt is declared with `tick=<seconds>`."""

    outputs: ClassVar[Mapping[str, Sequence[str]]] = {}

    collector: Collector
    conf: Mapping[str, Any]
    context: TopologyContext

    @classmethod
    def declare_output_fields(cls) -> dict[str, Fields]:
        return {stream: Fields(names) for stream, names in cls.outputs.items()}

    def prepare(self, conf: Mapping[str, Any], context: TopologyContext, collector: Collector) -> None | Awaitable[None]:
        self.conf, self.context, self.collector = conf, context, collector

    def process(self, tup: Tuple) -> None | Awaitable[None]:
        raise NotImplementedError

    def tick(self, now: float) -> None | Awaitable[None]:
        """Called on each tick tuple with the wall-clock time."""

    def flush(self) -> None | Awaitable[None]:
        """End of a bounded input (the embedded runner's `run_bounded`): emit whatever is held.
        Storm never calls it."""

    def cleanup(self) -> None | Awaitable[None]:
        """Release resources when the topology stops (not called after a crash)."""


@dataclass(frozen=True, slots=True)
class Grouping:
    """How the tuples of `source`'s `stream` are spread over a bolt's tasks."""

    kind: str
    """shuffle, fields, global or all."""
    source: str
    stream: str = DEFAULT_STREAM
    fields: tuple[str, ...] = ()


@dataclass
class SpoutSpec:
    id: str
    spec: Any
    """What to read, as plain data (see `threadcast.stats.spout.LogSpoutSpec`)."""
    parallelism: int

    def outputs(self) -> dict[str, Fields]:
        return {DEFAULT_STREAM: Fields(self.spec.output_fields)}


@dataclass
class BoltSpec:
    id: str
    factory: type[Bolt]
    parallelism: int
    conf: dict[str, Any]
    tick: float | None
    inputs: list[Grouping] = field(default_factory=list)

    @property
    def factory_path(self) -> str:
        """`module:QualifiedName`, what a fresh process imports to build this bolt."""
        return f"{self.factory.__module__}:{self.factory.__qualname__}"

    def outputs(self) -> dict[str, Fields]:
        return self.factory.declare_output_fields()


class BoltDeclarer:
    """Returned by `Topology.bolt`: subscribe the bolt to its inputs."""

    def __init__(self, topology: Topology, spec: BoltSpec) -> None:
        self._topology = topology
        self.spec = spec

    def shuffle(self, source: str, stream: str = DEFAULT_STREAM) -> BoltDeclarer:
        return self._add(Grouping("shuffle", source, stream))

    def fields(self, source: str, *fields: str, stream: str = DEFAULT_STREAM) -> BoltDeclarer:
        if not fields:
            raise ValueError("a fields grouping needs at least one field")
        return self._add(Grouping("fields", source, stream, tuple(fields)))

    def global_(self, source: str, stream: str = DEFAULT_STREAM) -> BoltDeclarer:
        return self._add(Grouping("global", source, stream))

    def all_(self, source: str, stream: str = DEFAULT_STREAM) -> BoltDeclarer:
        return self._add(Grouping("all", source, stream))

    def _add(self, grouping: Grouping) -> BoltDeclarer:
        source = self._topology.component(grouping.source)
        declared = source.outputs()
        if grouping.stream not in declared:
            raise ValueError(f"{grouping.source!r} declares no stream {grouping.stream!r} (it has {sorted(declared)})")
        missing = set(grouping.fields) - set(declared[grouping.stream])
        if missing:
            raise ValueError(f"stream {grouping.stream!r} of {grouping.source!r} has no fields {sorted(missing)}")
        self.spec.inputs.append(grouping)
        return self


class Topology:
    """Spouts and bolts, in declaration order; a source must be declared before its subscribers,
    so the declaration order is a topological order."""

    def __init__(
        self,
        name: str,
        *,
        conf: Mapping[str, Any] | None = None,
        message_timeout: float = 30.0,
        max_spout_pending: int = 10_000,
    ) -> None:
        if message_timeout <= 0 or max_spout_pending < 1:
            raise ValueError("message_timeout and max_spout_pending must be positive")
        self.name = name
        self.conf = dict(conf or {})
        self.message_timeout = message_timeout
        """Storm's topology.message.timeout.secs: a spout tuple not done by then is failed."""
        self.max_spout_pending = max_spout_pending
        """Storm's topology.max.spout.pending: spout tuples in flight per spout task."""
        self.spouts: dict[str, SpoutSpec] = {}
        self.bolts: dict[str, BoltSpec] = {}

    def spout(self, id: str, spec: Any, parallelism: int = 1) -> SpoutSpec:
        self._check_new(id, parallelism)
        self.spouts[id] = SpoutSpec(id, spec, parallelism)
        return self.spouts[id]

    def bolt(
        self,
        id: str,
        factory: type[Bolt],
        parallelism: int = 1,
        *,
        conf: Mapping[str, Any] | None = None,
        tick: float | None = None,
    ) -> BoltDeclarer:
        """Declare a bolt; `conf` goes on top of the topology's conf for this bolt only; `tick`
        is Storm's topology.tick.tuple.freq.secs for it."""
        self._check_new(id, parallelism)
        if tick is not None and tick <= 0:
            raise ValueError("tick must be positive")
        spec = BoltSpec(id, factory, parallelism, dict(conf or {}), tick)
        self.bolts[id] = spec
        return BoltDeclarer(self, spec)

    def component(self, id: str) -> SpoutSpec | BoltSpec:
        found = self.spouts.get(id) or self.bolts.get(id)
        if found is None:
            raise ValueError(f"no component {id!r} in topology {self.name!r} (declare sources first)")
        return found

    def bolt_conf(self, id: str) -> dict[str, Any]:
        """The conf a bolt's `prepare` gets: the topology's, then the bolt's own."""
        return {**self.conf, **self.bolts[id].conf}

    def subscribers(self, source: str, stream: str) -> list[tuple[BoltSpec, Grouping]]:
        return [
            (bolt, grouping)
            for bolt in self.bolts.values()
            for grouping in bolt.inputs
            if grouping.source == source and grouping.stream == stream
        ]

    def validate(self) -> None:
        if not self.spouts:
            raise ValueError(f"topology {self.name!r} has no spout")
        for bolt in self.bolts.values():
            if not bolt.inputs:
                raise ValueError(f"bolt {bolt.id!r} subscribes to nothing")

    def to_dict(self) -> dict[str, Any]:
        """The topology as plain data (for Storm: a Flux definition is made from it)."""
        return {
            "name": self.name,
            "conf": {
                **self.conf,
                "topology.message.timeout.secs": self.message_timeout,
                "topology.max.spout.pending": self.max_spout_pending,
            },
            "spouts": [
                {"id": s.id, "parallelism": s.parallelism, "spec": dataclasses.asdict(s.spec), "outputs": _plain(s.outputs())}
                for s in self.spouts.values()
            ],
            "bolts": [
                {
                    "id": b.id,
                    "factory": b.factory_path,
                    "parallelism": b.parallelism,
                    "conf": b.conf,
                    "tick": b.tick,
                    "inputs": [_grouping(g) for g in b.inputs],
                    "outputs": _plain(b.outputs()),
                }
                for b in self.bolts.values()
            ],
        }

    def _check_new(self, id: str, parallelism: int) -> None:
        if not id or id in self.spouts or id in self.bolts:
            raise ValueError(f"component id {id!r} is empty or taken")
        if parallelism < 1:
            raise ValueError("parallelism must be at least 1")


def load_bolt(path: str) -> type[Bolt]:
    """The bolt class at `module:QualifiedName` (what a shell bolt process imports)."""
    module, _, name = path.partition(":")
    found: Any = importlib.import_module(module)
    for part in name.split("."):
        found = getattr(found, part)
    if not (isinstance(found, type) and issubclass(found, Bolt)):
        raise TypeError(f"{path} is not a Bolt class")
    return found


def _grouping(grouping: Grouping) -> dict[str, Any]:
    return {"kind": grouping.kind, "source": grouping.source, "stream": grouping.stream, "fields": list(grouping.fields)}


def _plain(outputs: Mapping[str, Fields]) -> dict[str, list[str]]:
    return {stream: list(names) for stream, names in outputs.items()}
