"""What the commands share: logging, the run options, and the exit codes' help text."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..errors import EXIT_INTERNAL
from ..http.cassette import RECORD_MODES
from ..pipeline.progress import utc_timestamp
from ..pipeline.runner import DEFAULT_CONCURRENCY
from ..secrets import log_redaction

INTERNAL_ERROR_LINE = f"  {EXIT_INTERNAL}  internal error: a bug in etl (re-run with --debug for the traceback)"

EXIT_CODES_HELP = f"""\b
Exit codes:
  0  success: every step succeeded and the output is complete
  1  partial success: output written, but some steps failed or some types are partial
  2  usage error (bad command-line options)
  3  the mapping file is invalid
  4  a config value is missing or invalid
  5  the run failed; the previous output was left untouched
{INTERNAL_ERROR_LINE}
  130  interrupted (Ctrl-C, SIGTERM); the previous output was left untouched
"""


LOG_FORMAT = "etl: %(levelname)s: %(message)s"
STAMPED_LOG_FORMAT = "%(asctime)s " + LOG_FORMAT  # 2026-11-30T14:03:12.345Z etl: INFO: ...


def setup_logging(verbose: int, quiet: bool, *, timestamps: bool = False) -> None:
    """Log lines on stderr (redacted): warnings by default, -v info, -vv debug, -q errors only.

    With -v (or ``timestamps``: each run of ``etl run --every``) a line starts with its time in
    UTC, to the millisecond: ``2026-11-30T14:03:12.345Z etl: INFO: step fetch-users: Fetch users``.
    """
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    handler = CurrentStderrHandler()
    handler.setFormatter(UtcFormatter(STAMPED_LOG_FORMAT if timestamps or verbose else LOG_FORMAT))
    handler.addFilter(log_redaction)
    root = logging.getLogger("etl")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class UtcFormatter(logging.Formatter):
    """Times as ``2026-11-30T14:03:12.345Z`` (ISO 8601, UTC): sortable, and the same on every machine."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_timestamp(record.created)


class CurrentStderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a line is logged: a live progress display replaces
    it while it draws, to print log lines above itself."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


mapping_argument = click.argument("mapping", type=click.Path(dir_okay=False, path_type=Path))


def output_dir_option(name: str, help: str) -> Callable:
    """A required option naming an output directory of `etl run` (``--old``, ``--new``)."""
    return click.option(name, required=True, type=click.Path(path_type=Path), metavar="DIR", help=help)


def report_format_option(json_help: str) -> Callable:
    """``--format text|json`` of a command that prints a report."""
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help=json_help,
    )


def print_report(output_format: str, data: Any, text: Callable[[], str]) -> None:
    """Print a report as indented JSON (``data``) or as text (``text()``)."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False) if output_format == "json" else text())


def run_options(command: Callable) -> Callable:
    """The options every command that runs a mapping shares: config, where HTTP goes, which steps."""
    options = [
        click.option(
            "-c",
            "--config",
            "config_pairs",
            multiple=True,
            metavar="NAME=VALUE",
            help="Set a config field (repeatable). Otherwise the field's environment variable, "
            "then .env in the working directory, then its default.",
        ),
        click.option(
            "--base-url",
            "base_urls",
            multiple=True,
            metavar="[SOURCE=]URL",
            help="Send requests to URL instead of the mapping's base URL (e.g. a local or staging "
            "server). SOURCE=URL replaces one named source.",
        ),
        click.option(
            "--cassette",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Replay (or record) HTTP from/to this vcrpy cassette instead of the network.",
        ),
        click.option(
            "--record-mode",
            type=click.Choice(RECORD_MODES),
            default=None,
            help="With --cassette: none = replay only (default); once = record if the file is missing; "
            "all = re-record everything from the live API.",
        ),
        click.option(
            "--offline",
            is_flag=True,
            help="Replay the mapping's own bundled cassette (its 'offline' section); no network, no secrets.",
        ),
        click.option(
            "--step",
            "steps",
            multiple=True,
            metavar="ID",
            help="Run only this step and the steps it depends on (repeatable).",
        ),
        click.option(
            "--concurrency",
            type=click.IntRange(1, 64),
            default=DEFAULT_CONCURRENCY,
            show_default=True,
            help="Parallel requests of fan-outs, accounts, detail requests and export files (forced to 1 with "
            "--cassette: vcrpy is not thread-safe). The output is the same whatever the value.",
        ),
        click.option(
            "--as-of",
            "as_of",
            metavar="TIME",
            help="Evaluate time windows (now_ms(), days_ago_ms()) as of this ISO-8601 time instead of "
            "now; --offline uses the time its cassette was recorded.",
        ),
        click.option(
            "-v",
            "--verbose",
            count=True,
            help="Log steps and every HTTP request (-v), and more detail (-vv), to stderr, each line "
            "starting with its UTC time (2026-11-30T14:03:12.345Z).",
        ),
        click.option("-q", "--quiet", is_flag=True, help="Only print errors."),
    ]
    for option in reversed(options):
        command = option(command)
    return command
