"""`threadcast stats storm`: the stats topology on Apache Storm.

    threadcast stats storm local  [--duration S]         # Storm's local mode, one JVM, here
    threadcast stats storm submit --nimbus HOST[:PORT]   # to a Storm cluster
    threadcast stats storm kill   --nimbus HOST[:PORT] NAME
    threadcast stats storm flux                          # print the Flux definition

The topology is the one the embedded runner runs (`threadcast.stats.definition`), made into a
Flux definition (`threadcast.stats.storm.flux`): Storm's Kafka spout reads the event log's
topics (THREADCAST_LOG_URL must be kafka://...), the Python bolts run as shell bolts, the sink
writes to THREADCAST_STORE_URL. Storm's jars come from `--storm-lib` (THREADCAST_STORM_LIB;
`dev/storm/service install` puts them in .run/storm/lib).

Bad input (a log that is not Kafka, stats settings out of range, no jars) exits with status 2
and a one-line message; a Storm program that fails exits with status 1 and the end of its
output.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import click

from threadcast.stats.cli import BadInput, store_options
from threadcast.stats.storm.cluster import DEFAULT_NIMBUS_PORT, StormCluster, StormCommandFailed

if TYPE_CHECKING:
    from threadcast.config import Settings
    from threadcast.stats.definition import StatsConfig
    from threadcast.stats.storm.flux import StormOptions
    from threadcast.stats.storm.local import LocalRun
    from threadcast.stats.topology import Topology

F = TypeVar("F", bound=Callable[..., Any])
FOREVER = 10 * 365 * 86400
"""`storm.local.sleeptime` of a run without --duration (LocalCluster wants a number)."""
LOCAL_ZK_ROOT = "/threadcast-storm-local"


@dataclass
class Deployment:
    """The stats topology for Storm, from the settings, with what Flux needs to run it."""

    settings: Settings
    config: StatsConfig
    topology: Topology
    options: StormOptions

    def definition(self) -> str:
        from threadcast.stats.storm.flux import flux_yaml

        return flux_yaml(self.topology, self.options)

    def env(self) -> dict[str, str]:
        from threadcast.stats.storm.flux import flux_env

        return flux_env(self.topology)


def _check_jars(lib: Path, artifact: str) -> None:
    from threadcast.stats.storm.java import find_jar

    try:
        find_jar(lib, artifact)
    except FileNotFoundError as exc:
        raise BadInput(str(exc)) from None


def _host_port(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":") if ":" in value else (value, "", str(DEFAULT_NIMBUS_PORT))
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"expected HOST[:PORT], got {value!r}", ctx, param)
    return host, int(port)


def _zookeeper_of(coord_url: str) -> str | None:
    parts = urlsplit(coord_url)
    return parts.netloc if parts.scheme == "zk" else None


def topology_options(command: F) -> F:
    """What every command that builds the topology takes."""
    command = store_options(command)
    for option in reversed(
        [
            click.option("--log-url", default=None, help="The event log, kafka://HOST:PORT [env THREADCAST_LOG_URL]."),
            click.option("--name", default="stats", show_default=True, help="Topology name."),
            click.option(
                "--python",
                default=sys.executable,
                show_default="this interpreter",
                help="The Python (with threadcast installed) the workers run the bolts with.",
            ),
            click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Worker JVMs."),
            click.option(
                "--publish/--no-publish",
                default=True,
                show_default=True,
                help="Announce each window on the push edge (THREADCAST_EDGE_URL).",
            ),
        ]
    ):
        command = option(command)
    return command


def lib_option(command: F) -> F:
    return click.option(
        "--storm-lib",
        envvar="THREADCAST_STORM_LIB",
        type=click.Path(file_okay=False, path_type=Path),
        required=True,
        help="Folder of Storm's jars [env THREADCAST_STORM_LIB; dev/storm/service install fills .run/storm/lib].",
    )(command)


def nimbus_option(command: F) -> F:
    return click.option(
        "--nimbus",
        required=True,
        callback=_host_port,
        help=f"Nimbus HOST[:PORT] (port {DEFAULT_NIMBUS_PORT} by default).",
    )(command)


@click.group()
def storm() -> None:
    """The stats topology on Apache Storm (Kafka spout, Python shell bolts)."""


@storm.command("flux")
@topology_options
def storm_flux(**options: Any) -> None:
    """Print the topology's Flux definition (YAML).

    Run it with Flux's --env-filter and THREADCAST_STORE_URL set: the bolts take the store URL
    from that placeholder."""
    click.echo(_deploy(options).definition(), nl=False)


@storm.command("submit")
@topology_options
@lib_option
@nimbus_option
def storm_submit(storm_lib: Path, nimbus: tuple[str, int], **options: Any) -> None:
    """Submit the topology to a Storm cluster (Flux's remote mode)."""
    _check_jars(storm_lib, "flux-core")
    deployment = _deploy(options)
    cluster = StormCluster(storm_lib, *nimbus)
    try:
        cluster.submit(deployment.definition(), deployment.env())
    except StormCommandFailed as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"submitted topology {deployment.topology.name!r} to nimbus {cluster.nimbus}")


@storm.command("kill")
@click.argument("name")
@click.option("--wait", type=click.IntRange(min=0), default=0, show_default=True, help="Seconds the spouts stay deactivated first.")
@lib_option
@nimbus_option
def storm_kill(name: str, wait: int, storm_lib: Path, nimbus: tuple[str, int]) -> None:
    """Kill a topology on a Storm cluster."""
    _check_jars(storm_lib, "storm-core")
    cluster = StormCluster(storm_lib, *nimbus)
    try:
        cluster.kill(name, wait)
    except StormCommandFailed as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"killed topology {name!r} on nimbus {cluster.nimbus}")


@storm.command("local")
@topology_options
@lib_option
@click.option(
    "--zookeeper",
    default=None,
    help="HOST:PORT of the ZooKeeper for Storm's state [default: THREADCAST_COORD_URL's when zk://; "
    "else Storm starts its own, on all interfaces, without tuple timeouts].",
)
@click.option("--duration", type=click.FloatRange(min=1), default=None, help="Seconds to run [default: until Ctrl-C].")
@click.option("--every", type=click.FloatRange(min=0.5), default=5.0, show_default=True, help="Seconds between progress lines.")
def storm_local(storm_lib: Path, zookeeper: str | None, duration: float | None, every: float, **options: Any) -> None:
    """Run the topology in Storm's local mode (one JVM) until Ctrl-C or --duration.

    Prints the records the topology has committed, per topic, as it goes. In local mode a bolt
    that dies ends the JVM (status 1): run again, it resumes from the committed offsets."""
    from threadcast.stats.storm.local import LocalRun, LocalStorm

    _check_jars(storm_lib, "flux-core")
    deployment = _deploy(options)
    settings = deployment.settings
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    folder = settings.data_dir / "storm" / f"local-{run_id}"
    folder.mkdir(parents=True)
    (folder / "topology.yaml").write_text(deployment.definition())
    zookeeper = zookeeper or _zookeeper_of(settings.coord_url)
    local = LocalStorm(
        lib_dir=storm_lib.resolve(),
        zookeeper=zookeeper,
        zk_root=f"{LOCAL_ZK_ROOT}/{run_id}",
        log_file=folder / "storm.log",
        tmp_dir=folder / "tmp",
    )
    run_secs = math.ceil(duration) if duration else FOREVER
    run = LocalRun(local, folder / "topology.yaml", run_secs, {**os.environ, **deployment.env()}, folder / "java.out")
    click.echo(
        f"storm local: topology {deployment.topology.name!r} in JVM pid {run.pid}, "
        f"ZooKeeper {zookeeper or 'in-process'}; logs in {folder}"
    )
    try:
        status = asyncio.run(_watch(run, deployment, every))
    finally:
        run.stop()
        if zookeeper:
            _drop_zk_root(zookeeper, local.zk_root)
    if status is None:
        click.echo("storm local: stopped")
    elif status != 0:
        raise click.ClickException(
            f"the Storm JVM exited with status {status} (a bolt died, or the topology did not start): "
            f"see {local.log_file}; run again to resume from the committed offsets"
        )
    else:
        click.echo("storm local: finished")


async def _watch(run: LocalRun, deployment: Deployment, every: float) -> int | None:
    """Print progress every `every` seconds until the JVM exits (its status) or a signal comes
    (None)."""
    from threadcast.bus.kafka_log import KafkaLog

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    started = time.monotonic()
    event_log = KafkaLog(deployment.settings.resolved_log_url())
    await event_log.start()
    try:
        while run.poll() is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            if stop.is_set():
                return None
            if run.poll() is None:
                line = await _progress(event_log, deployment)
                click.echo(f"storm local [{time.monotonic() - started:5.0f}s] {line}")
        return run.poll()
    finally:
        await event_log.close()


async def _progress(event_log: Any, deployment: Deployment) -> str:
    """`events 1200/1500, deliveries 300/310 committed`: the group's committed offsets."""
    from threadcast.stats.definition import topics

    parts = []
    group = deployment.config.group
    for topic in topics(deployment.settings):
        try:
            done = sum((await event_log.committed(topic, group)).values())
            total = sum((await event_log.end_offsets(topic)).values())
        except Exception as exc:  # progress is informative: a slow broker must not end the run
            return f"(no progress figures: {exc})"
        parts.append(f"{topic} {done}/{total}")
    return ", ".join(parts) + " committed"


def _deploy(options: dict[str, Any]) -> Deployment:
    """Settings and topology from the command's options; bad input exits with status 2."""
    from pydantic import ValidationError

    from threadcast.cli import _settings
    from threadcast.stats.definition import StatsConfig

    settings = _settings(
        options["config"],
        data_dir=options["data_dir"],
        store_url=options["store_url"],
        log_url=options["log_url"],
    )
    settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
    if urlsplit(settings.resolved_log_url()).scheme != "kafka":
        raise BadInput(
            f"Storm reads the event log from Kafka, not {settings.resolved_log_url()!r}: "
            "set --log-url or THREADCAST_LOG_URL to kafka://HOST:PORT"
        )
    try:
        config = StatsConfig()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise BadInput(f"invalid stats settings (THREADCAST_STATS_*): {problems}") from None
    try:
        return asyncio.run(_plan(settings, config, options))
    except ValueError as exc:
        raise BadInput(str(exc)) from None


async def _plan(settings: Settings, config: StatsConfig, options: dict[str, Any]) -> Deployment:
    from threadcast.bus.kafka_log import KafkaLog, parse_kafka_url
    from threadcast.stats.definition import log_sources, stats_topology, topics
    from threadcast.stats.storm.flux import StormOptions
    from threadcast.system import remote_edge_urls

    url = settings.resolved_log_url()
    event_log = KafkaLog(url)
    await event_log.start()
    try:
        names = topics(settings)
        for topic in names:
            await event_log.create_topic(topic, settings.log_partitions)
        sources = await log_sources(event_log, names)
    finally:
        await event_log.close()
    sink = {"edge_urls": remote_edge_urls(settings)} if options["publish"] else {"publish": False}
    topology = stats_topology(config, settings, sources, sink=sink)
    topology.name = options["name"]
    storm_options = StormOptions(parse_kafka_url(url).bootstrap_servers, python=options["python"], workers=options["workers"])
    return Deployment(settings, config, topology, storm_options)


def _drop_zk_root(hosts: str, root: str) -> None:
    """Delete a local run's state in ZooKeeper (LocalCluster leaves it there)."""
    try:
        from kazoo.client import KazooClient
    except ImportError:
        return
    client = KazooClient(hosts=hosts)
    try:
        client.start(timeout=10)
        client.delete(root, recursive=True)
    except Exception as exc:
        click.echo(f"storm local: could not delete {root} in ZooKeeper {hosts}: {exc}", err=True)
    finally:
        client.stop()
        client.close()
