"""The live configuration tree: paths, parsing command-line values, validation, differences."""

from __future__ import annotations

import re

import pytest

from threadcast.config import Settings
from threadcast.coord import ConfigError, LiveConfig
from threadcast.coord.live_config import (
    changed_paths,
    decode,
    encode,
    flatten,
    leaf_paths,
    parse_value,
    value_at,
    with_value,
)


def test_every_leaf_has_a_path():
    assert leaf_paths() == [
        "channels.buffer_length",
        "channels.buffer_ttl",
        "rate_limits.posts_per_minute",
        "rate_limits.votes_per_minute",
        "rate_limits.subscribes_per_minute",
        "max_message_bytes",
        "maintenance.enabled",
        "maintenance.message",
        "features",
        "edges",
    ]
    assert set(flatten(LiveConfig())) == set(leaf_paths())


@pytest.mark.parametrize(
    ("path", "text", "value"),
    [
        ("channels.buffer_length", "500", 500),
        ("channels.buffer_ttl", "90.5", 90.5),
        ("maintenance.enabled", "true", True),
        ("maintenance.message", "back at 10:00", "back at 10:00"),
        ("maintenance.message", "42", "42"),
        ("features.new_editor", "false", False),
        (
            "edges",
            "http://127.0.0.1:8000, nchan+http://127.0.0.1:8080",
            ["http://127.0.0.1:8000", "nchan+http://127.0.0.1:8080"],
        ),
        ("edges", '["http://127.0.0.1:8000"]', ["http://127.0.0.1:8000"]),
        ("features", '{"a": true}', {"a": True}),
        ("channels", '{"buffer_length": 7}', {"buffer_length": 7, "buffer_ttl": 3600.0}),
    ],
)
def test_command_line_values_take_the_type_of_their_path(path, text, value):
    assert value_at(with_value(LiveConfig(), path, parse_value(path, text)), path) == value


@pytest.mark.parametrize(
    ("path", "text", "message"),
    [
        ("channels.size", "1", "unknown configuration path 'channels.size'; known: channels.buffer_length"),
        ("max_message_bytes.x", "1", "unknown configuration path"),
        ("nothing", "1", "known: channels.buffer_length"),
        ("channels.buffer_length", "lots", "Expected `int`, got `str`"),
        ("channels.buffer_length", "0", "Expected `int` >= 1"),
        ("maintenance.enabled", "maybe", "Expected `bool`"),
        ("edges", "ftp://127.0.0.1", "matching regex"),
        ("features.Bad Name", "true", "at `key` in `$.features`"),
        ("max_message_bytes", "10", "Expected `int` >= 1024"),
    ],
)
def test_bad_paths_and_values_say_what_is_wrong(path, text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        with_value(LiveConfig(), path, parse_value(path, text))


def test_a_change_keeps_the_rest_of_the_tree():
    start = with_value(LiveConfig(), "features.beta", True)
    changed = with_value(start, "channels.buffer_length", 10)
    assert changed.features == {"beta": True}
    assert changed.channels.buffer_length == 10
    assert start.channels.buffer_length == 200
    assert changed_paths(start, changed) == ("channels.buffer_length",)
    assert changed_paths(changed, with_value(changed, "features.gamma", False)) == ("features.gamma",)
    assert changed_paths(changed, changed) == ()


def test_value_at_reports_unset_keys():
    assert value_at(LiveConfig(), "channels") == {"buffer_length": 200, "buffer_ttl": 3600.0}
    with pytest.raises(ConfigError, match="is not set"):
        value_at(LiveConfig(), "features.nope")


def test_stored_trees_round_trip_and_tolerate_fields_of_other_versions():
    tree = with_value(LiveConfig(), "edges", ["http://127.0.0.1:1"])
    assert decode(encode(tree)) == tree
    assert decode(b'{"channels": {"buffer_length": 3}, "from_the_future": 1}').channels.buffer_length == 3
    with pytest.raises(ConfigError):
        decode(b'{"channels": {"buffer_length": -1}}')


def test_defaults_follow_the_process_settings():
    settings = Settings(channel_buffer_length=50, channel_buffer_ttl=60, max_message_bytes=2048)
    tree = LiveConfig.from_settings(settings)
    assert (tree.channels.buffer_length, tree.channels.buffer_ttl, tree.max_message_bytes) == (50, 60.0, 2048)
    assert LiveConfig.from_settings(Settings()) == LiveConfig()
