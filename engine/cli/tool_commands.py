"""Commands over a mapping's documentation or a run's output: document, diff, alerts, sync, visualize."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ..http.cassette import RECORD_MODES
from ..pipeline.compile import compile_file
from ..pipeline.run import cassette_context, parse_time
from ..secrets import Redactor, log_redaction
from ..signals import terminate_as_interrupt
from ..store import STORE_ENV
from ..tools import sync as graph_sync  # its option defaults are needed to build the command line
from ..tools import visualize as graph_visualize  # the command
from ..tools.visualize import limits as visualize_limits  # --max-nodes's default and help
from .common import (
    INTERNAL_ERROR_LINE,
    mapping_argument,
    print_report,
    report_format_option,
    setup_logging,
)
from .store_commands import instance_option, open_store_url, store_option

DOCUMENT_EXIT_CODES_HELP = f"""\b
Exit codes:
  0  success (with --check: FILE is up to date)
  1  with --check: FILE is missing or not up to date
  2  usage error (bad command-line options)
  3  the mapping file is invalid
  5  FILE has the start marker but no end marker; nothing was written
{INTERNAL_ERROR_LINE}
"""


@click.command(epilog=DOCUMENT_EXIT_CODES_HELP)
@mapping_argument
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Markdown file to update: only the text between the "
    "<!-- {J1_DOCUMENTATION_MARKER_START} --> and <!-- {J1_DOCUMENTATION_MARKER_END} --> "
    "markers is replaced; without the start marker the section is appended; a missing "
    "FILE is created. Without --output the section is printed to stdout.",
)
@click.option(
    "--check",
    is_flag=True,
    help="With --output: change nothing; exit 1 if FILE is not what it would be written as "
    "(for CI: the documentation was not regenerated after the mapping changed).",
)
def document(mapping: Path, output: Path | None, check: bool) -> None:
    """Write the "Data Model" documentation section of MAPPING.

    The section lists the entity types, relationships and mapped relationships the
    mapping declares, exactly as JupiterOne's `j1-integration document` renders them.
    It is built from the mapping alone: no API call, no config needed.

    \b
    Examples:
      etl document mappings/example.yaml
      etl document mappings/example.yaml --output docs/example.md
      etl document mappings/example.yaml --output docs/example.md --check
    """
    if check and output is None:
        raise click.UsageError("--check needs --output FILE (the file to check)")
    from ..tools.document import data_model, is_up_to_date, render_section, write_document

    model = data_model(compile_file(mapping))
    if model.is_empty:
        click.echo(f"etl: {mapping} declares no entities or relationships; nothing to document", err=True)
        return
    section = render_section(model)
    if output is None:
        click.echo(section)
    elif check:
        if not is_up_to_date(output, section):
            click.echo(
                f"etl: {output} is not up to date with {mapping}; run: etl document {mapping} --output {output}",
                err=True,
            )
            sys.exit(1)
        click.echo(f"{output}: up to date")
    else:
        changed = write_document(output, section)
        click.echo(f"{output}: {'updated' if changed else 'already up to date'}")


DIFF_EXIT_CODES_HELP = f"""\b
Exit codes (as diff(1)):
  0  no differences
  1  differences found
  2  usage error (bad command-line options)
  3  OLD or NEW is not a readable etl output directory (no summary.json, a malformed graph file)
  5  with --store: the store cannot be read, or has no such instance
{INTERNAL_ERROR_LINE}
"""


@click.command("diff", epilog=DIFF_EXIT_CODES_HELP)
@click.argument("old", required=False, type=click.Path(path_type=Path))
@click.argument("new", required=False, type=click.Path(path_type=Path))
@report_format_option(
    'text: a readable report; json: {"entities": {"added": [keys], "removed": [keys], '
    '"changed": [{"_key": ..., "changes": {property: {"old": ..., "new": ...}}}]}, '
    '"relationships": {...}}, keys sorted.'
)
@click.option(
    "--ignore",
    "ignored",
    multiple=True,
    metavar="PROPERTY",
    help="Also leave PROPERTY out of the comparison (repeatable), e.g. a timestamp that moves on every run.",
)
@store_option(
    required=False,
    help="Instead of OLD and NEW, compare two points of this graph store's history (sqlite:///graph.db, "
    f"postgresql://...; also {STORE_ENV}, used only when OLD and NEW are not given). Needs --instance and --since.",
)
@instance_option("With --store: the integration instance to compare.")
@click.option(
    "--since",
    metavar="WHEN",
    help="With --store: the earlier point, a duration ago (30m, 6h, 1d) or an ISO-8601 time.",
)
@click.option(
    "--until",
    metavar="WHEN",
    help="With --store: the later point, as --since.  [default: now]",
)
def diff_command(
    old: Path | None,
    new: Path | None,
    output_format: str,
    ignored: tuple[str, ...],
    store_url: str | None,
    instance: str | None,
    since: str | None,
    until: str | None,
) -> None:
    """Compare two runs' output: what was added, removed and changed.

    OLD and NEW are output directories of `etl run` (e.g. yesterday's and today's).
    Lists the entities and relationships added, removed and changed, matched by _key;
    a changed object shows each property that differs with its old and new value (an
    absent property reads as null).

    With --store, --instance and --since (and no OLD and NEW), compares one instance of
    the graph store as it was then with how it is now (or at --until), with the same
    report.

    \b
    Left out of the comparison:
      _rawData      the API's raw records, ignored: every property the graph carries
                    is compared, and raw data holds counters and timestamps that move
                    on every run. It is never loaded into the comparison.
      summary.json  run metadata (timings, statuses); only its partial types are read.
    A type listed as partial (metadata.partialDatasets.types) in either run's
    summary.json is never reported as removed: its data may be incomplete. The text
    report names those types and how many objects were not reported.

    \b
    Examples:
      etl diff yesterday/ today/
      etl diff yesterday/ today/ --format json | jq '.entities.added'
      etl diff yesterday/ today/ --ignore lastSeenOn
      etl diff --store sqlite:///graph.db --instance acme --since 1d
    """
    from ..tools import diff as graph_diff

    if {"_key", "_type"} & set(ignored):
        raise click.BadParameter("_key and _type cannot be ignored: objects are matched by them", param_hint="--ignore")
    if old is not None or new is not None:
        if old is None or new is None:
            raise click.UsageError("give two output directories, OLD and NEW (or --store, --instance and --since)")
        if since or until or instance:
            raise click.UsageError("--since, --until and --instance compare a store: give them without OLD and NEW")
        result = graph_diff.diff_outputs(old, new, ignore=ignored)
    else:
        if not store_url:
            raise click.UsageError(f"give OLD and NEW, or --store URL (or {STORE_ENV}) with --instance and --since")
        if not instance or not since:
            raise click.UsageError("--store needs --instance NAME and --since WHEN (e.g. --since 1d)")
        now = int(time.time() * 1000)
        start = graph_diff.parse_point(since, now, "--since")
        end = graph_diff.parse_point(until, now, "--until") if until else now
        store = open_store_url(store_url, create=False)
        try:
            result = graph_diff.diff_store(store, instance, start, end, ignore=ignored)
        finally:
            store.close()
    print_report(output_format, result.to_json(), lambda: graph_diff.format_diff(result))
    sys.exit(result.exit_code)


ALERTS_EXIT_CODES_HELP = f"""\b
Exit codes:
  0  no alert
  1  at least one alert
  2  usage error (bad options; rules that need --old and --new, or --store, without them)
  3  OLD or NEW is not a readable etl output directory
  4  the rules file is missing or invalid (each problem as FILE:LINE:COL: path: message)
  5  a rule could not be evaluated on some entity (named on stderr; the other alerts are printed),
     or the store could not be read
{INTERNAL_ERROR_LINE}
"""


@click.command("alerts", epilog=ALERTS_EXIT_CODES_HELP)
@click.argument("rules", type=click.Path(path_type=Path))
@click.option(
    "--old", type=click.Path(path_type=Path), metavar="DIR", help="The earlier output directory (e.g. yesterday's run)."
)
@click.option(
    "--new", type=click.Path(path_type=Path), metavar="DIR", help="The later output directory (e.g. today's run)."
)
@store_option(
    required=False,
    help="The graph store the query rules ask (sqlite:///graph.db, postgresql://...; also "
    f"{STORE_ENV}). Needed only when RULES has query rules.",
)
@report_format_option(
    "json: a list of alerts in the order of the rules: {rule, on, _type, _key, displayName, description"
    "[, changes]} for a rule on changes (then by _key), {rule, on: query, description, condition, "
    "queries: {name: {query, total, type, data}}} for a query rule."
)
@click.option(
    "--as-of",
    "as_of",
    metavar="TIME",
    help="Evaluate now_ms(), days_ago_ms() and J1QL's date.now as of this ISO-8601 time instead of now "
    "(for reproducible date predicates).",
)
@click.option(
    "--old-as-of",
    "old_as_of",
    metavar="TIME",
    help="The clock of OLD's side of 'became' rules. Default: --as-of moved back by the time "
    "between the two runs (from their summary.json).",
)
def alerts_command(
    rules: Path,
    old: Path | None,
    new: Path | None,
    store_url: str | None,
    output_format: str,
    as_of: str | None,
    old_as_of: str | None,
) -> None:
    """Raise the alerts a rules file describes: for the change from OLD to NEW, and for
    J1QL questions to the graph store.

    OLD and NEW are output directories of `etl run`; RULES is a YAML file of alert rules:

    \b
      rules:
        - name: new-admin-user            # unique in the file
          description: A new user is an administrator     # optional
          on: added                       # added | removed | changed | became
          type: acme_user                 # entity _type
          where: admin                    # optional JMESPath predicate
        - name: users-not-employees       # a query rule (JupiterOne's shape), asks --store
          queries:
            - {name: query0, query: "FIND User THAT !IS Person"}
          condition: queries.query0.total > 0    # the default
    \b
    What `where` sees:
      added    the entity in NEW
      removed  the entity in OLD (never for a type partial in either run)
      changed  the entity in NEW plus _old (the entity in OLD) and _changed (names of
               the changed properties); e.g. "admin && !(_old.admin)"
      became   true now (NEW, --as-of) and false before (OLD, --old-as-of), changed
               or not; e.g. "expiresOn <= days_ago_ms(`-30`)"
    Entities are seen without _rawData. The engine's JMESPath functions are available
    (to_epoch_ms, now_ms, days_ago_ms, ...). A query rule fires when its condition on
    the queries' totals holds. See docs/monitoring.md and docs/j1ql.md.

    \b
    Examples:
      etl alerts rules/acme.yaml --old yesterday/ --new today/
      etl alerts rules/acme.yaml --old yesterday/ --new today/ --format json --as-of 2026-11-24T09:00:00Z
      etl alerts rules/acme-queries.yaml --store sqlite:///graph.db
    """
    from ..tools import alerts as alert_rules

    now = parse_time(as_of, "--as-of")
    old_now = parse_time(old_as_of, "--old-as-of")
    if (old is None) != (new is None):
        raise click.UsageError("give both --old and --new (the two runs to compare)")
    rule_set = alert_rules.load_rules(rules)
    diff_rules, query_rules = rule_set.diff_rules, rule_set.query_rules
    if diff_rules and old is None:
        names = ", ".join(r.name for r in diff_rules)
        raise click.UsageError(f"{rules} has rules on the change between two runs ({names}): give --old and --new")
    if query_rules and not store_url:
        names = ", ".join(r.name for r in query_rules)
        raise click.UsageError(f"{rules} has query rules ({names}): give --store URL (or set {STORE_ENV})")
    if old is not None and not diff_rules:
        raise click.UsageError(f"{rules} has no rules on changes between runs: --old and --new are not used")
    reports: list = []
    if diff_rules:
        assert old is not None and new is not None
        reports.append(alert_rules.evaluate_rules(rule_set, old, new, now=now, old_now=old_now))
    if query_rules:
        assert store_url is not None
        store = open_store_url(store_url, create=False)
        try:
            reports.append(alert_rules.evaluate_query_rules(rule_set, store, now=now))
        finally:
            store.close()
    for report in reports:
        for warning in report.warnings:
            click.echo(f"etl: warning: {warning}", err=True)
        for error in report.errors:
            click.echo(f"etl: error: {error}", err=True)
    data = [alert for report in reports for alert in report.to_json()]
    texts = [
        alert_rules.format_alerts(r) if isinstance(r, alert_rules.AlertReport) else alert_rules.format_query_alerts(r)
        for r in reports
    ]
    print_report(output_format, data, lambda: "\n".join(texts))
    sys.exit(max(report.exit_code for report in reports))


SYNC_EXIT_CODES_HELP = f"""\b
Exit codes:
  0  the job was finalized with every entity and relationship
  1  the job was finalized, but some objects were too large even without their raw data and were
     skipped (their types were sent as partial, so JupiterOne keeps what it had)
  2  usage error (bad options; DIRECTORY has no summary.json; a plain-http --api-base-url)
  4  the JupiterOne account or API key is missing
  5  the sync failed: the job (if one was created) was aborted and nothing was finalized
  130  interrupted (Ctrl-C, SIGTERM): the job was aborted
{INTERNAL_ERROR_LINE}
"""


@click.command(epilog=SYNC_EXIT_CODES_HELP)
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--account",
    envvar=graph_sync.ACCOUNT_ENV,
    show_envvar=True,
    metavar="ID",
    help="JupiterOne account id (sent as JupiterOne-Account). Also read from .env.",
)
@click.option(
    "--api-key",
    envvar=graph_sync.API_KEY_ENV,
    show_envvar=True,
    metavar="KEY",
    help="JupiterOne API key (sent as a bearer token; never printed, logged or written). Prefer the "
    "environment variable or .env: a command line is visible to other users of the machine.",
)
@click.option(
    "-i",
    "--integration-instance-id",
    required=True,
    metavar="ID",
    help="The integration instance the data belongs to (an integration-managed job).",
)
@click.option(
    "--api-base-url",
    default=graph_sync.DEFAULT_API_BASE_URL,
    show_default=True,
    metavar="URL",
    help="JupiterOne API root (another region, or a local look-alike: plain http only to loopback).",
)
@click.option(
    "--no-step-events", is_flag=True, help="Do not post one job-log event per step of summary.json before finalizing."
)
@click.option(
    "--cassette",
    "cassette_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Replay (or record) the HTTP exchanges from/to this vcrpy cassette (for tests and demos).",
)
@click.option(
    "--record-mode",
    type=click.Choice(RECORD_MODES),
    default=None,
    help="With --cassette: none = replay only (default); once = record if the file is missing; all = re-record.",
)
@click.option("-v", "--verbose", count=True, help="Log each batch (-v) and every request (-vv) to stderr.")
@click.option("-q", "--quiet", is_flag=True, help="Only print errors.")
def sync(
    directory: Path,
    account: str | None,
    api_key: str | None,
    integration_instance_id: str,
    api_base_url: str,
    no_step_events: bool,
    cassette_path: Path | None,
    record_mode: str | None,
    verbose: int,
    quiet: bool,
) -> None:
    """Upload DIRECTORY (the output of `etl run`) to JupiterOne as one synchronization job.

    Creates an integration-managed job for the instance, uploads every entity, then every
    relationship, in batches of at most 5,000,000 bytes (read one file at a time), posts one
    event per step, and finalizes with the partial types of DIRECTORY/summary.json, so
    JupiterOne keeps what it had of those types. 429, 5xx and dropped connections are
    retried with backoff; on HTTP 413 the largest _rawData values become 'TRUNCATED', and an
    object still too large is skipped with a warning (its type is sent as partial). On any
    error the job is aborted and nothing is finalized.

    \b
    Examples:
      export JUPITERONE_ACCOUNT=... JUPITERONE_API_KEY=...
      etl run mappings/example.yaml --output out
      etl sync out --integration-instance-id 3c1e2f4a-...
    """
    setup_logging(verbose, quiet)
    if record_mode and cassette_path is None:
        raise click.BadParameter("--record-mode needs --cassette", param_hint="--record-mode")
    redactor = Redactor([api_key] if api_key else [])
    log_redaction.use(redactor)
    account, api_key = graph_sync.resolve_credentials(account, api_key)
    redactor.add(api_key)
    settings = graph_sync.SyncSettings(
        account=account,
        api_key=api_key,
        integration_instance_id=integration_instance_id,
        api_base_url=api_base_url,
        step_events=not no_step_events,
    )
    with cassette_context(cassette_path, record_mode or "none", redactor), terminate_as_interrupt():
        report = graph_sync.synchronize(directory, settings, redactor)
    if not quiet:
        click.echo(redactor(report.format()))
    sys.exit(report.exit_code)


VISUALIZE_EXIT_CODES_HELP = f"""\b
Exit codes:
  0  FILE was written (also when there is no data, or more than --max-nodes: the page says so)
  2  usage error (bad options; DIRECTORY does not exist; a --type that no entity or mapped target has;
     a --query that is not valid J1QL)
  5  a graph file cannot be read, the store cannot be read, or FILE cannot be written
{INTERNAL_ERROR_LINE}
"""


@click.command(epilog=VISUALIZE_EXIT_CODES_HELP)
@click.argument("directory", required=False, type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE.html",
    help="Where to write the page.  [default: DIRECTORY/index.html; with --query: answer.html]",
)
@store_option(required=False, help="With --query: the graph store to ask (sqlite:///graph.db or postgresql://...).")
@click.option(
    "--query",
    "query_text",
    metavar="J1QL",
    help="Draw the answer of this J1QL query from --store instead of DIRECTORY: the entities and "
    "relationships it matches (as RETURN tree). The way to look at a big graph.",
)
@click.option("--as-of", "as_of", metavar="TIME", help="With --query: evaluate date.now as of this ISO-8601 time.")
@click.option(
    "--type",
    "types",
    multiple=True,
    metavar="TYPE",
    help="Draw only entities of this _type (repeatable), the relationships among them, and "
    "mapped relationships to placeholders of this _type.  [default: every type]",
)
@click.option(
    "--max-nodes",
    type=click.IntRange(min=0),
    default=visualize_limits.DEFAULT_MAX_NODES,
    show_default=True,
    metavar="N",
    help="Draw at most N nodes (entities first, in the run's order; then the placeholders and "
    f"missing entities their relationships need) and {visualize_limits.EDGES_PER_NODE} times as many edges; "
    "the rest are counted and the page and stderr say how to narrow the view. 0: no limit (a "
    "browser may not manage a large run).",
)
def visualize(
    directory: Path | None,
    output: Path | None,
    store_url: str | None,
    query_text: str | None,
    as_of: str | None,
    types: tuple[str, ...],
    max_nodes: int,
) -> None:
    """Draw the graph in DIRECTORY (an `etl run` output, or its graph/ folder) as one
    self-contained HTML page: nothing is loaded from the internet.

    Nodes are entities, coloured by _type (with a legend: click a type to hide it) and
    labelled with displayName, _type and _key; edges are relationships, labelled with their
    _class. A mapped relationship points at the entity its target filter keys select, or
    else at a dashed placeholder built from the target's filter-key values. Drag to pan,
    wheel to zoom, click for properties, type in the search box to find nodes by _key,
    name or _type.

    A large run is read as a stream and drawn in part: at most --max-nodes nodes, of the
    --type types if given; memory does not grow with the run.

    \b
    Examples:
      etl run mappings/example.yaml --output out && etl visualize out
      etl visualize out --output /tmp/graph.html
      etl visualize out --type acme_host --type acme_domain --max-nodes 500
      etl visualize --store sqlite:///graph.db --query "FIND Certificate THAT HAS Domain RETURN tree"
    """
    if query_text is not None:
        if directory is not None:
            raise click.UsageError("give DIRECTORY or --query, not both")
        if not store_url:
            raise click.UsageError("--query needs --store URL (or ETL_STORE)")
        output = output if output is not None else Path("answer.html")
        summary = _visualize_answer(store_url, query_text, as_of, output, types, max_nodes)
        source = "the answer"
    else:
        if directory is None:
            raise click.UsageError("give DIRECTORY (an etl run output), or --store URL --query J1QL")
        output = output if output is not None else directory / "index.html"
        summary = graph_visualize.write_page(directory, output, types=types, max_nodes=max_nodes)
        source = str(directory)
    if not summary.nodes:
        click.echo(f"etl: {source}: {summary.empty_reason()}; {output} says so", err=True)
        return
    click.echo(f"{output}: {summary.describe()}")
    notice = summary.notice()
    if notice is not None:
        click.echo(f"etl: {notice}", err=True)


def _visualize_answer(
    store_url: str, text: str, as_of: str | None, output: Path, types: tuple[str, ...], max_nodes: int
) -> visualize_limits.PageSummary:
    """The page of a J1QL query's answer, drawn from the store."""
    from ..query import compile_query, tree_objects

    compile_query(text)  # a query error is reported before the store is opened
    store = open_store_url(store_url, create=False)
    try:
        entities, relationships = tree_objects(store, text, now=parse_time(as_of, "--as-of"))
    finally:
        store.close()
    return graph_visualize.write_page_for(
        entities, relationships, output, title=f"etl query: {text}", types=types, max_nodes=max_nodes
    )


COMMANDS = (document, diff_command, alerts_command, sync, visualize)
