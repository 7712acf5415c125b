"""`threadcast bench`: the command line. Bad options exit with status 2 and say why; a scenario
that failed to run makes the exit status 1 (an unavailable one does not)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from threadcast.bench.config import DEFAULT_MIX, BenchConfig, parse_mix, parse_rate, parse_scenarios

T = TypeVar("T")
DEFAULTS = BenchConfig()


def _parsed(parse: Callable[[str], T]) -> Callable[[click.Context, click.Parameter, str], T]:
    def callback(ctx: click.Context, param: click.Parameter, value: str) -> T:
        try:
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None

    return callback


def _setting(*names: str, help: str, **kwargs: Any) -> Callable[[T], T]:
    """An option whose default (shown in --help) and type come from `BenchConfig`'s field of the
    same name."""
    field = names[0].lstrip("-").replace("-", "_")
    default = getattr(DEFAULTS, field)
    kwargs.setdefault("type", type(default))
    return click.option(*names, default=default, show_default=True, help=help, **kwargs)


@click.command()
@click.option(
    "--scenarios",
    default="all",
    show_default=True,
    callback=_parsed(parse_scenarios),
    help="all, or some of embedded,brokers,nchan,raw-nchan (run in the order given).",
)
@_setting("--subscribers", "-s", help="Subscriptions held open.")
@_setting("--threads", "-t", help="Threads they spread over.")
@_setting("--zipf", help="Popularity skew: thread k has weight 1/k^ZIPF (0: uniform).")
@click.option(
    "--rate",
    "-p",
    default=str(DEFAULTS.rate),
    show_default=True,
    callback=_parsed(parse_rate),
    help="Posts per second, or max (as fast as the system accepts, --inflight at a time).",
)
@_setting("--inflight", help="Posting connections.")
@_setting("--duration", "-d", help="Seconds of posting per scenario.")
@click.option(
    "--mix",
    default=DEFAULT_MIX,
    show_default=True,
    callback=_parsed(parse_mix),
    help="Transport weights of the subscribers: sse, websocket, longpoll.",
)
@_setting("--clients", help="Subscriber client processes (0: one per 2,500 subscribers, at most one per core).")
@_setting("--connect-concurrency", help="Connections being opened at once, per client process.")
@_setting("--connect-timeout", help="Seconds for every subscriber to be connected and counted by the edge.")
@_setting("--drain", help="Most seconds to wait for the last deliveries.")
@_setting("--seed", help="Seed of the workload (same seed, same workload).")
@_setting(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where each run's folder (results.json, latency-cdf.png, throughput.png) goes.",
)
@click.option(
    "--kafka-url",
    envvar="THREADCAST_TEST_KAFKA_URL",
    default="",
    help="Kafka for the brokers scenario [env THREADCAST_TEST_KAFKA_URL].",
)
@click.option(
    "--amqp-url",
    envvar="THREADCAST_TEST_AMQP_URL",
    default="",
    help="RabbitMQ for the brokers scenario [env THREADCAST_TEST_AMQP_URL].",
)
@click.option(
    "--nginx", default="", help="nginx binary for the Nchan scenarios (default: nginx on PATH or /usr/sbin/nginx)."
)
@click.option("--nchan-module", default="", help="Path of ngx_nchan_module.so (default: Debian's).")
def bench(**options: Any) -> None:
    """Measure latency, throughput, connections and memory of threadcast next to raw Nchan.

    Runs every available scenario one after another (docs/benchmarks.md); prints a table and
    writes JSON and PNG plots under --out.
    """
    try:
        config = BenchConfig(**options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        from threadcast.bench.report import render_table
        from threadcast.bench.runner import run_bench
    except ImportError as exc:
        raise click.ClickException(f"{exc}: install the bench extra: pip install 'threadcast[bench]'") from None
    report, folder = run_bench(config)
    click.echo(render_table(report))
    click.echo(
        f"\nresults: {folder / 'results.json'}  plots: {folder / 'latency-cdf.png'}, {folder / 'throughput.png'}"
    )
    if any(s["status"] == "failed" for s in report["scenarios"]):
        raise SystemExit(1)
