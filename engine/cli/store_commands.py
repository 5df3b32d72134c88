"""Commands over the graph store: load, export (and the --store options run and diff share)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..store import STORE_ENV
from .common import INTERNAL_ERROR_LINE

if TYPE_CHECKING:
    from ..store.connect import Store

STORE_HELP = (
    "The graph store: sqlite:///graph.db (a file, created if missing) or postgresql://user@host/db "
    f"(a shared database). Also read from {STORE_ENV}. See docs/store.md."
)
INSTANCE_HELP = (
    "The integration instance the run belongs to: a load replaces what this instance said last time. "
    "Default: the instance named in summary.json (metadata.integration), else the integration id."
)

STORE_EXIT_LINES = """\
  5  the store could not be opened, read or written (unreachable, locked for too long, written by a
     newer etl, ...); a load that failed changed nothing"""


def store_option(required: bool = True, help: str = STORE_HELP) -> Callable:
    return click.option(
        "--store", "store_url", envvar=STORE_ENV, show_envvar=True, required=required, metavar="URL", help=help
    )


def instance_option(help: str = INSTANCE_HELP) -> Callable:
    return click.option("--instance", metavar="NAME", help=help)


def open_store_url(url: str, *, create: bool) -> Store:
    """Open the store a command was given (errors are StoreError / StoreUrlError)."""
    from ..store.connect import open_store
    from ..store.url import parse_store_url

    return open_store(parse_store_url(url), create=create)


LOAD_EXIT_CODES_HELP = f"""\b
Exit codes:
  0  loaded (or the run was unchanged since the last load: nothing written)
  2  usage error (bad options; no --store; the run names no integration and --integration is missing)
  3  DIRECTORY is not a readable etl output directory (no summary.json, a malformed graph file,
     two objects with the same _key)
{STORE_EXIT_LINES}
{INTERNAL_ERROR_LINE}
"""


@click.command("load", epilog=LOAD_EXIT_CODES_HELP)
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@store_option()
@instance_option()
@click.option(
    "--integration",
    metavar="ID",
    help="The integration id of the run (the mapping's `integration.id`), when summary.json does not name it.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def load_command(directory: Path, store_url: str, instance: str | None, integration: str | None, quiet: bool) -> None:
    """Load DIRECTORY (the output of `etl run`) into the graph store.

    The load replaces what the integration instance said last time, as JupiterOne's
    persister does: objects of the instance missing from the run are ended (their last
    version kept), except those of the types summary.json lists as partial, which are
    only added or updated. A changed object gets a new version; an unchanged one is not
    written. Other instances are never touched. Then every mapped relationship in the
    store is resolved again. One transaction: an interrupted load changes nothing.

    \b
    Examples:
      etl load /tmp/acme-graph --store sqlite:///graph.db --integration acme
      ETL_STORE=postgresql://etl@db/graph etl load out --instance prod --integration acme
    """
    from ..store.load import load_run

    store = open_store_url(store_url, create=True)
    try:
        result = load_run(store, directory, integration=integration, instance=instance)
    finally:
        store.close()
    if not quiet:
        click.echo(result.format())


EXPORT_EXIT_CODES_HELP = f"""\b
Exit codes:
  0  DIR was written
  2  usage error (bad options; no --store)
{STORE_EXIT_LINES.replace("; a load that failed changed nothing", "; or it has no such instance")}
     or DIR cannot be written (an existing DIR that is not an etl output is never replaced)
{INTERNAL_ERROR_LINE}
"""


@click.command("export", epilog=EXPORT_EXIT_CODES_HELP)
@store_option()
@instance_option("Export only this instance (default: every instance in the store).")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["j1", "ndjson"]),
    default="j1",
    show_default=True,
    help="j1: the .j1-integration layout (summary.json, graph/<instance>/...), mapped relationships as "
    "loaded, for etl sync / visualize / diff / load; ndjson: entities.ndjson and relationships.ndjson, "
    "one object per line, mapped relationships resolved.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Directory to write (j1: replaced atomically; ndjson: its two files replaced).",
)
def export_command(store_url: str, instance: str | None, output_format: str, output: Path) -> None:
    """Write the store's current graph (or one instance's) to DIR.

    \b
    Examples:
      etl export --store sqlite:///graph.db --output graph-j1 && etl visualize graph-j1
      etl export --store sqlite:///graph.db --instance acme --format ndjson --output out
    """
    from ..store.export import export

    store = open_store_url(store_url, create=False)
    try:
        result = export(store, output, output_format, instance)
    finally:
        store.close()
    click.echo(result.format_text())


COMMANDS = (load_command, export_command)
