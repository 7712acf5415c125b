"""The bench's options, with defaults sized for a 2-core machine (a full run of the four
scenarios takes a few minutes), and the checks that turn bad values into clear messages."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

TRANSPORTS = ("sse", "websocket", "longpoll")
SCENARIO_NAMES = ("embedded", "brokers", "nchan", "raw-nchan")
DEFAULT_MIX = "sse=60,websocket=30,longpoll=10"
SUBSCRIBERS_PER_CLIENT = 2500
"""`--clients 0` starts one client process per this many subscribers (at most one per core)."""


def parse_mix(text: str) -> dict[str, float]:
    """`sse=60,websocket=30,longpoll=10` -> shares that add up to 1 (any positive scale)."""
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or name not in TRANSPORTS:
            raise ValueError(f"mix {text!r}: expected NAME=WEIGHT pairs with NAME one of {', '.join(TRANSPORTS)}")
        if name in weights:
            raise ValueError(f"mix {text!r}: {name} is given twice")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"mix {text!r}: weight {value!r} of {name} is not a number") from None
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"mix {text!r}: weight of {name} must be 0 or more")
        weights[name] = weight
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"mix {text!r}: at least one weight must be positive")
    return {name: weight / total for name, weight in weights.items() if weight > 0}


def parse_rate(text: str) -> float | None:
    """Posts per second, or `max` (None): as fast as the system accepts them."""
    if text.strip().lower() == "max":
        return None
    try:
        rate = float(text)
    except ValueError:
        raise ValueError(f"rate {text!r} is neither a number of posts per second nor 'max'") from None
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"rate {text!r} must be positive")
    return rate


def parse_scenarios(text: str) -> tuple[str, ...]:
    """`all` or comma-separated scenario names, in the order given."""
    if text.strip() == "all":
        return SCENARIO_NAMES
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in SCENARIO_NAMES]
    if unknown or not names:
        raise ValueError(f"unknown scenario {', '.join(unknown) or text!r}; known: all, {', '.join(SCENARIO_NAMES)}")
    return names


@dataclass(frozen=True)
class BenchConfig:
    """Everything one `threadcast bench` invocation does; construction checks every value."""

    scenarios: tuple[str, ...] = SCENARIO_NAMES
    subscribers: int = 1000
    threads: int = 50
    zipf: float = 1.0
    rate: float | None = 20.0
    """Posts per second (open loop); None: `inflight` posters back to back (closed loop)."""
    inflight: int = 8
    duration: float = 20.0
    mix: dict[str, float] = field(default_factory=lambda: parse_mix(DEFAULT_MIX))
    clients: int = 0
    """Client processes for the subscribers; 0 picks from the number of subscribers."""
    connect_concurrency: int = 200
    connect_timeout: float = 30.0
    drain: float = 5.0
    """At most this many seconds after the last post for the last deliveries to arrive."""
    seed: int = 1
    out: Path = Path("bench-results")
    kafka_url: str = ""
    amqp_url: str = ""
    nginx: str = ""
    """The nginx binary for the Nchan scenarios; empty: `nginx` on PATH or in /usr/sbin."""
    nchan_module: str = ""
    """Path of ngx_nchan_module.so; empty: where Debian installs it."""

    def __post_init__(self) -> None:
        problems = []
        if not self.scenarios or any(name not in SCENARIO_NAMES for name in self.scenarios):
            problems.append(f"scenarios must be among {', '.join(SCENARIO_NAMES)}")
        if self.subscribers < 1:
            problems.append("--subscribers must be at least 1")
        if self.threads < 1:
            problems.append("--threads must be at least 1")
        if not math.isfinite(self.zipf) or self.zipf < 0:
            problems.append("--zipf must be 0 (uniform) or more")
        if self.rate is not None and not (math.isfinite(self.rate) and self.rate > 0):
            problems.append("--rate must be positive or 'max'")
        if not 1 <= self.inflight <= 256:
            problems.append("--inflight must be between 1 and 256")
        if not math.isfinite(self.duration) or self.duration <= 0:
            problems.append("--duration must be positive")
        if not self.mix or any(name not in TRANSPORTS or share <= 0 for name, share in self.mix.items()):
            problems.append(f"--mix must give positive shares to some of {', '.join(TRANSPORTS)}")
        if self.clients < 0 or self.clients > max(1, self.subscribers):
            problems.append("--clients must be 0 (automatic) or between 1 and the number of subscribers")
        if self.connect_concurrency < 1:
            problems.append("--connect-concurrency must be at least 1")
        if not math.isfinite(self.connect_timeout) or self.connect_timeout <= 0:
            problems.append("--connect-timeout must be positive")
        if not math.isfinite(self.drain) or self.drain < 0:
            problems.append("--drain must be 0 or more")
        if problems:
            raise ValueError("; ".join(problems))

    def client_processes(self) -> int:
        if self.clients:
            return self.clients
        return max(1, min(os.cpu_count() or 1, math.ceil(self.subscribers / SUBSCRIBERS_PER_CLIENT)))

    def as_dict(self) -> dict[str, object]:
        """The options as they go into the JSON results."""
        return {
            "scenarios": list(self.scenarios),
            "subscribers": self.subscribers,
            "threads": self.threads,
            "zipf": self.zipf,
            "rate": self.rate if self.rate is not None else "max",
            "inflight": self.inflight,
            "duration_s": self.duration,
            "mix": self.mix,
            "client_processes": self.client_processes(),
            "connect_concurrency": self.connect_concurrency,
            "drain_s": self.drain,
            "seed": self.seed,
        }
