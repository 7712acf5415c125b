"""Prometheus metrics every toolkit service gets, labelled by service and handler."""

from __future__ import annotations

import weakref

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

_LABELS = ("service", "handler")


class Metrics:
    """The toolkit's metrics on one registry (`Metrics.on(registry)` makes them once)."""

    _made: weakref.WeakKeyDictionary[CollectorRegistry, Metrics] = weakref.WeakKeyDictionary()

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.messages_in = Counter(
            "threadcast_messages_in", "Messages received from a work queue or the event log", _LABELS, registry=registry
        )
        self.messages_out = Counter(
            "threadcast_messages_out",
            "Messages produced by handlers (ctx.publish, ctx.append, ctx.push)",
            _LABELS,
            registry=registry,
        )
        self.handled = Counter(
            "threadcast_messages_handled",
            "Messages done: outcome ok (the handler returned) or duplicate (skipped by the inbox)",
            (*_LABELS, "outcome"),
            registry=registry,
        )
        self.duration = Histogram(
            "threadcast_handler_duration_seconds", "Handler run time, failed runs included", _LABELS, registry=registry
        )
        self.retries = Counter("threadcast_retries", "Failed attempts that will be retried", _LABELS, registry=registry)
        self.dead_letters = Counter(
            "threadcast_dead_letters",
            "Messages dead-lettered; reason: failed (attempts used up), rejected, undecodable",
            (*_LABELS, "reason"),
            registry=registry,
        )
        self.parked = Counter(
            "threadcast_parked",
            "Log records moved to their subscriber's retry queue so the partition moves on",
            _LABELS,
            registry=registry,
        )
        self.in_flight = Gauge("threadcast_in_flight", "Messages being handled now", _LABELS, registry=registry)
        self.lag = Gauge(
            "threadcast_consumer_lag",
            "Work waiting: uncommitted log records of the group, or ready and delayed queue messages",
            _LABELS,
            registry=registry,
        )
        self.timer_runs = Counter(
            "threadcast_timer_runs",
            "Timer runs; outcome ok or error",
            ("service", "timer", "outcome"),
            registry=registry,
        )

    @classmethod
    def on(cls, registry: CollectorRegistry = REGISTRY) -> Metrics:
        made = cls._made.get(registry)
        if made is None:
            made = cls._made[registry] = cls(registry)
        return made
