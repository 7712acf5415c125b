"""Feature flags: `features.<name>` in the live configuration, switched at run time with
`threadcast config set features.<name> true|false`.

The flags threadcast itself reads are listed in `FEATURES`, each with its value while unset.
Any other flag that is set reaches the embed as it is (`GET /api/v1/config/public`), so the page
can switch its own behaviour without a new release of the API.
"""

from __future__ import annotations

from dataclasses import dataclass

from threadcast.coord.live_config import LiveConfig


@dataclass(frozen=True)
class Feature:
    default: bool
    description: str


FEATURES: dict[str, Feature] = {
    "long_poll": Feature(
        True,
        "the embedded edge serves long-poll subscribers; off: they get 403 `feature_disabled` "
        "(EventSource and WebSocket go on)",
    ),
}


def enabled(config: LiveConfig, name: str) -> bool:
    """The flag's value: as set, else its default (off for a flag threadcast does not know)."""
    known = FEATURES.get(name)
    return config.features.get(name, known.default if known is not None else False)


def public_flags(config: LiveConfig) -> dict[str, bool]:
    """Every known flag and every flag set, with its value now."""
    return {name: enabled(config, name) for name in sorted({*FEATURES, *config.features})}
