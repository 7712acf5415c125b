"""`threadcast stats`: the realtime stats in the object store, read with SQL.

Bad input (an unknown duration, SQL that DuckDB refuses) exits with status 2 and a one-line
message; a store that cannot be read exits with status 1.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson
from tabulate import tabulate

from threadcast.store.objects.base import ObjectStore

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("table", "csv", "json")


class BadInput(click.ClickException):
    """A one-line error for input the command understood but could not use (exit status 2)."""

    exit_code = 2


def store_options(command: F) -> F:
    """`--store-url`, `--data-dir` and `--config`: where the stats are, like other commands."""
    command = click.option(
        "--config", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="TOML file ([threadcast] table)."
    )(command)
    command = click.option(
        "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Default ./.threadcast"
    )(command)
    return click.option(
        "--store-url",
        default=None,
        help="Object store: a folder, file:///PATH or s3://BUCKET/PREFIX?endpoint=... "
        "[env THREADCAST_STORE_URL; default DATA_DIR/objects].",
    )(command)


def open_store(config: Path | None, data_dir: Path | None, store_url: str | None) -> ObjectStore:
    from threadcast.cli import _settings
    from threadcast.store.objects import open_object_store

    settings = _settings(config, data_dir=data_dir, store_url=store_url)
    try:
        return open_object_store(settings.store_url, settings.object_store_root())
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _since(ctx: click.Context, param: click.Parameter, value: str) -> datetime:
    from threadcast.stats.query import parse_since

    try:
        return parse_since(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


format_option = click.option(
    "--format", "output", type=click.Choice(FORMATS), default="table", show_default=True, help="How to print the rows."
)


@click.group()
def stats() -> None:
    """Realtime stats per forum and minute window, read from the object store."""


@stats.command("query")
@click.argument("sql")
@format_option
@store_options
def stats_query(sql: str, output: str, store_url: str | None, data_dir: Path | None, config: Path | None) -> None:
    """Run SQL over the stats views forum, threads and top_threads.

    Each view has the metric's columns and the partitions dt, hour and minute (UTC), e.g.

    \b
    threadcast stats query "SELECT window_start, posts, latency_p99_ms
                            FROM forum WHERE forum = 'demo' ORDER BY window_start"
    """
    from threadcast.stats.query import query

    store = open_store(config, data_dir, store_url)
    columns, rows = _read(lambda: query(store, sql))
    click.echo(render(columns, rows, output), nl=False)


@stats.command("top")
@click.option("--forum", required=True, help="Forum name.")
@click.option("--since", default="1h", show_default=True, callback=_since, help="How far back: 30m, 1h, 2d ...")
@click.option("--limit", type=click.IntRange(min=1), default=10, show_default=True, help="Threads to list.")
@format_option
@store_options
def stats_top(
    forum: str,
    since: datetime,
    limit: int,
    output: str,
    store_url: str | None,
    data_dir: Path | None,
    config: Path | None,
) -> None:
    """The threads of a forum with the most posts since a while ago."""
    from threadcast.stats.query import top_threads

    store = open_store(config, data_dir, store_url)
    rows = _read(lambda: top_threads(store, forum, since, limit))
    columns = ["rank", "thread_id", "posts"]
    click.echo(render(columns, [tuple(row[c] for c in columns) for row in rows], output), nl=False)


@stats.command("rebuild")
@click.option("--since", required=True, callback=_since, help="Rewrite windows from this long ago: 30m, 1h, 2d ...")
@click.option(
    "--until", default=None, help="Up to this long ago (default: every window surely closed by now)."
)
@store_options
def stats_rebuild(
    since: datetime, until: str | None, store_url: str | None, data_dir: Path | None, config: Path | None
) -> None:
    """Recompute past windows from the event log and overwrite their objects (after a bug fix,
    or to fill a store that was empty). The live stats service keeps running."""
    import asyncio

    from threadcast.bus.log import UnknownTopicError
    from threadcast.cli import _settings
    from threadcast.stats.query import parse_since
    from threadcast.stats.rebuild import rebuild

    try:
        end = parse_since(until).timestamp() if until else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--until'") from None
    settings = _settings(config, data_dir=data_dir, store_url=store_url)
    click.echo(f"rebuilding the windows since {since.isoformat(timespec='seconds')} from the event log ...", err=True)
    try:
        written = asyncio.run(rebuild(settings, since.timestamp(), end))
    except UnknownTopicError as exc:
        raise BadInput(f"the event log has no topic {exc}: nothing was ever posted there") from None
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    click.echo(f"{len(written)} forum windows rewritten")


T = TypeVar("T")


def _read(read: Callable[[], T]) -> T:
    from threadcast.stats.query import BadQuery, StatsError

    try:
        return read()
    except BadQuery as exc:
        raise BadInput(f"SQL error: {exc}") from None
    except StatsError as exc:
        raise click.ClickException(str(exc)) from None


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], output: str) -> str:
    """Rows as an aligned table (with a row count), CSV with a header, or a JSON array of objects."""
    if output == "json":
        objects = [dict(zip(columns, row, strict=True)) for row in rows]
        return orjson.dumps(objects, default=str, option=orjson.OPT_INDENT_2).decode() + "\n"
    if output == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        return buffer.getvalue()
    # Numbers align right; text that looks like a number (a forum named "007") stays text.
    text_columns = [i for i in range(len(columns)) if any(isinstance(row[i], str) for row in rows)]
    table = tabulate(rows, headers=list(columns), missingval="NULL", disable_numparse=text_columns)
    return f"{table}\n({len(rows)} row{'' if len(rows) == 1 else 's'})\n"


# Registered last: the storm commands use the options above.
from threadcast.stats.storm.cli import storm  # noqa: E402

stats.add_command(storm)
