"""The Flux definition made from a threadcast Topology (threadcast.stats.storm.flux); a real
Storm runs it in tests/e2e/test_storm_stats.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from threadcast.config import Settings
from threadcast.stats.definition import StatsConfig, stats_topology
from threadcast.stats.spout import LogSpoutSpec
from threadcast.stats.storm.flux import StormOptions, flux_definition, flux_env, flux_yaml
from threadcast.stats.topology import Bolt, Topology, load_bolt

SECRET_URL = "s3://bucket/stats?endpoint=http://127.0.0.1:19000&access_key=k&secret_key=very-secret"
SOURCES = ["events/0", "events/1", "deliveries/0", "deliveries/1"]
OPTIONS = StormOptions("127.0.0.1:9092,127.0.0.2:9092", python="/opt/venv/bin/python", workers=2)


def stats(**config: Any) -> Topology:
    settings = Settings(data_dir=Path("/data"), store_url=SECRET_URL)
    return stats_topology(StatsConfig(**config), settings, SOURCES, sink={"publish": False})


def parsed(topology: Topology, options: StormOptions = OPTIONS) -> dict[str, Any]:
    return yaml.safe_load(flux_yaml(topology, options))


def by_id(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in items}


def methods(component: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    return [(method["name"], method["args"]) for method in component.get("configMethods", [])]


def test_the_yaml_is_the_definition() -> None:
    topology = stats()
    assert parsed(topology) == flux_definition(topology, OPTIONS)


def test_topology_conf_carries_timeouts_and_threadcast_conf_without_secrets() -> None:
    topology = stats(window=120, lateness=2, idle_timeout=3, message_timeout=130.5, max_spout_pending=500)
    definition = parsed(topology)
    assert definition["name"] == "stats"
    config = definition["config"]
    assert config["topology.workers"] == 2
    assert config["topology.message.timeout.secs"] == 131  # Storm takes whole seconds
    assert config["topology.max.spout.pending"] == 500
    assert config["topology.subprocess.timeout.secs"] == 300
    threadcast = config["threadcast"]
    assert threadcast["name"] == "stats"
    assert threadcast["conf"]["window"] == 120 and threadcast["conf"]["sources"] == SOURCES
    assert "store_url" not in threadcast["conf"]
    assert threadcast["bolts"] == {"parse": {}, "window": {}, "sink": {"publish": False}}
    assert threadcast["outputs"]["log"] == {"default": ["topic", "partition", "offset", "key", "value"]}
    assert threadcast["outputs"]["parse"]["watermarks"] == ["source", "watermark"]
    assert threadcast["outputs"]["sink"] == {}
    assert "very-secret" not in flux_yaml(topology, OPTIONS)


def test_the_spout_is_kafkas_reading_the_topics_as_the_group_from_its_commits() -> None:
    definition = parsed(stats(group="stats-a"))
    [spout] = definition["spouts"]
    assert spout["className"] == "org.apache.storm.kafka.spout.KafkaSpout"
    assert spout["parallelism"] == 1
    components = by_id(definition["components"])
    config = components[spout["constructorArgs"][0]["ref"]]
    assert config["className"] == "org.apache.storm.kafka.spout.KafkaSpoutConfig"
    builder = components[config["constructorArgs"][0]["ref"]]
    assert builder["className"] == "org.apache.storm.kafka.spout.KafkaSpoutConfig$Builder"
    assert builder["constructorArgs"] == ["127.0.0.1:9092,127.0.0.2:9092", ["events", "deliveries"]]
    assert {p["name"]: p["value"] for p in builder["properties"]} == {
        "firstPollOffsetStrategy": "UNCOMMITTED_EARLIEST",
        "processingGuarantee": "AT_LEAST_ONCE",
    }
    calls = dict(methods(builder))
    assert calls["setGroupId"] == ["stats-a"]
    assert calls["setOffsetCommitPeriodMs"] == [1000]
    [props] = calls["setProp"]
    assert props["value.deserializer"] == props["key.deserializer"] == "org.apache.kafka.common.serialization.StringDeserializer"


def test_a_spout_that_starts_at_a_time_seeks_by_timestamp() -> None:
    topology = stats()
    topology.spouts["log"].spec = LogSpoutSpec(("events",), "rebuild", start_at=1_800_000_000.25)
    builder = by_id(parsed(topology)["components"])["log-config-builder"]
    assert {p["name"]: p["value"] for p in builder["properties"]}["firstPollOffsetStrategy"] == "TIMESTAMP"
    assert dict(methods(builder))["setStartTimeStamp"] == [1_800_000_000_250]


def test_a_bounded_spout_is_refused() -> None:
    topology = stats()
    topology.spouts["log"].spec = LogSpoutSpec(("events",), "g", stop_at_end=True)
    with pytest.raises(ValueError, match="bounded run"):
        flux_definition(topology, OPTIONS)


def test_each_bolt_is_a_shell_bolt_running_its_class_with_its_streams_ticks_and_env() -> None:
    topology = stats(tick=0.25, parse_parallelism=3, window_parallelism=2)
    bolts = by_id(parsed(topology)["bolts"])
    assert list(bolts) == ["parse", "window", "sink"]
    for bolt_id, bolt in bolts.items():
        spec = topology.bolts[bolt_id]
        assert bolt["className"] == "org.apache.storm.flux.wrappers.bolts.FluxShellBolt"
        assert bolt["parallelism"] == spec.parallelism
        [command] = bolt["constructorArgs"]
        assert command == ["/opt/venv/bin/python", "-m", "threadcast.stats.storm.bolt", spec.factory_path]
        assert load_bolt(command[-1]) is spec.factory
        assert ("setEnv", [{"THREADCAST_STORE_URL": "${ENV-THREADCAST_STORE_URL}"}]) in methods(bolt)
    assert methods(bolts["parse"])[:3] == [
        ("setDefaultStream", [list(topology.bolts["parse"].outputs()["default"])]),
        ("setNamedStream", ["watermarks", ["source", "watermark"]]),
        ("addComponentConfig", ["topology.tick.tuple.freq.secs", 1]),  # 0.25 s: Storm ticks whole seconds
    ]
    assert methods(bolts["window"])[:2] == [
        ("setDefaultStream", [["forum", "window_start", "summary"]]),
        ("addComponentConfig", ["topology.tick.tuple.freq.secs", 1]),
    ]
    assert [name for name, _ in methods(bolts["sink"])] == ["setEnv"]  # no outputs, no ticks
    assert bolts["parse"]["parallelism"] == 3 and bolts["window"]["parallelism"] == 2


def test_groupings_keep_their_fields_and_stream_ids() -> None:
    streams = parsed(stats())["streams"]
    assert streams == [
        {"from": "log", "to": "parse", "grouping": {"type": "FIELDS", "streamId": "default", "args": ["topic", "partition"]}},
        {"from": "parse", "to": "window", "grouping": {"type": "FIELDS", "streamId": "default", "args": ["forum"]}},
        {"from": "parse", "to": "window", "grouping": {"type": "ALL", "streamId": "watermarks"}},
        {"from": "window", "to": "sink", "grouping": {"type": "FIELDS", "streamId": "default", "args": ["forum"]}},
    ]


class Echo(Bolt):
    outputs = {"default": ("value",)}


def test_shuffle_and_global_groupings_and_tick_rounding() -> None:
    topology = Topology("t", conf={"store_url": "x"})
    topology.spout("log", LogSpoutSpec(("events",), "g"))
    topology.bolt("a", Echo, 2, tick=2.5).shuffle("log")
    topology.bolt("b", Echo).global_("a")
    definition = parsed(topology)
    assert [s["grouping"] for s in definition["streams"]] == [
        {"type": "SHUFFLE", "streamId": "default"},
        {"type": "GLOBAL", "streamId": "default"},
    ]
    assert ("addComponentConfig", ["topology.tick.tuple.freq.secs", 3]) in methods(by_id(definition["bolts"])["a"])


def test_placeholders_stand_one_per_line_and_the_environment_fills_them() -> None:
    topology = stats()
    text = flux_yaml(topology, OPTIONS)
    lines = [line for line in text.splitlines() if "${" in line]
    assert len(lines) == 3  # one setEnv per bolt
    assert all(line.count("${") == 1 for line in lines)
    assert flux_env(topology) == {"THREADCAST_STORE_URL": SECRET_URL}
    # What Flux's --env-filter does with each line; an empty value stays an empty string.
    for value in (SECRET_URL, ""):
        filled = "\n".join(line.replace("${ENV-THREADCAST_STORE_URL}", value) for line in text.splitlines())
        for bolt in yaml.safe_load(filled)["bolts"]:
            assert ("setEnv", [{"THREADCAST_STORE_URL": value}]) in methods(bolt)
