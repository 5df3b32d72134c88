"""The ``etl`` command line."""

from __future__ import annotations

import json
import logging
import signal
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import click

from . import __version__
from . import sync as graph_sync  # its option defaults are needed to build the command line
from .cassette import RECORD_MODES
from .config import Redactor, parse_assignments, resolve_config
from .errors import EXIT_RUN_FAILED, ConfigError, EtlError, MappingError, RunInterrupted
from .expressions import ValueProblem, to_epoch_ms
from .load import load_mapping, mapping_schema
from .plan import Plan, compile_file
from .progress import Progress
from .run import DEFAULT_CONCURRENCY, Observer, RunOptions, RunResult, run_plan

EXIT_CODES_HELP = """\b
Exit codes:
  0  success: every step succeeded and the output is complete
  1  partial success: output written, but some steps failed or some types are partial
  2  usage error (bad command-line options)
  3  the mapping file is invalid
  4  a config value is missing or invalid
  5  the run failed; the previous output was left untouched
  130  interrupted (Ctrl-C, SIGTERM); the previous output was left untouched
"""


class RedactingFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.redactor = Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor(record.getMessage())
        record.args = ()
        return True


_redacting = RedactingFilter()


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("etl: %(levelname)s: %(message)s"))
    handler.addFilter(_redacting)
    root = logging.getLogger("etl")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def fail(error: EtlError, redactor: Redactor | None = None) -> None:
    text = str(error)
    if redactor is not None:
        text = redactor(text)
    click.echo(f"etl: error: {text}" if "\n" not in text else text, err=True)
    sys.exit(error.exit_code)


@click.group(epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="etl")
def main() -> None:
    """Turn vendor security APIs into a JupiterOne-compatible asset graph,
    driven by declarative YAML mapping files."""


@main.command()
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
    relationships = {r.type for s in plan.steps for r in (*s.relationships, *s.mapped_relationships)}
    return f"{len(entities)} entity types, {len(relationships)} relationship types"


@main.command()
def schema() -> None:
    """Print the JSON Schema of mapping files (for editors and CI linters)."""
    click.echo(json.dumps(mapping_schema(), indent=2))


def _parse_base_urls(values: tuple[str, ...]) -> tuple[tuple[str | None, str], ...]:
    out = []
    for value in values:
        name, sep, url = value.partition("=")
        if sep and "://" not in name:
            out.append((name, url))
        else:
            out.append((None, value))
    return tuple(out)


def run_options(command):
    """The options every command that runs a mapping shares: config, where HTTP goes, which steps."""
    options = [
        click.option("-c", "--config", "config_pairs", multiple=True, metavar="NAME=VALUE",
                     help="Set a config field (repeatable). Otherwise the field's environment variable, "
                          "then .env in the working directory, then its default."),
        click.option("--base-url", "base_urls", multiple=True, metavar="[SOURCE=]URL",
                     help="Send requests to URL instead of the mapping's base URL (e.g. a local or staging "
                          "server). SOURCE=URL replaces one named source."),
        click.option("--cassette", type=click.Path(dir_okay=False, path_type=Path),
                     help="Replay (or record) HTTP from/to this vcrpy cassette instead of the network."),
        click.option("--record-mode", type=click.Choice(RECORD_MODES), default=None,
                     help="With --cassette: none = replay only (default); once = record if the file is missing; "
                          "all = re-record everything from the live API."),
        click.option("--offline", is_flag=True,
                     help="Replay the mapping's own bundled cassette (its 'offline' section); no network, "
                          "no secrets."),
        click.option("--step", "steps", multiple=True, metavar="ID",
                     help="Run only this step and the steps it depends on (repeatable)."),
        click.option("--concurrency", type=click.IntRange(1, 64), default=DEFAULT_CONCURRENCY, show_default=True,
                     help="Parallel child requests of fan-out steps (forced to 1 with --cassette: vcrpy is not "
                          "thread-safe). The output is the same whatever the value."),
        click.option("--as-of", "as_of", metavar="TIME",
                     help="Evaluate time windows (now_ms(), days_ago_ms()) as of this ISO-8601 time instead of "
                          "now; --offline uses the time its cassette was recorded."),
        click.option("-v", "--verbose", count=True,
                     help="Log steps and every HTTP request (-v), and more detail (-vv), to stderr."),
        click.option("-q", "--quiet", is_flag=True, help="Only print errors."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@dataclass(frozen=True)
class RunRequest:
    """What the shared run options asked for."""

    mapping: Path
    config_pairs: tuple[str, ...]
    base_urls: tuple[str, ...]
    cassette: Path | None
    record_mode: str | None
    offline: bool
    steps: tuple[str, ...]
    concurrency: int
    as_of: str | None
    verbose: int
    quiet: bool


def execute(request: RunRequest, *, output: Path, pretty: bool = False, observer: Observer | None = None,
            record_limit: int | None = None) -> tuple[Plan, RunResult, Redactor]:
    """Compile, configure and run a mapping as the options say. Exits with a message on EtlError."""
    try:
        return run_mapping(request, output=output, pretty=pretty, observer=observer, record_limit=record_limit)
    except EtlError as exc:
        fail(exc, _redacting.redactor)


def run_mapping(request: RunRequest, *, output: Path, pretty: bool = False, observer: Observer | None = None,
                record_limit: int | None = None) -> tuple[Plan, RunResult, Redactor]:
    """Compile, configure and run a mapping as the options say; raises EtlError."""
    setup_logging(request.verbose, request.quiet)
    try:
        plan = compile_file(request.mapping)
        for step_id in request.steps:
            if step_id not in {s.id for s in plan.steps}:
                raise click.BadParameter(f"{request.mapping} has no step '{step_id}'", param_hint="--step")
        cassette_path, mode, defaults = _replay_settings(plan, request.cassette, request.record_mode,
                                                         request.offline)
        as_of = request.as_of
        if as_of is None and request.offline and plan.offline is not None:
            as_of = plan.offline.as_of
        config = resolve_config(plan, parse_assignments(list(request.config_pairs)), defaults=defaults,
                                secret_placeholders=cassette_path is not None and mode == "none")
        redactor = config.redactor
        _redacting.redactor = redactor
        options = RunOptions(
            output=output, base_urls=_parse_base_urls(request.base_urls), steps=request.steps, pretty=pretty,
            concurrency=1 if cassette_path is not None else request.concurrency,
            now=_parse_time(as_of), record_limit=record_limit,
            prefetch=cassette_path is None and record_limit is None,
        )
        recording = _cassette_context(cassette_path, mode, redactor)
        with recording, _terminate_as_interrupt():
            progress = Progress(sys.stderr, enabled=sys.stderr.isatty() and not request.quiet
                                and not request.verbose)
            result = run_plan(plan, config, options, progress, observer)
    except KeyboardInterrupt:
        raise RunInterrupted("interrupted; the previous output was left untouched") from None
    return plan, result, redactor


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("mapping", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=Path(".j1-integration"),
              show_default=True, help="Directory to write the graph and summary.json to (replaced atomically).")
@click.option("--pretty", is_flag=True, help="Indent the JSON output files.")
@click.option("--coverage", "with_coverage", is_flag=True,
              help="Also report, per step, the API fields no expression reads and the properties that "
                   "stayed empty.")
@click.option("--keep", type=click.IntRange(2), metavar="N",
              help="Keep the N newest outputs in DIR.history/ (hard links) and, after each run, print what "
                   "changed since the previous one (saved as diff.json there).")
@click.option("--alerts", "rules_file", type=click.Path(dir_okay=False, path_type=Path), metavar="RULES",
              help="With --keep: evaluate these alert rules on each change (saved as alerts.json).")
@click.option("--every", metavar="INTERVAL",
              help="Run again every INTERVAL (30m, 6h, 1d...) until stopped (Ctrl-C, SIGTERM); a failed run "
                   "is reported and the schedule goes on.")
@click.option("--runs", type=click.IntRange(1), metavar="N", help="With --every: stop after N runs.")
@run_options
def run(mapping: Path, output: Path, pretty: bool, with_coverage: bool, keep: int | None,
        rules_file: Path | None, every: str | None, runs: int | None, **shared) -> None:
    """Run MAPPING: fetch from the API and write the graph to --output.

    \b
    Examples:
      etl run mappings/example.yaml --output out
      etl run mappings/example.yaml --output out --keep 10 --alerts rules/example.yaml --every 6h
    """
    if rules_file is not None and keep is None:
        raise click.UsageError("--alerts needs --keep N: alerts compare a run with the one before it")
    if runs is not None and every is None:
        raise click.UsageError("--runs goes with --every")
    from .authoring import Coverage
    from .schedule import parse_interval

    try:
        interval = parse_interval(every) if every else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--every") from None
    rules = _load_rules_or_fail(rules_file) if rules_file else None
    request = RunRequest(mapping, **shared)
    observer = Coverage() if with_coverage else None
    done = 0
    while True:
        started = time.monotonic()
        code = _run_once(request, output, pretty, observer, keep, rules, scheduled=interval is not None)
        done += 1
        if interval is None or (runs is not None and done >= runs):
            sys.exit(code)
        try:
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
        except KeyboardInterrupt:
            fail(RunInterrupted("stopped between runs"))


def _run_once(request: RunRequest, output: Path, pretty: bool, observer, keep: int | None, rules,
              scheduled: bool) -> int:
    """One run, its summary, and (with --keep) its history and changes. Returns its exit code;
    a failed run of a schedule is reported, not fatal (the next one may succeed)."""
    try:
        plan, result, redactor = run_mapping(request, output=output, pretty=pretty, observer=observer)
    except EtlError as exc:
        if not scheduled or isinstance(exc, (MappingError, ConfigError, RunInterrupted)):
            fail(exc, _redacting.redactor)  # these do not get better by waiting
        click.echo(f"etl: error: {_redacting.redactor(str(exc))}", err=True)
        return exc.exit_code
    if not request.quiet:
        click.echo(redactor(format_result(result)))
        if observer is not None:
            click.echo("\n" + redactor(observer.report(plan)))
    if keep is not None:
        from .schedule import record as record_history, report_changes

        previous, entry = record_history(output, keep)
        if previous is not None:
            try:
                click.echo(redactor(report_changes(previous, entry, rules, _parse_time(request.as_of))))
            except EtlError as exc:
                click.echo(f"etl: error: comparing with {previous}: {exc}", err=True)
    return result.exit_code


def _load_rules_or_fail(path: Path):
    from . import alerts as alert_rules

    try:
        return alert_rules.load_rules(path)
    except EtlError as exc:
        fail(exc)


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("mapping", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--limit", type=click.IntRange(1), default=3, show_default=True,
              help="Records to fetch and show per step (at most).")
@run_options
def preview(mapping: Path, limit: int, **shared) -> None:
    """Show what a step does: its requests, a sample of the raw records, and the entities
    and relationships built from them - for the step and the steps it depends on.

    Nothing is written. Give --step (or it previews every step); point it at the API,
    at --base-url, at a --cassette or use --offline.
    """
    from .authoring import Preview

    observer = Preview(limit)
    with tempfile.TemporaryDirectory(prefix="etl-preview-") as scratch:
        plan, result, redactor = execute(RunRequest(mapping, **shared), output=Path(scratch) / "graph",
                                         observer=observer, record_limit=limit)
    click.echo(redactor(observer.report(plan)))
    sys.exit(result.exit_code)


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("mapping", type=click.Path(dir_okay=False, path_type=Path))
@run_options
def coverage(mapping: Path, **shared) -> None:
    """Report, per step, the API fields that no expression reads and the properties that
    were empty for every entity (a typo's symptom). Runs the mapping; writes nothing."""
    from .authoring import Coverage

    observer = Coverage()
    with tempfile.TemporaryDirectory(prefix="etl-coverage-") as scratch:
        plan, result, redactor = execute(RunRequest(mapping, **shared), output=Path(scratch) / "graph",
                                         observer=observer)
    click.echo(redactor(observer.report(plan)))
    sys.exit(result.exit_code)


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("mapping", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key", required=True, help="The _key of the entity or relationship to explain.")
@run_options
def explain(mapping: Path, key: str, **shared) -> None:
    """Explain where one entity or relationship comes from: the step, request, page and
    record, and the expression (with its place in the mapping) behind each property.
    Runs the mapping; writes nothing. Exits 1 if no object has that key."""
    from .authoring import Explain

    observer = Explain(key)
    with tempfile.TemporaryDirectory(prefix="etl-explain-") as scratch:
        plan, result, redactor = execute(RunRequest(mapping, **shared), output=Path(scratch) / "graph",
                                         observer=observer)
    click.echo(redactor(observer.report(plan, load_mapping(mapping))))
    sys.exit(0 if observer.found else 1)


def _replay_settings(plan: Plan, cassette_path: Path | None, record_mode: str | None, offline: bool):
    if offline:
        if plan.offline is None:
            raise EtlError(f"{plan.path} has no 'offline' section naming a bundled cassette; use --cassette")
        return cassette_path or plan.offline.cassette, record_mode or "none", dict(plan.offline.config)
    if record_mode and cassette_path is None:
        raise click.BadParameter("--record-mode needs --cassette", param_hint="--record-mode")
    return cassette_path, record_mode or "none", {}


def _parse_time(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return to_epoch_ms(text)
    except ValueProblem:
        raise click.BadParameter(f"{text!r} is not an ISO-8601 time", param_hint="--as-of") from None


def _cassette_context(path: Path | None, mode: str, redactor: Redactor):
    if path is None:
        return nullcontext()
    from .cassette import cassette  # vcrpy is only loaded when a cassette is used

    return cassette(path, mode, redactor)


class _terminate_as_interrupt:
    """Treat SIGTERM like Ctrl-C, so the staging directory is cleaned up and the old output kept."""

    def __enter__(self):
        def handler(signum, frame):
            raise KeyboardInterrupt

        try:
            self.previous = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread
            self.previous = None
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def format_result(result: RunResult) -> str:
    plan = result.plan
    lines = [f"{plan.integration_name} ({plan.path}) -> {result.output}"]
    width = max(len(r.step.id) for r in result.steps) if result.steps else 0
    for step in result.steps:
        counts = ", ".join(f"{t} {n}" for t, n in sorted(step.counts.items())) or "nothing"
        lines.append(f"  {step.step.id:<{width}}  {step.status:<9}  {counts}")
        if step.error:
            lines.append(f"  {'':<{width}}  error: {step.error}")
        if step.warning_count:
            lines.append(f"  {'':<{width}}  {step.warning_count} warning(s); first: {step.warnings[0]}")
    entities = sum(n for s in result.steps for t, n in s.counts.items() if t in _entity_types(plan))
    relationships = sum(n for s in result.steps for n in s.counts.values()) - entities
    lines.append(f"Graph: {entities} entities, {relationships} relationships")
    for note in result.graph_notes:
        lines.append(f"  note: {note}")
    partial = ", ".join(result.partial_types) or "none"
    lines.append(f"Partial datasets: {partial}")
    return "\n".join(lines)


def _entity_types(plan: Plan) -> set[str]:
    return {e.type for s in plan.steps for e in s.entities}


DOCUMENT_EXIT_CODES_HELP = """\b
Exit codes:
  0  success (with --check: FILE is up to date)
  1  with --check: FILE is missing or not up to date
  2  usage error (bad command-line options)
  3  the mapping file is invalid
  5  FILE has the start marker but no end marker; nothing was written
"""


@main.command(epilog=DOCUMENT_EXIT_CODES_HELP)
@click.argument("mapping", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Markdown file to update: only the text between the "
                   "<!-- {J1_DOCUMENTATION_MARKER_START} --> and <!-- {J1_DOCUMENTATION_MARKER_END} --> "
                   "markers is replaced; without the start marker the section is appended; a missing "
                   "FILE is created. Without --output the section is printed to stdout.")
@click.option("--check", is_flag=True,
              help="With --output: change nothing; exit 1 if FILE is not what it would be written as "
                   "(for CI: the documentation was not regenerated after the mapping changed).")
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
    from .document import data_model, is_up_to_date, render_section, write_document

    try:
        model = data_model(compile_file(mapping))
        if model.is_empty:
            click.echo(f"etl: {mapping} declares no entities or relationships; nothing to document", err=True)
            return
        section = render_section(model)
        if output is None:
            click.echo(section)
        elif check:
            if not is_up_to_date(output, section):
                click.echo(f"etl: {output} is not up to date with {mapping}; "
                           f"run: etl document {mapping} --output {output}", err=True)
                sys.exit(1)
            click.echo(f"{output}: up to date")
        else:
            changed = write_document(output, section)
            click.echo(f"{output}: {'updated' if changed else 'already up to date'}")
    except EtlError as exc:
        fail(exc)


DIFF_EXIT_CODES_HELP = """\b
Exit codes (as diff(1)):
  0  no differences
  1  differences found
  2  usage error (bad command-line options)
  3  OLD or NEW is not a readable etl output directory (no summary.json, a malformed graph file)
"""


@main.command("diff", epilog=DIFF_EXIT_CODES_HELP)
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help='text: a readable report; json: {"entities": {"added": [keys], "removed": [keys], '
                   '"changed": [{"_key": ..., "changes": {property: {"old": ..., "new": ...}}}]}, '
                   '"relationships": {...}}, keys sorted.')
@click.option("--ignore", "ignored", multiple=True, metavar="PROPERTY",
              help="Also leave PROPERTY out of the comparison (repeatable), e.g. a timestamp that moves on "
                   "every run.")
def diff_command(old: Path, new: Path, output_format: str, ignored: tuple[str, ...]) -> None:
    """Compare two runs' output: what was added, removed and changed.

    OLD and NEW are output directories of `etl run` (e.g. yesterday's and today's). Lists the entities and relationships added, removed and changed, matched by _key;
    a changed object shows each property that differs with its old and new value (an
    absent property reads as null).

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
    """
    from . import diff as graph_diff

    if {"_key", "_type"} & set(ignored):
        raise click.BadParameter("_key and _type cannot be ignored: objects are matched by them",
                                 param_hint="--ignore")
    try:
        result = graph_diff.diff_outputs(old, new, ignore=ignored)
    except EtlError as exc:
        fail(exc)
    if output_format == "json":
        click.echo(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    else:
        click.echo(graph_diff.format_diff(result))
    sys.exit(result.exit_code)


ALERTS_EXIT_CODES_HELP = """\b
Exit codes:
  0  no alert
  1  at least one alert
  2  usage error (bad command-line options)
  3  OLD or NEW is not a readable etl output directory
  4  the rules file is missing or invalid (each problem as FILE:LINE:COL: path: message)
  5  a rule could not be evaluated on some entity (named on stderr); the other alerts are printed
"""


def _alerts_time(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    try:
        value = to_epoch_ms(text)
    except ValueProblem:
        value = None
    if value is None:
        raise click.BadParameter(f"{text!r} is not an ISO-8601 time", param_hint=option)
    return value


@main.command("alerts", epilog=ALERTS_EXIT_CODES_HELP)
@click.argument("rules", type=click.Path(path_type=Path))
@click.option("--old", "old", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="The earlier output directory (e.g. yesterday's run).")
@click.option("--new", "new", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="The later output directory (e.g. today's run).")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: a list of {rule, on, _type, _key, displayName, description[, changes]}, in the order "
                   "of the rules, then by _key.")
@click.option("--as-of", "as_of", metavar="TIME",
              help="Evaluate now_ms() and days_ago_ms() as of this ISO-8601 time instead of now (for "
                   "reproducible date predicates).")
@click.option("--old-as-of", "old_as_of", metavar="TIME",
              help="The clock of OLD's side of 'became' rules. Default: --as-of moved back by the time "
                   "between the two runs (from their summary.json).")
def alerts_command(rules: Path, old: Path, new: Path, output_format: str, as_of: str | None,
                   old_as_of: str | None) -> None:
    """Raise the alerts a rules file describes for the change from OLD to NEW.

    OLD and NEW are output directories of `etl run`; RULES is a YAML file of alert rules:

    \b
      rules:
        - name: new-admin-user            # unique in the file
          description: A new user is an administrator     # optional
          on: added                       # added | removed | changed | became
          type: acme_user                 # entity _type
          where: admin                    # optional JMESPath predicate
    \b
    What `where` sees:
      added    the entity in NEW
      removed  the entity in OLD (never for a type partial in either run)
      changed  the entity in NEW plus _old (the entity in OLD) and _changed (names of
               the changed properties); e.g. "admin && !(_old.admin)"
      became   true now (NEW, --as-of) and false before (OLD, --old-as-of), changed
               or not; e.g. "expiresOn <= days_ago_ms(`-30`)"
    Entities are seen without _rawData. The engine's JMESPath functions are available
    (to_epoch_ms, now_ms, days_ago_ms, ...). See docs/monitoring.md.

    \b
    Examples:
      etl alerts rules/acme.yaml --old yesterday/ --new today/
      etl alerts rules/acme.yaml --old yesterday/ --new today/ --format json --as-of 2026-11-24T09:00:00Z
    """
    from . import alerts as alert_rules

    now = _alerts_time(as_of, "--as-of")
    old_now = _alerts_time(old_as_of, "--old-as-of")
    try:
        rule_set = alert_rules.load_rules(rules)
        report = alert_rules.evaluate_rules(rule_set, old, new, now=now, old_now=old_now)
    except EtlError as exc:
        fail(exc)
    for warning in report.warnings:
        click.echo(f"etl: warning: {warning}", err=True)
    for error in report.errors:
        click.echo(f"etl: error: {error}", err=True)
    if output_format == "json":
        click.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        click.echo(alert_rules.format_alerts(report))
    sys.exit(report.exit_code)


SYNC_EXIT_CODES_HELP = """\b
Exit codes:
  0  the job was finalized with every entity and relationship
  1  the job was finalized, but some objects were too large even without their raw data and were
     skipped (their types were sent as partial, so JupiterOne keeps what it had)
  2  usage error (bad options; DIRECTORY has no summary.json; a plain-http --api-base-url)
  4  the JupiterOne account or API key is missing
  5  the sync failed: the job (if one was created) was aborted and nothing was finalized
  130  interrupted (Ctrl-C, SIGTERM): the job was aborted
"""


@main.command(epilog=SYNC_EXIT_CODES_HELP)
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--account", envvar=graph_sync.ACCOUNT_ENV, show_envvar=True, metavar="ID",
              help="JupiterOne account id (sent as JupiterOne-Account). Also read from .env.")
@click.option("--api-key", envvar=graph_sync.API_KEY_ENV, show_envvar=True, metavar="KEY",
              help="JupiterOne API key (sent as a bearer token; never printed, logged or written). Prefer the "
                   "environment variable or .env: a command line is visible to other users of the machine.")
@click.option("-i", "--integration-instance-id", required=True, metavar="ID",
              help="The integration instance the data belongs to (an integration-managed job).")
@click.option("--api-base-url", default=graph_sync.DEFAULT_API_BASE_URL, show_default=True, metavar="URL",
              help="JupiterOne API root (another region, or a local look-alike: plain http only to loopback).")
@click.option("--no-step-events", is_flag=True,
              help="Do not post one job-log event per step of summary.json before finalizing.")
@click.option("--cassette", "cassette_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Replay (or record) the HTTP exchanges from/to this vcrpy cassette (for tests and demos).")
@click.option("--record-mode", type=click.Choice(RECORD_MODES), default=None,
              help="With --cassette: none = replay only (default); once = record if the file is missing; "
                   "all = re-record.")
@click.option("-v", "--verbose", count=True, help="Log each batch (-v) and every request (-vv) to stderr.")
@click.option("-q", "--quiet", is_flag=True, help="Only print errors.")
def sync(directory: Path, account: str | None, api_key: str | None, integration_instance_id: str,
         api_base_url: str, no_step_events: bool, cassette_path: Path | None, record_mode: str | None,
         verbose: int, quiet: bool) -> None:
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
    _redacting.redactor = redactor
    try:
        account, api_key = graph_sync.resolve_credentials(account, api_key)
        redactor.add(api_key)
        settings = graph_sync.SyncSettings(account=account, api_key=api_key,
                                           integration_instance_id=integration_instance_id,
                                           api_base_url=api_base_url, step_events=not no_step_events)
        replay = _cassette_context(cassette_path, record_mode or "none", redactor)
        with replay, _terminate_as_interrupt():
            report = graph_sync.synchronize(directory, settings, redactor)
    except EtlError as exc:
        fail(exc, redactor)
    except KeyboardInterrupt:
        fail(RunInterrupted("interrupted"), redactor)
    if not quiet:
        click.echo(redactor(report.format()))
    sys.exit(report.exit_code)


VISUALIZE_EXIT_CODES_HELP = """\b
Exit codes:
  0  FILE was written (also when there is no data: the page says so)
  2  usage error (bad options; DIRECTORY does not exist)
  5  a graph file cannot be read, or FILE cannot be written
"""


@main.command(epilog=VISUALIZE_EXIT_CODES_HELP)
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.html",
              help="Where to write the page.  [default: DIRECTORY/index.html]")
def visualize(directory: Path, output: Path | None) -> None:
    """Draw the graph in DIRECTORY (an `etl run` output, or its graph/ folder) as one
    self-contained HTML page: nothing is loaded from the internet.

    Nodes are entities, coloured by _type (with a legend) and labelled with displayName,
    _type and _key; edges are relationships, labelled with their _class. A mapped
    relationship points at the entity its target filter keys select, or else at a dashed
    placeholder built from the target's filter-key values. Drag to pan, wheel to zoom,
    click for properties.

    \b
    Examples:
      etl run mappings/example.yaml --output out && etl visualize out
      etl visualize out --output /tmp/graph.html
    """
    from . import visualize as graph_visualize

    output = output if output is not None else directory / "index.html"
    try:
        view = graph_visualize.write_page(directory, output)
    except EtlError as exc:
        fail(exc)
    if not view["nodes"]:
        click.echo(f"etl: {directory}: there was no data found to visualize; {output} says so", err=True)
        return
    kinds = [n["kind"] for n in view["nodes"]]
    click.echo(f"{output}: {kinds.count('entity')} entities, {len(view['edges'])} relationships, "
               f"{kinds.count('placeholder')} mapped-target placeholders, {kinds.count('missing')} missing entities")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

__all__ = ["main", "EXIT_RUN_FAILED"]
