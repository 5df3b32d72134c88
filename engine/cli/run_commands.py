"""Commands that compile or run a mapping: validate, schema, run, preview, coverage, explain."""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError, EtlError, MappingError, RunInterrupted, UsageError
from ..pipeline.compile import compile_file
from ..pipeline.load import load_mapping, mapping_schema
from ..pipeline.observer import Observer
from ..pipeline.plan import Plan
from ..pipeline.progress import utc_timestamp
from ..pipeline.results import format_result
from ..pipeline.run import RunRequest, parse_time, run_mapping
from ..secrets import log_redaction
from ..signals import terminate_as_interrupt
from ..store import STORE_ENV
from ..tools.scaffold import write_schema
from .common import EXIT_CODES_HELP, mapping_argument, run_options, setup_logging
from .store_commands import instance_option, open_store_url, store_option


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("mappings", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def validate(mappings: tuple[Path, ...]) -> None:
    """Check mapping files offline: YAML, schema, JMESPath, Jinja, references, and the
    properties JupiterOne's data model requires of each entity class.

    Prints every problem as FILE:LINE:COL: path: message and exits 3 if there is any
    (2 if a file does not exist).
    """
    for path in mappings:
        if not path.exists():
            raise UsageError(f"cannot read mapping file {path}: No such file or directory")
    failed = None
    for path in mappings:
        try:
            plan = compile_file(path)
        except EtlError as exc:
            click.echo(str(exc), err=True)
            failed = exc
            continue
        click.echo(f"{path}: ok ({_count(len(plan.steps), 'step')}, {_count_types(plan)})")
    if failed is not None:
        sys.exit(failed.exit_code)


def _count_types(plan: Plan) -> str:
    entities = {e.type for s in plan.steps for e in s.entities}
    relationships = {r.type for s in plan.steps for r in s.relationships}
    relationships |= {m.type for s in plan.steps for m in s.mapped_relationships}
    return f"{_count(len(entities), 'entity type')}, {_count(len(relationships), 'relationship type')}"


def _count(number: int, noun: str) -> str:
    """``1 step``, ``2 steps``, ``0 entity types``."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


@click.command()
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the schema to FILE (and its directories) instead of printing it; says whether it changed.",
)
def schema(output: Path | None) -> None:
    """Print the JSON Schema of mapping files (for editors and CI linters).

    \b
    For an editor, write it beside your mappings and name it in each mapping's first line:
      etl schema -o .etl/mapping.schema.json
      # yaml-language-server: $schema=../.etl/mapping.schema.json   (in mappings/NAME.yaml)
    `etl new NAME` does both. Run it again after upgrading etl.
    """
    if output is None:
        click.echo(json.dumps(mapping_schema(), indent=2))
        return
    click.echo(f"{output}: {write_schema(output)}")


DEFAULT_OUTPUT = Path(".j1-integration")
full_refresh_option = click.option(
    "--full-refresh",
    is_flag=True,
    help="Ignore the saved incremental state (beside --output, or in --store): incremental steps fetch "
    "everything, as on a first run, and save their state anew.",
)

RUN_EXIT_CODES_HELP = EXIT_CODES_HELP.replace(
    "the previous output was left untouched\n",
    "the previous output was left untouched;\n"
    "     with --store: the output was written but could not be loaded (the store is unchanged)\n",
    1,
)


@click.command(epilog=RUN_EXIT_CODES_HELP)
@mapping_argument
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".j1-integration"),
    show_default=True,
    help="Directory to write the graph and summary.json to (replaced atomically).",
)
@click.option("--pretty", is_flag=True, help="Indent the JSON output files.")
@click.option(
    "--coverage",
    "with_coverage",
    is_flag=True,
    help="Also report, per step, the API fields no expression reads and the properties that stayed empty.",
)
@click.option(
    "--keep",
    type=click.IntRange(2),
    metavar="N",
    help="Keep the N newest outputs in DIR.history/ (hard links) and, after each run, print what "
    "changed since the previous one (saved as diff.json there).",
)
@click.option(
    "--alerts",
    "rules_file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="RULES",
    help="Evaluate these alert rules after each run: rules on the change between runs need --keep "
    "(saved as alerts.json there); rules of J1QL queries need --store (asked after each load).",
)
@click.option(
    "--every",
    metavar="INTERVAL",
    help="Run again every INTERVAL (30m, 6h, 1d...) until stopped: Ctrl-C or SIGTERM exits 130 (while "
    "waiting, the last output stays as it is). A failed run is reported and the schedule goes on; each "
    "run's summary starts with its UTC start time, and its log lines carry their time.",
)
@click.option("--runs", type=click.IntRange(1), metavar="N", help="With --every: stop after N runs.")
@store_option(
    required=False,
    help="After a run that wrote output, load it into this graph store (sqlite:///graph.db or "
    f"postgresql://user@host/db; also {STORE_ENV}): see `etl load`. A failed run loads nothing.",
)
@instance_option(
    "With --store: the integration instance the run is loaded as (default: the instance the mapping's "
    "integration.instance names, else its integration id)."
)
@full_refresh_option
@run_options
def run(
    mapping: Path,
    output: Path,
    pretty: bool,
    with_coverage: bool,
    keep: int | None,
    rules_file: Path | None,
    every: str | None,
    runs: int | None,
    store_url: str | None,
    instance: str | None,
    **shared: Any,
) -> None:
    """Run MAPPING: fetch from the API and write the graph to --output.

    With --store, each run that wrote output is then loaded into the graph store (as
    `etl load` does); the exit code is still the run's.

    \b
    Examples:
      etl run mappings/example.yaml --output out
      etl run mappings/example.yaml --output out --keep 10 --alerts rules/example.yaml --every 6h
      etl run mappings/example.yaml --output out --store sqlite:///graph.db
    """
    if instance is not None and store_url is None:
        raise click.UsageError(f"--instance goes with --store (or {STORE_ENV})")
    if runs is not None and every is None:
        raise click.UsageError("--runs goes with --every")
    from ..tools.alerts import load_rules
    from ..tools.authoring import Coverage
    from ..tools.schedule import parse_interval, wait_for_next_run

    try:
        interval = parse_interval(every) if every else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--every") from None
    rules = load_rules(rules_file) if rules_file else None
    if rules is not None and rules.diff_rules and keep is None:
        raise click.UsageError(
            f"--alerts needs --keep N: the rules on changes in {rules_file} compare a run with the one before it"
        )
    if rules is not None and rules.query_rules and not store_url:
        raise click.UsageError(f"--alerts needs --store URL: the J1QL query rules in {rules_file} ask the store")
    request = RunRequest(mapping, **shared)
    observer = Coverage() if with_coverage else None
    store = open_store_url(store_url, create=True) if store_url else None  # a bad store fails before the run
    done = 0
    announce = None if request.quiet else click.echo
    try:
        with terminate_as_interrupt():  # SIGTERM is Ctrl-C here too: between runs, and after one
            while True:
                started = time.monotonic()
                scheduled = interval is not None
                code = _run_once(
                    request, output, pretty, observer, keep, rules, scheduled, store=store, instance=instance
                )
                done += 1
                if interval is None or (runs is not None and done >= runs):
                    sys.exit(code)
                wait_for_next_run(max(0.0, interval - (time.monotonic() - started)), output, announce)
    finally:
        if store is not None:
            store.close()


def _run_once(
    request: RunRequest,
    output: Path,
    pretty: bool,
    observer: Any,
    keep: int | None,
    rules: Any,
    scheduled: bool,
    store: Any = None,
    instance: str | None = None,
) -> int:
    """One run, its summary, (with --keep) its history and changes, and (with --store) its load.
    Returns its exit code; a failed run (or load) of a schedule is reported, not fatal (the next
    one may succeed). A scheduled run's log and error lines start with their time, and its
    summary with the time it started."""
    started = utc_timestamp(time.time())
    setup_logging(request.verbose, request.quiet, timestamps=scheduled)

    def report(message: str) -> None:
        stamp = f"{utc_timestamp(time.time())} " if scheduled else ""
        click.echo(f"{stamp}etl: error: {log_redaction.redactor(message)}", err=True)

    state = store_state = None
    if store is not None:  # the state of a run loaded into the store is the store's
        from ..pipeline.run import file_state
        from ..store.state import StoreState

        store_state = StoreState(store, instance)
        state = dataclasses.replace(file_state(output, request.full_refresh), source=store_state)
    try:
        plan, result, redactor = run_mapping(request, output=output, pretty=pretty, observer=observer, state=state)
    except EtlError as exc:
        if not scheduled or isinstance(exc, (MappingError, ConfigError, RunInterrupted, UsageError)):
            raise  # these do not get better by waiting
        report(str(exc))
        return exc.exit_code
    if not request.quiet:
        if scheduled:
            click.echo(f"Run started {started}")
        click.echo(redactor(format_result(result)))
        if observer is not None:
            click.echo("\n" + redactor(observer.report(plan)))
    else:  # -q prints only errors: a failed step's, which the summary would have shown
        for step in result.steps:
            if step.error:
                click.echo(f"etl: error: step {step.step.id}: {redactor(step.error)}", err=True)
    if keep is not None:
        from ..tools.schedule import record as record_history
        from ..tools.schedule import report_changes

        previous, entry = record_history(output, keep)
        if previous is not None:
            try:
                click.echo(redactor(report_changes(previous, entry, rules, parse_time(request.as_of, "--as-of"))))
            except EtlError as exc:
                report(f"comparing with {previous}: {exc}")
    if store is not None:
        from ..store.load import load_run

        name = instance or result.instance
        try:
            loaded = load_run(store, output, integration=plan.integration_id, instance=name)
        except EtlError as exc:
            if not scheduled:
                raise
            report(f"loading {output} into the store: {exc}")
            return exc.exit_code
        if not request.quiet:
            click.echo(redactor(loaded.format()))
        if rules is not None and rules.query_rules:
            _query_alerts(rules, store, parse_time(request.as_of, "--as-of"), redactor, report)
        if result.state is not None and store_state is not None:
            try:  # only once the run is in the store does the store's mark move
                store_state.write(plan.integration_id, name, result.state)
            except EtlError as exc:
                if not scheduled:
                    raise
                report(f"saving the incremental state in the store: {exc}")
                return exc.exit_code
    return result.exit_code


def _query_alerts(rules: Any, store: Any, now: int | None, redactor: Any, report: Any) -> None:
    """The alerts of the rules' J1QL queries, asked of the store the run was just loaded into."""
    from ..tools.alerts import evaluate_query_rules, format_query_alerts

    try:
        alerts = evaluate_query_rules(rules, store, now=now)
    except EtlError as exc:
        report(f"alert rules {rules.path}: {exc}")
        return
    click.echo(redactor(format_query_alerts(alerts)))


def _observe(
    request: RunRequest, observer: Observer, prefix: str, record_limit: int | None = None, state: Any = None
) -> tuple[Plan, Any, Any]:
    """Run for a tool that watches the run and writes nothing (the output goes to a scratch directory;
    no incremental state is read, unless ``state`` says where, nor written)."""
    from ..pipeline.state import StateOptions

    setup_logging(request.verbose, request.quiet)
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        return run_mapping(
            request,
            output=Path(scratch) / "graph",
            observer=observer,
            record_limit=record_limit,
            state=state or StateOptions(),
        )


@click.command(epilog=EXIT_CODES_HELP)
@mapping_argument
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Records to fetch and show per step (at most).",
)
@full_refresh_option
@run_options
def preview(mapping: Path, limit: int, **shared: Any) -> None:
    """Show what a step does: its requests, a sample of the raw records, and the entities
    and relationships built from them - for the step and the steps it depends on - and the
    run's errors and warnings about each step (a records selector that matched nothing,
    objects the graph checks refused...).

    Nothing is written. Give --step (or it previews every step); point it at the API,
    at --base-url, at a --cassette or use --offline.
    """
    from ..pipeline.run import file_state
    from ..tools.authoring import Preview

    observer = Preview(limit)
    request = RunRequest(mapping, **shared)
    # The requests the next `etl run` (to the default --output) would make: its saved incremental state.
    state = file_state(DEFAULT_OUTPUT, request.full_refresh, write=False)
    plan, result, redactor = _observe(request, observer, "etl-preview-", record_limit=limit, state=state)
    click.echo(redactor(observer.report(plan, result)))
    sys.exit(result.exit_code)


@click.command(epilog=EXIT_CODES_HELP)
@mapping_argument
@run_options
def coverage(mapping: Path, **shared: Any) -> None:
    """Report, per step, the API fields that no expression reads and the properties that
    were empty for every entity (a typo's symptom), steps that received no records, and the
    run's errors and warnings about each step. Runs the mapping; writes nothing."""
    from ..tools.authoring import Coverage

    observer = Coverage()
    plan, result, redactor = _observe(RunRequest(mapping, **shared), observer, "etl-coverage-")
    click.echo(redactor(observer.report(plan, result)))
    sys.exit(result.exit_code)


EXPLAIN_EXIT_CODES_HELP = EXIT_CODES_HELP.replace(
    "1  partial success: output written, but some steps failed or some types are partial",
    "1  no object has that key (the steps that did not succeed are named)",
)


@click.command(epilog=EXPLAIN_EXIT_CODES_HELP)
@mapping_argument
@click.option("--key", required=True, help="The _key of the entity or relationship to explain.")
@run_options
def explain(mapping: Path, key: str, **shared: Any) -> None:
    """Explain where one entity or relationship comes from: the step, request, page and
    record, the rule that built it (and its for_each item), and the expression (with its
    place in the mapping) behind each property. Runs the mapping; writes nothing. Exits 1
    if no object has that key (naming the steps that did not succeed)."""
    from ..tools.authoring import Explain

    observer = Explain(key)
    plan, result, redactor = _observe(RunRequest(mapping, **shared), observer, "etl-explain-")
    click.echo(redactor(observer.report(plan, load_mapping(mapping), result)))
    sys.exit(0 if observer.found else 1)


COMMANDS = (validate, schema, run, preview, coverage, explain)
