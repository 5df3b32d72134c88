"""Commands that compile or run a mapping: validate, schema, run, preview, coverage, explain."""

from __future__ import annotations

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
from ..pipeline.plan import Plan
from ..pipeline.results import format_result
from ..pipeline.run import RunRequest, parse_time, run_mapping
from ..pipeline.runner import Observer
from ..secrets import log_redaction
from ..store import STORE_ENV
from .common import EXIT_CODES_HELP, mapping_argument, run_options, setup_logging
from .store_commands import instance_option, open_store_url, store_option


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("mappings", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def validate(mappings: tuple[Path, ...]) -> None:
    """Check mapping files offline: YAML, schema, JMESPath, Jinja and references.

    Prints every problem as FILE:LINE:COL: path: message and exits 3 if there is any.
    """
    failed = None
    for path in mappings:
        try:
            plan = compile_file(path)
        except EtlError as exc:
            click.echo(str(exc), err=True)
            failed = exc
            continue
        click.echo(f"{path}: ok ({len(plan.steps)} steps, {_count_types(plan)})")
    if failed is not None:
        sys.exit(failed.exit_code)


def _count_types(plan: Plan) -> str:
    entities = {e.type for s in plan.steps for e in s.entities}
    relationships = {r.type for s in plan.steps for r in s.relationships}
    relationships |= {m.type for s in plan.steps for m in s.mapped_relationships}
    return f"{len(entities)} entity types, {len(relationships)} relationship types"


@click.command()
def schema() -> None:
    """Print the JSON Schema of mapping files (for editors and CI linters)."""
    click.echo(json.dumps(mapping_schema(), indent=2))


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
    help="With --keep: evaluate these alert rules on each change (saved as alerts.json).",
)
@click.option(
    "--every",
    metavar="INTERVAL",
    help="Run again every INTERVAL (30m, 6h, 1d...) until stopped (Ctrl-C, SIGTERM); a failed run "
    "is reported and the schedule goes on.",
)
@click.option("--runs", type=click.IntRange(1), metavar="N", help="With --every: stop after N runs.")
@store_option(
    required=False,
    help="After a run that wrote output, load it into this graph store (sqlite:///graph.db or "
    f"postgresql://user@host/db; also {STORE_ENV}): see `etl load`. A failed run loads nothing.",
)
@instance_option(
    "With --store: the integration instance the run is loaded as (default: the mapping's instanceId "
    "config where it has one, else its integration id)."
)
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
    if rules_file is not None and keep is None:
        raise click.UsageError("--alerts needs --keep N: alerts compare a run with the one before it")
    if runs is not None and every is None:
        raise click.UsageError("--runs goes with --every")
    from ..tools.alerts import load_rules
    from ..tools.authoring import Coverage
    from ..tools.schedule import parse_interval

    try:
        interval = parse_interval(every) if every else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--every") from None
    rules = load_rules(rules_file) if rules_file else None
    request = RunRequest(mapping, **shared)
    observer = Coverage() if with_coverage else None
    store = open_store_url(store_url, create=True) if store_url else None  # a bad store fails before the run
    done = 0
    try:
        while True:
            started = time.monotonic()
            scheduled = interval is not None
            code = _run_once(request, output, pretty, observer, keep, rules, scheduled, store=store, instance=instance)
            done += 1
            if interval is None or (runs is not None and done >= runs):
                sys.exit(code)
            try:
                time.sleep(max(0.0, interval - (time.monotonic() - started)))
            except KeyboardInterrupt:
                raise RunInterrupted("stopped between runs") from None
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
    one may succeed)."""
    setup_logging(request.verbose, request.quiet)
    try:
        plan, result, redactor = run_mapping(request, output=output, pretty=pretty, observer=observer)
    except EtlError as exc:
        if not scheduled or isinstance(exc, (MappingError, ConfigError, RunInterrupted, UsageError)):
            raise  # these do not get better by waiting
        click.echo(f"etl: error: {log_redaction.redactor(str(exc))}", err=True)
        return exc.exit_code
    if not request.quiet:
        click.echo(redactor(format_result(result)))
        if observer is not None:
            click.echo("\n" + redactor(observer.report(plan)))
    if keep is not None:
        from ..tools.schedule import record as record_history
        from ..tools.schedule import report_changes

        previous, entry = record_history(output, keep)
        if previous is not None:
            try:
                click.echo(redactor(report_changes(previous, entry, rules, parse_time(request.as_of, "--as-of"))))
            except EtlError as exc:
                click.echo(f"etl: error: comparing with {previous}: {exc}", err=True)
    if store is not None:
        from ..store.load import load_run

        name = instance or result.instance
        try:
            loaded = load_run(store, output, integration=plan.integration_id, instance=name)
        except EtlError as exc:
            if not scheduled:
                raise
            click.echo(f"etl: error: loading {output} into the store: {log_redaction.redactor(str(exc))}", err=True)
            return exc.exit_code
        if not request.quiet:
            click.echo(redactor(loaded.format()))
    return result.exit_code


def _observe(
    request: RunRequest, observer: Observer, prefix: str, record_limit: int | None = None
) -> tuple[Plan, Any, Any]:
    """Run for a tool that watches the run and writes nothing (the output goes to a scratch directory)."""
    setup_logging(request.verbose, request.quiet)
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        return run_mapping(request, output=Path(scratch) / "graph", observer=observer, record_limit=record_limit)


@click.command(epilog=EXIT_CODES_HELP)
@mapping_argument
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Records to fetch and show per step (at most).",
)
@run_options
def preview(mapping: Path, limit: int, **shared: Any) -> None:
    """Show what a step does: its requests, a sample of the raw records, and the entities
    and relationships built from them - for the step and the steps it depends on.

    Nothing is written. Give --step (or it previews every step); point it at the API,
    at --base-url, at a --cassette or use --offline.
    """
    from ..tools.authoring import Preview

    observer = Preview(limit)
    plan, result, redactor = _observe(RunRequest(mapping, **shared), observer, "etl-preview-", record_limit=limit)
    click.echo(redactor(observer.report(plan)))
    sys.exit(result.exit_code)


@click.command(epilog=EXIT_CODES_HELP)
@mapping_argument
@run_options
def coverage(mapping: Path, **shared: Any) -> None:
    """Report, per step, the API fields that no expression reads and the properties that
    were empty for every entity (a typo's symptom). Runs the mapping; writes nothing."""
    from ..tools.authoring import Coverage

    observer = Coverage()
    plan, result, redactor = _observe(RunRequest(mapping, **shared), observer, "etl-coverage-")
    click.echo(redactor(observer.report(plan)))
    sys.exit(result.exit_code)


@click.command(epilog=EXIT_CODES_HELP)
@mapping_argument
@click.option("--key", required=True, help="The _key of the entity or relationship to explain.")
@run_options
def explain(mapping: Path, key: str, **shared: Any) -> None:
    """Explain where one entity or relationship comes from: the step, request, page and
    record, and the expression (with its place in the mapping) behind each property.
    Runs the mapping; writes nothing. Exits 1 if no object has that key."""
    from ..tools.authoring import Explain

    observer = Explain(key)
    plan, result, redactor = _observe(RunRequest(mapping, **shared), observer, "etl-explain-")
    click.echo(redactor(observer.report(plan, load_mapping(mapping))))
    sys.exit(0 if observer.found else 1)


COMMANDS = (validate, schema, run, preview, coverage, explain)
