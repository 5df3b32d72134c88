"""The ``etl`` command line."""

from __future__ import annotations

import json
import logging
import signal
import sys
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import click

from . import __version__
from .cassette import RECORD_MODES, cassette
from .config import Redactor, parse_assignments, resolve_config
from .errors import EXIT_RUN_FAILED, EtlError, RunInterrupted
from .document import data_model, is_up_to_date, render_section, write_document
from .authoring import Coverage, Explain, Preview
from .load import load_mapping, mapping_schema
from .plan import Plan, compile_file
from .expressions import ValueProblem, to_epoch_ms
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
    setup_logging(request.verbose, request.quiet)
    redactor = None
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
        )
        recording = _cassette_context(cassette_path, mode, redactor)
        with recording, _terminate_as_interrupt():
            progress = Progress(sys.stderr, enabled=sys.stderr.isatty() and not request.quiet
                                and not request.verbose)
            result = run_plan(plan, config, options, progress, observer)
    except EtlError as exc:
        fail(exc, redactor)
    except KeyboardInterrupt:
        fail(RunInterrupted("interrupted; the previous output was left untouched"), redactor)
    return plan, result, redactor


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("mapping", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=Path(".j1-integration"),
              show_default=True, help="Directory to write the graph and summary.json to (replaced atomically).")
@click.option("--pretty", is_flag=True, help="Indent the JSON output files.")
@click.option("--coverage", "with_coverage", is_flag=True,
              help="Also report, per step, the API fields no expression reads and the properties that "
                   "stayed empty.")
@run_options
def run(mapping: Path, output: Path, pretty: bool, with_coverage: bool, **shared) -> None:
    """Run MAPPING: fetch from the API and write the graph to --output."""
    observer = Coverage() if with_coverage else None
    plan, result, redactor = execute(RunRequest(mapping, **shared), output=output, pretty=pretty, observer=observer)
    if not shared["quiet"]:
        click.echo(redactor(format_result(result)))
        if observer is not None:
            click.echo("\n" + redactor(observer.report(plan)))
    sys.exit(result.exit_code)


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
    return nullcontext() if path is None else cassette(path, mode, redactor)


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

__all__ = ["main", "EXIT_RUN_FAILED"]
