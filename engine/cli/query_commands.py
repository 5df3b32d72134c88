"""``etl query``: a J1QL query answered from the graph store."""

from __future__ import annotations

import sys

import click

from ..errors import UsageError
from .common import INTERNAL_ERROR_LINE
from .store_commands import open_store_url, store_option

QUERY_EXIT_CODES_HELP = f"""\b
Exit codes:
  0  the answer was printed (also when nothing matched)
  2  usage error, or a query that cannot be parsed (query:LINE:COLUMN: what is wrong)
  5  the store could not be opened or read
{INTERNAL_ERROR_LINE}
"""


@click.command("query", epilog=QUERY_EXIT_CODES_HELP)
@click.argument("text", metavar="QUERY")
@store_option(help="The graph store to ask: sqlite:///graph.db or postgresql://user@host/db. See docs/store.md.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help='table: aligned columns for people; json: {"type": "list"|"table"|"tree", "totalCount": N, '
    '"data": ...}; csv: one row per entity or RETURN row (not for RETURN tree).',
)
@click.option(
    "--as-of",
    "as_of",
    metavar="TIME",
    help="Evaluate date.now as of this ISO-8601 time instead of now (reproducible date filters).",
)
def query_command(text: str, store_url: str, output_format: str, as_of: str | None) -> None:
    """Answer QUERY, a J1QL query (JupiterOne's query language), from the graph store.

    The query becomes SQL that the database runs. Only current objects are seen;
    relationships the mapper resolved across integrations count like any other.
    QUERY - reads the query from stdin. Keywords are case-insensitive. See docs/j1ql.md.

    \b
    Examples:
      etl query "FIND User THAT !IS Person" --store sqlite:///graph.db
      etl query "FIND Certificate WITH expiresOn < date.now + 30 days AS c
                 THAT HAS Domain AS d RETURN c.displayName, d.domainName" --format csv
      etl query "FIND Finding WITH severity = ('high' OR 'critical') AS f
                 RETURN f.severity, count(f)" --format json
    """
    from ..pipeline.run import parse_time
    from ..query import compile_query, run_compiled
    from ..query.output import render

    if text == "-":
        text = sys.stdin.read()
    now = parse_time(as_of, "--as-of")
    compiled = compile_query(text)  # a query error is reported before the store is opened
    if output_format == "csv" and compiled.kind == "tree":
        raise UsageError("--format csv: RETURN tree answers a graph, which has no rows; use --format json or table")
    store = open_store_url(store_url, create=False)
    try:
        answer = run_compiled(store, compiled, now=now)
    finally:
        store.close()
    click.echo(render(answer.to_dict(), output_format))


COMMANDS = (query_command,)
