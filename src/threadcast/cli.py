"""The `threadcast` command."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING

import click
import uvicorn
from pydantic import ValidationError

from threadcast.config import Settings, load_settings
from threadcast.edge.nginx_config import DEBIAN_NCHAN_MODULE, Address, EdgeConfigOptions, render_nginx_config
from threadcast.logs import configure_logging

if TYPE_CHECKING:
    from threadcast.system import System


def _settings(config: Path | None, **overrides: object) -> Settings:
    try:
        return load_settings(config, **overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise click.UsageError(f"invalid configuration: {problems}") from None
    except (OSError, ValueError) as exc:
        raise click.UsageError(f"cannot read configuration: {exc}") from None


config_option = click.option(
    "--config", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="TOML file ([threadcast] table)."
)


@click.group()
@click.version_option(package_name="threadcast")
def main() -> None:
    """threadcast: realtime comments, queues over RPC, a push edge."""


@main.command()
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8000).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Default ./.threadcast")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
@config_option
def up(host: str | None, port: int | None, data_dir: Path | None, log_level: str, config: Path | None) -> None:
    """Run the whole system in one process: API, relay, dispatcher, formatter and edge."""
    from threadcast.app import create_app
    from threadcast.system import System

    settings = _settings(config, host=host, port=port, data_dir=data_dir)
    configure_logging(log_level)
    system = System(settings)
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
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write here instead of stdout.")
@config_option
def edge_config(
    listen: Address,
    api: Address,
    prefix: Path,
    allow: tuple[str, ...],
    module: str,
    edge_url: str,
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
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    text = render_nginx_config(options, settings)
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text)
