"""The live configuration: one typed tree shared by every threadcast process through the
coordination backend, changed at run time with `threadcast config set` and applied by running
services without a restart.

A value is named by its dotted path (`channels.buffer_length`, `features.new_editor`). Changes go
through `with_value`, which validates the whole tree, so a stored tree is always valid.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct, field

from threadcast.config import Settings
from threadcast.coord.errors import ConfigError

FeatureName = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
EdgeURL = Annotated[str, Meta(pattern=r"^(nchan\+)?https?://[^/\s]+")]


class ChannelSettings(Struct, kw_only=True):
    buffer_length: Annotated[int, Meta(ge=1, le=1_000_000)] = 200
    """Messages an edge keeps per channel for subscribers that resume."""
    buffer_ttl: Annotated[float, Meta(gt=0)] = 3600.0
    """Seconds an edge keeps a buffered message."""


class RateLimits(Struct, kw_only=True):
    """Per client; 0 means unlimited."""

    posts_per_minute: Annotated[int, Meta(ge=0)] = 30
    votes_per_minute: Annotated[int, Meta(ge=0)] = 120
    subscribes_per_minute: Annotated[int, Meta(ge=0)] = 600


class Maintenance(Struct, kw_only=True):
    enabled: bool = False
    """When on, the API refuses writes (with `message`); reading and realtime keep working."""
    message: Annotated[str, Meta(max_length=500)] = ""


class LiveConfig(Struct, kw_only=True):
    channels: ChannelSettings = field(default_factory=ChannelSettings)
    rate_limits: RateLimits = field(default_factory=RateLimits)
    max_message_bytes: Annotated[int, Meta(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    """The largest push message the formatter publishes."""
    maintenance: Maintenance = field(default_factory=Maintenance)
    features: dict[FeatureName, bool] = field(default_factory=dict)
    """Feature flags by name."""
    edges: list[EdgeURL] = field(default_factory=list)
    """The push edges publishers send to (`http://...` or `nchan+http://...`). Empty: the
    edges of the `edge_url` setting."""

    @classmethod
    def from_settings(cls, settings: Settings) -> LiveConfig:
        """The tree a process uses while none is stored: its own settings' values."""
        return cls(
            channels=ChannelSettings(
                buffer_length=settings.channel_buffer_length, buffer_ttl=settings.channel_buffer_ttl
            ),
            max_message_bytes=settings.max_message_bytes,
        )


class ConfigUpdate(Struct, frozen=True):
    """What `Coordinator.watch_config` yields: the tree, its version and what changed."""

    version: int
    """0 while no tree is stored (the defaults); grows with every change."""
    config: LiveConfig
    changed: tuple[str, ...]
    """The leaf paths whose values differ from the previous update (empty for the first)."""


def encode(config: LiveConfig) -> bytes:
    return msgspec.json.encode(config)


def decode(document: bytes) -> LiveConfig:
    """A stored tree. Fields it lacks take their defaults; fields this version does not know
    are ignored."""
    try:
        return msgspec.json.decode(document, type=LiveConfig)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise ConfigError(f"the stored configuration is invalid: {exc}") from None


def _strip(tp: Any) -> Any:
    """`Annotated[X, ...]` -> X."""
    return typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Struct)


def type_at(path: str) -> Any:
    """The type of the value at `path` (raises `ConfigError` for a path the tree lacks)."""
    tp: Any = LiveConfig
    for depth, name in enumerate(path.split(".")):
        tp = _strip(tp)
        if _is_struct(tp):
            by_name = {f.name: f.type for f in msgspec.structs.fields(tp)}
            if name not in by_name:
                raise ConfigError(_unknown(path, ".".join(path.split(".")[:depth])))
            tp = by_name[name]
        elif typing.get_origin(tp) is dict and name:
            tp = typing.get_args(tp)[1]
        else:
            raise ConfigError(_unknown(path, ".".join(path.split(".")[:depth])))
    return tp


def _unknown(path: str, parent: str) -> str:
    known = [p for p in leaf_paths() if p.startswith(parent + ".")] or leaf_paths()
    return f"unknown configuration path {path!r}; known: {', '.join(known)}"


def leaf_paths() -> list[str]:
    """Every path of the schema that names a value (a dict's own path stands for its keys)."""

    def walk(tp: Any, path: str) -> list[str]:
        tp = _strip(tp)
        if not _is_struct(tp):
            return [path]
        return [p for f in msgspec.structs.fields(tp) for p in walk(f.type, f"{path}.{f.name}" if path else f.name)]

    return walk(LiveConfig, "")


def flatten(config: LiveConfig) -> dict[str, Any]:
    """Leaf path -> value; a dict contributes one entry per key (`features.x`), or itself
    when empty."""
    flat: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, Mapping) and (value or not prefix):
            for key, item in value.items():
                walk(item, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = value

    walk(msgspec.to_builtins(config), "")
    return flat


def value_at(config: LiveConfig, path: str) -> Any:
    """The value at `path`, as JSON-ready builtins."""
    type_at(path)
    value: Any = msgspec.to_builtins(config)
    for name in path.split("."):
        if name not in value:
            raise ConfigError(f"{path!r} is not set")
        value = value[name]
    return value


def with_value(config: LiveConfig, path: str, value: Any) -> LiveConfig:
    """A copy of `config` with `value` at `path`, validated whole (raises `ConfigError`)."""
    type_at(path)
    tree: dict[str, Any] = msgspec.to_builtins(config)
    *parents, leaf = path.split(".")
    node = tree
    for name in parents:
        node = node[name]
    node[leaf] = msgspec.to_builtins(value)
    try:
        return msgspec.convert(tree, LiveConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid value for {path}: {exc}") from None


def parse_value(path: str, text: str) -> Any:
    """A command-line string as the type of `path`: `200` for a number, `true`/`false` for a
    flag, plain text for a string, JSON (or, for a list, comma-separated items) otherwise."""
    tp = type_at(path)
    try:
        return msgspec.convert(text, tp, strict=False)
    except msgspec.ValidationError as as_text:
        try:
            decoded = msgspec.json.decode(text)
        except msgspec.DecodeError:
            if typing.get_origin(_strip(tp)) is not list:
                raise ConfigError(f"invalid value for {path}: {as_text}") from None
            decoded = [item.strip() for item in text.split(",") if item.strip()]
    try:
        return msgspec.convert(decoded, tp)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid value for {path}: {exc}") from None


def changed_paths(old: LiveConfig, new: LiveConfig) -> tuple[str, ...]:
    before, after = flatten(old), flatten(new)
    return tuple(sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p)))
