"""A threadcast `Topology` as a Flux definition: the YAML that Storm's Flux turns into a Storm
topology, with no Java code of threadcast's.

- The spout is Storm's KafkaSpout (storm-kafka-client) reading the spout spec's topics as its
  group: from the group's committed offsets (`UNCOMMITTED_EARLIEST`), at least once, committing
  every `commit_interval`, fetching a little from each partition at a time
  (`PARTITION_FETCH_BYTES`). Its default record translator emits `(topic, partition, offset, key,
  value)`, the log spout's fields; keys and values are read as UTF-8 text (`StringDeserializer`,
  which puts U+FFFD where bytes are not UTF-8, like the log spout).
- Each bolt is a `FluxShellBolt` running `<python> -m threadcast.stats.storm.bolt module:Class`,
  one Python process per task, with its output fields per stream, its parallelism, its groupings
  (stream ids included) and its tick interval (`topology.tick.tuple.freq.secs`: Storm ticks in
  whole seconds, so it is rounded up).
- The topology conf carries the message timeout, max spout pending, the number of workers,
  `topology.subprocess.timeout.secs` (how long a bolt may stay in one `process` or `tick`, such as
  a slow object-store write, before Storm kills it as hung) and, under the one key `threadcast`,
  what the bolt processes need: the topology's conf, each bolt's own conf and every component's
  output fields (Storm hands the topology conf to shell bolts in the multilang handshake).
- Settings that may hold secrets do not go in the conf (which Storm shows in its UI and logs):
  the bolts get them from their environment (`ShellBolt.setEnv`), written as Flux placeholders
  `${ENV-NAME}` that Flux's `--env-filter` fills in from its own environment at submission.

Flux substitutes at most one placeholder per line, and PyYAML's block style puts each one on a
line of its own.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from threadcast.stats.spout import LogSpoutSpec
from threadcast.stats.topology import BoltSpec, Grouping, SpoutSpec, Topology

CONF_KEY = "threadcast"
"""The topology conf key under which the bolts find threadcast's conf."""
BOLT_MODULE = "threadcast.stats.storm.bolt"
ENV_CONF = {"THREADCAST_STORE_URL": "store_url"}
"""Environment variables handed to the bolts instead of the conf keys they stand for."""

KAFKA_SPOUT = "org.apache.storm.kafka.spout.KafkaSpout"
KAFKA_SPOUT_CONFIG = "org.apache.storm.kafka.spout.KafkaSpoutConfig"
KAFKA_FIELDS = ("topic", "partition", "offset", "key", "value")
"""What KafkaSpout's default record translator emits."""
STRING_DESERIALIZER = "org.apache.kafka.common.serialization.StringDeserializer"
PARTITION_FETCH_BYTES = 64 * 1024
"""The consumer's `max.partition.fetch.bytes` (1 MiB by default): how far one partition gets
ahead of the others per fetch while the spout reads a backlog (a few hundred records instead of
thousands). Records of partitions that are ahead wait in open windows, which close when the
slowest partition has passed them. It does not order records by time across partitions, as the
embedded spout does: see "Backlogs on Storm" in docs/stats.md."""
SHELL_BOLT = "org.apache.storm.flux.wrappers.bolts.FluxShellBolt"
GROUPINGS = {"fields": "FIELDS", "all": "ALL", "shuffle": "SHUFFLE", "global": "GLOBAL"}


@dataclass(frozen=True)
class StormOptions:
    """How the topology runs on Storm, beyond what the Topology says."""

    bootstrap_servers: str
    """Kafka's `host:port[,host:port]`."""
    python: str = sys.executable
    """The interpreter that runs the bolts on the Storm workers (threadcast installed)."""
    workers: int = 1
    subprocess_timeout: int = 300
    """Seconds a bolt may spend in one call before Storm kills it as hung."""


class Placeholder(str):
    """`${ENV-NAME}`, written in single quotes: what Flux puts in its place stays a string, an
    empty one included (unquoted, an empty value would be YAML's null)."""

    @classmethod
    def of(cls, name: str) -> Placeholder:
        return cls(f"${{ENV-{name}}}")


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(Placeholder, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", value, style="'"))


def flux_yaml(topology: Topology, options: StormOptions) -> str:
    return yaml.dump(flux_definition(topology, options), Dumper=_Dumper, sort_keys=False, width=10_000)


def flux_definition(topology: Topology, options: StormOptions) -> dict[str, Any]:
    """The Flux definition as plain data (`flux_yaml` writes it out)."""
    topology.validate()
    if options.workers < 1 or options.subprocess_timeout < 1:
        raise ValueError("workers and subprocess_timeout must be positive")
    components: list[dict[str, Any]] = []
    spouts = [_spout(spout, options, components) for spout in topology.spouts.values()]
    return {
        "name": topology.name,
        "config": {
            "topology.workers": options.workers,
            "topology.message.timeout.secs": math.ceil(topology.message_timeout),
            "topology.max.spout.pending": topology.max_spout_pending,
            "topology.subprocess.timeout.secs": options.subprocess_timeout,
            CONF_KEY: _threadcast_conf(topology),
        },
        "components": components,
        "spouts": spouts,
        "bolts": [_bolt(bolt, options) for bolt in topology.bolts.values()],
        "streams": [_stream(bolt, grouping) for bolt in topology.bolts.values() for grouping in bolt.inputs],
    }


def flux_env(topology: Topology) -> dict[str, str]:
    """What Flux's environment must hold at submission to fill in the bolts' `${ENV-...}`."""
    return {name: str(topology.conf.get(key, "")) for name, key in ENV_CONF.items()}


def tick_seconds(tick: float) -> int:
    """Storm's tick interval for a bolt's `tick`: whole seconds, at least one."""
    return max(1, math.ceil(tick))


def _threadcast_conf(topology: Topology) -> dict[str, Any]:
    return {
        "name": topology.name,
        "conf": _without_env(topology.conf),
        "bolts": {bolt.id: _without_env(bolt.conf) for bolt in topology.bolts.values()},
        "outputs": {
            component.id: {stream: list(fields) for stream, fields in component.outputs().items()}
            for component in [*topology.spouts.values(), *topology.bolts.values()]
        },
    }


def _without_env(conf: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in conf.items() if key not in ENV_CONF.values()}


def _spout(spout: SpoutSpec, options: StormOptions, components: list[dict[str, Any]]) -> dict[str, Any]:
    spec = spout.spec
    if not isinstance(spec, LogSpoutSpec):
        raise ValueError(f"spout {spout.id!r}: Storm runs log spouts (LogSpoutSpec), not {type(spec).__name__}")
    if spec.stop_at_end:
        raise ValueError(f"spout {spout.id!r}: a bounded run (stop_at_end) is for the embedded runner; Storm runs unbounded")
    if tuple(spec.output_fields) != KAFKA_FIELDS:
        raise ValueError(f"spout {spout.id!r} emits {spec.output_fields}; KafkaSpout emits {KAFKA_FIELDS}")
    # `buffer` (the embedded spout's read-ahead) has no KafkaSpout counterpart.
    builder: dict[str, Any] = {
        "id": f"{spout.id}-config-builder",
        "className": f"{KAFKA_SPOUT_CONFIG}$Builder",
        "constructorArgs": [options.bootstrap_servers, list(spec.topics)],
        "properties": [
            {"name": "firstPollOffsetStrategy", "value": "UNCOMMITTED_EARLIEST" if spec.start_at is None else "TIMESTAMP"},
            {"name": "processingGuarantee", "value": "AT_LEAST_ONCE"},
        ],
        "configMethods": [
            {
                "name": "setProp",
                "args": [
                    {
                        "key.deserializer": STRING_DESERIALIZER,
                        "value.deserializer": STRING_DESERIALIZER,
                        "max.poll.records": spec.poll_records,
                        "max.partition.fetch.bytes": PARTITION_FETCH_BYTES,
                    }
                ],
            },
            {"name": "setGroupId", "args": [spec.group]},
            {"name": "setOffsetCommitPeriodMs", "args": [max(1, round(spec.commit_interval * 1000))]},
        ],
    }
    if spec.start_at is not None:
        builder["configMethods"].append({"name": "setStartTimeStamp", "args": [round(spec.start_at * 1000)]})
    config = {"id": f"{spout.id}-config", "className": KAFKA_SPOUT_CONFIG, "constructorArgs": [{"ref": builder["id"]}]}
    components += [builder, config]
    return {
        "id": spout.id,
        "className": KAFKA_SPOUT,
        "constructorArgs": [{"ref": config["id"]}],
        "parallelism": spout.parallelism,
    }


def _bolt(bolt: BoltSpec, options: StormOptions) -> dict[str, Any]:
    methods: list[dict[str, Any]] = []
    for stream, fields in bolt.outputs().items():
        if stream == "default":
            methods.append({"name": "setDefaultStream", "args": [list(fields)]})
        else:
            methods.append({"name": "setNamedStream", "args": [stream, list(fields)]})
    if bolt.tick is not None:
        methods.append({"name": "addComponentConfig", "args": ["topology.tick.tuple.freq.secs", tick_seconds(bolt.tick)]})
    methods.append({"name": "setEnv", "args": [{name: Placeholder.of(name) for name in ENV_CONF}]})
    return {
        "id": bolt.id,
        "className": SHELL_BOLT,
        # The command only: output fields come from the methods above (Flux cannot match a
        # constructor to an empty list of fields, which a bolt without outputs would need).
        "constructorArgs": [[options.python, "-m", BOLT_MODULE, bolt.factory_path]],
        "configMethods": methods,
        "parallelism": bolt.parallelism,
    }


def _stream(bolt: BoltSpec, grouping: Grouping) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": GROUPINGS[grouping.kind], "streamId": grouping.stream}
    if grouping.fields:
        spec["args"] = list(grouping.fields)
    return {"from": grouping.source, "to": bolt.id, "grouping": spec}
