"""The `threadcast` command."""

from __future__ import annotations

import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click
import uvicorn
from pydantic import ValidationError

from threadcast.bench.command import bench
from threadcast.config import Settings, load_settings
from threadcast.edge.nginx_config import DEBIAN_NCHAN_MODULE, Address, EdgeConfigOptions, render_nginx_config
from threadcast.logs import configure_logging
from threadcast.stats.cli import stats

if TYPE_CHECKING:
    from threadcast.bus.queue import WorkQueue
    from threadcast.coord import Coordinator
    from threadcast.system import System
    from threadcast.toolkit import Service

T = TypeVar("T")


def _settings(config: Path | None, **overrides: object) -> Settings:
    try:
        return load_settings(config, **overrides)
    except ValidationError as exc:
        raise _invalid(exc) from None
    except (OSError, ValueError) as exc:
        raise click.UsageError(f"cannot read configuration: {exc}") from None


def _service_configs(services: list[Service]) -> dict[str, object]:
    """Each service's own configuration (its `config` type, read from the environment), made
    before anything starts: an invalid one exits with status 2, as invalid settings do."""
    configs: dict[str, object] = {}
    for service in services:
        if service.config is not None:
            try:
                configs[service.name] = service.config()
            except ValidationError as exc:
                raise _invalid(exc) from None
    return configs


def _invalid(exc: ValidationError) -> click.UsageError:
    problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return click.UsageError(f"invalid configuration: {problems}")


config_option = click.option(
    "--config", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="TOML file ([threadcast] table)."
)


@click.group()
@click.version_option(package_name="threadcast")
def main() -> None:
    """threadcast: realtime comments, queues over RPC, a push edge."""


main.add_command(bench)
main.add_command(stats)


@main.command()
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8000).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Default ./.threadcast")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
@config_option
def up(host: str | None, port: int | None, data_dir: Path | None, log_level: str, config: Path | None) -> None:
    """Run the whole system in one process: API, relay, dispatcher, formatter, janitor and edge."""
    from threadcast.app import create_app
    from threadcast.services import builtin_services
    from threadcast.system import System

    settings = _settings(config, host=host, port=port, data_dir=data_dir)
    _service_configs(builtin_services(settings.service_names()))  # the services make them again
    configure_logging(log_level)
    system = System(settings, settings.service_names())
    app = create_app(system)
    base = settings.base_url()
    click.echo(
        f"threadcast is starting on {base}\n"
        f"  demo page     {base}/\n"
        f"  API docs      {base}/api/v1/docs\n"
        f"  subscribe     {base}/sub/thread:<id>\n"
        f"  health        {base}/healthz  {base}/readyz  {base}/metrics\n"
        f"  data          {settings.data_dir.resolve()}\n"
        "Press Ctrl-C to stop."
    )
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="warning", timeout_graceful_shutdown=10
    )
    _Server(config, system).run()


class _Server(uvicorn.Server):
    """uvicorn, but a graceful stop on SIGINT/SIGTERM exits 0 (uvicorn re-raises the signal),
    and the edge's open streams end at once so the server does not wait for them before
    stopping the services (which finish their work in hand). A second Ctrl-C forces the exit."""

    def __init__(self, config: uvicorn.Config, system: "System") -> None:
        super().__init__(config)
        self.system = system

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.system.serving()  # registers the API (and its edge) now that it answers

    def handle_exit(self, sig: int, frame: object) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True
        self.system.begin_shutdown()


@main.command()
@config_option
def doctor(config: Path | None) -> None:
    """Check every configured backend; exit 1 when one is unreachable."""
    import asyncio

    from threadcast.doctor import run_doctor

    settings = _settings(config)
    checks = asyncio.run(run_doctor(settings))
    for check in checks:
        mark = "ok  " if check.ok else "FAIL"
        click.echo(f"{mark} {check.backend:<9} {check.url}")
        if not check.ok:
            click.echo(f"     {check.detail}")
    if not all(check.ok for check in checks):
        raise SystemExit(1)


@main.command()
@click.argument("services", nargs=-1, required=True, metavar="SERVICE...")
@click.option("--concurrency", type=click.IntRange(min=1), default=None, help="Messages in flight per handler.")
@click.option("--ops-port", type=click.IntRange(0, 65535), default=None, help="Serve /healthz /readyz /metrics here.")
@click.option("--grace", type=click.FloatRange(min=0), default=10.0, show_default=True, help="Seconds to finish work.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
@config_option
def run(
    services: tuple[str, ...],
    concurrency: int | None,
    ops_port: int | None,
    grace: float,
    log_level: str,
    config: Path | None,
) -> None:
    """Run services until SIGTERM or SIGINT. A SERVICE is a built-in name (relay, dispatcher,
    formatter), a module:attribute or a path/to/file.py[:attribute]."""
    from threadcast.system import follow_edges, remote_edge_publisher
    from threadcast.toolkit import Backends, Runner

    settings = _settings(config, ops_port=ops_port)
    found = _find_services(services)
    if len({service.name for service in found}) < len(found):
        raise click.BadParameter("a service is named twice", param_hint="SERVICE")
    configs = _service_configs(found)
    configure_logging(log_level)
    edge = remote_edge_publisher(settings)
    backends = Backends.from_settings(settings, edge=edge)
    runner = Runner(
        found, backends, settings=settings, configs=configs, concurrency=concurrency, grace=grace,
        ops_port=settings.ops_port,
    )  # fmt: skip
    follow_edges(runner, edge)
    raise SystemExit(runner.run())


@main.command("services")
@click.argument("services", nargs=-1, metavar="[SERVICE]...")
@config_option
def describe_services(services: tuple[str, ...], config: Path | None) -> None:
    """Describe services (default: the built-in ones): consumers, subscribers, timers, and the
    queues and topics they use under the current configuration."""
    from threadcast.services import builtin_services

    settings = _settings(config)
    found = _find_services(services) if services else builtin_services()
    click.echo("\n\n".join(service.describe(settings) for service in found))


def _find_services(specs: tuple[str, ...]) -> list[Service]:
    from threadcast.services import BUILTIN, find_service
    from threadcast.toolkit import ServiceNotFound

    try:
        return [find_service(spec) for spec in specs]
    except ServiceNotFound as exc:
        raise click.BadParameter(f"{exc} (built-in: {', '.join(BUILTIN)})", param_hint="SERVICE") from None


@main.group()
def dlq() -> None:
    """Dead letters of a work queue: list, show, replay, purge."""


def _on_queue(config: Path | None, operation: Callable[[WorkQueue], Awaitable[T]]) -> T:
    import asyncio

    from threadcast.bus.queue import UnknownQueueError
    from threadcast.toolkit.dead_letters import on_queue

    settings = _settings(config)
    try:
        return asyncio.run(on_queue(settings.resolved_queue_url(), operation))
    except UnknownQueueError as exc:
        raise click.BadParameter(str(exc), param_hint="QUEUE") from None


@dlq.command("list")
@click.argument("queue")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@config_option
def dlq_list(queue: str, limit: int, config: Path | None) -> None:
    """List dead letters: id, attempts, when, error."""
    from threadcast.toolkit.dead_letters import summary

    for letter in _on_queue(config, lambda q: q.dead_letters(queue, limit=limit)):
        click.echo(summary(letter))


@dlq.command("show")
@click.argument("queue")
@click.argument("message_id")
@config_option
def dlq_show(queue: str, message_id: str, config: Path | None) -> None:
    """Show one dead letter: error, attempts, headers and body."""
    from threadcast.toolkit.dead_letters import details, find

    letter = _on_queue(config, lambda q: find(q, queue, message_id))
    if letter is None:
        raise click.BadParameter(f"no dead letter {message_id!r} in {queue!r}", param_hint="MESSAGE_ID")
    click.echo(details(letter))


@dlq.command("replay")
@click.argument("queue")
@click.argument("message_ids", nargs=-1)
@config_option
def dlq_replay(queue: str, message_ids: tuple[str, ...], config: Path | None) -> None:
    """Move dead letters (all, or the given ids) back to the queue, with fresh attempts."""
    replayed = _on_queue(config, lambda q: q.replay_dead_letters(queue, list(message_ids) or None))
    click.echo(f"replayed {replayed} dead letter{'s' if replayed != 1 else ''} to {queue}")


@dlq.command("purge")
@click.argument("queue")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@config_option
def dlq_purge(queue: str, yes: bool, config: Path | None) -> None:
    """Delete every dead letter of the queue."""
    if not yes:
        click.confirm(f"Delete every dead letter of {queue}?", abort=True)
    purged = _on_queue(config, lambda q: q.purge_dead_letters(queue))
    click.echo(f"purged {purged} dead letter{'s' if purged != 1 else ''} of {queue}")


def _on_coordinator(config: Path | None, operation: Callable[..., Awaitable[T]]) -> T:
    """Run `operation(coordinator)` on the configured coordination backend (THREADCAST_COORD_URL)."""
    import asyncio

    from threadcast.coord import ConfigError, CoordinationError
    from threadcast.coord.admin import on_coordinator

    settings = _settings(config)
    configure_logging("warning")
    try:
        return asyncio.run(on_coordinator(settings, operation))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except CoordinationError as exc:
        raise click.ClickException(f"{exc} (is THREADCAST_COORD_URL right, and the backend up?)") from None


@main.command()
@click.option("--role", default=None, help="Only the members of this role (relay, formatter, edge, ...).")
@config_option
def members(role: str | None, config: Path | None) -> None:
    """List the running members registered with the coordination backend."""
    from threadcast.coord.admin import all_members, members_table

    found = _on_coordinator(config, lambda coordinator: all_members(coordinator, role))
    click.echo(members_table(found) if found else f"no members{f' of role {role!r}' if role else ''}")


@main.group("config")
def live_config() -> None:
    """The live configuration every running process applies within a second (docs/coordination.md)."""


@live_config.command("get")
@click.argument("path", required=False)
@config_option
def live_config_get(path: str | None, config: Path | None) -> None:
    """Print one value (JSON), or the whole tree."""
    from threadcast.coord.admin import render
    from threadcast.coord.live_config import value_at

    async def get(coordinator: Coordinator) -> object:
        tree = await coordinator.get_config()
        return value_at(tree, path) if path else tree

    click.echo(render(_on_coordinator(config, get)))


@live_config.command("set")
@click.argument("path")
@click.argument("value")
@config_option
def live_config_set(path: str, value: str, config: Path | None) -> None:
    """Set PATH to VALUE: a number, true/false, text, or JSON (a list may be comma-separated)."""
    from threadcast.coord.admin import render
    from threadcast.coord.live_config import parse_value, value_at

    async def set_value(coordinator: Coordinator) -> object:
        return value_at(await coordinator.set_config(path, parse_value(path, value)), path)

    click.echo(f"{path} = {render(_on_coordinator(config, set_value))}")


@live_config.command("list")
@config_option
def live_config_list(config: Path | None) -> None:
    """Print every value of the tree, one `path = value` a line."""
    from threadcast.coord.admin import config_lines

    async def tree(coordinator: Coordinator) -> object:
        return await coordinator.get_config()

    click.echo("\n".join(config_lines(_on_coordinator(config, tree))))


@main.group()
def edge() -> None:
    """The production push edge: nginx + Nchan in front of threadcast."""


class AddressType(click.ParamType):
    """`host:port`, parsed into an `Address`."""

    name = "HOST:PORT"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> Address:
        if isinstance(value, Address):
            return value
        try:
            return Address.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@edge.command("config")
@click.option("--listen", default="127.0.0.1:8080", show_default=True, type=AddressType(), help="Where nginx listens.")
@click.option("--api", default="127.0.0.1:8000", show_default=True, type=AddressType(), help="Where the threadcast API listens.")
@click.option(
    "--prefix",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".run/nginx"),
    show_default=True,
    help="nginx's own folder (pid, error log, temp files); start it with nginx -p PREFIX.",
)
@click.option("--allow", multiple=True, metavar="CIDR", help="A network that may publish, besides loopback (repeatable).")
@click.option("--module", default=DEBIAN_NCHAN_MODULE, show_default=True, help="Path of ngx_nchan_module.so.")
@click.option("--edge-url", default="", help="How publishers and the API reach this edge (default http://LISTEN).")
@click.option(
    "--worker-connections",
    type=click.IntRange(min=64),
    default=20000,
    show_default=True,
    help="Connections per nginx worker; file descriptors asked for: twice this plus 1024.",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write here instead of stdout.")
@config_option
def edge_config(
    listen: Address,
    api: Address,
    prefix: Path,
    allow: tuple[str, ...],
    module: str,
    edge_url: str,
    worker_connections: int,
    out: Path | None,
    config: Path | None,
) -> None:
    """Write the nginx configuration that fronts threadcast with Nchan (docs/edge.md)."""
    settings = _settings(config)
    try:
        options = EdgeConfigOptions(
            listen=listen,
            api=api,
            prefix=prefix.resolve(),
            allow=allow,
            module=module,
            edge_url=edge_url,
            worker_connections=worker_connections,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    text = render_nginx_config(options, settings)
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text)
