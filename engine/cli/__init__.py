"""The ``etl`` command line: click commands that parse options, call the engine and print.

Errors are converted here, once (:class:`EtlGroup`): an :class:`~engine.errors.EtlError`
prints ``etl: error: <message>`` (redacted) and exits with its code; Ctrl-C exits 130;
anything else is a bug, reported in one line with a hint to re-run with ``--debug``, and
exits :data:`~engine.errors.EXIT_INTERNAL` - never 1, which means "partial success".
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import click

from .. import __version__
from ..errors import EXIT_BROKEN_PIPE, EXIT_INTERNAL, EXIT_INTERRUPTED, EtlError
from ..secrets import log_redaction
from . import query_commands, run_commands, scaffold_commands, store_commands, tool_commands
from .common import EXIT_CODES_HELP

DEBUG_ENV = "ETL_DEBUG"


class EtlGroup(click.Group):
    """A click group that turns every error a command raises into a message and an exit code."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        """The top-level options parsed; Ctrl-C meanwhile exits 130 too (click's own Abort exits 1)."""
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt:
            report("interrupted")
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit):
            raise  # click's own: usage errors (exit 2) and explicit exits
        except (KeyboardInterrupt, click.exceptions.Abort):
            report("interrupted")
            ctx.exit(EXIT_INTERRUPTED)
        except EtlError as exc:
            report(str(exc))
            ctx.exit(exc.exit_code)
        except BrokenPipeError:
            # The reader of stdout went away (`etl diff a b | head`): nothing more to say to it.
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open: the exit's final flush needs it
            ctx.exit(EXIT_BROKEN_PIPE)
        except Exception as exc:
            if ctx.params.get("debug"):
                traceback.print_exc()
            detail = log_redaction.redactor(f"{type(exc).__name__}: {exc}".splitlines()[0])
            click.echo(
                f"etl: internal error: {detail}\n"
                f"etl: this is a bug in etl; re-run with --debug (or {DEBUG_ENV}=1) for the traceback, "
                f"and report it",
                err=True,
            )
            ctx.exit(EXIT_INTERNAL)


def report(message: str) -> None:
    """Print an error message, redacted; a multi-line one (every problem of a file) as it is."""
    text = log_redaction.redactor(message)
    click.echo(f"etl: error: {text}" if "\n" not in text else text, err=True)


@click.group(cls=EtlGroup, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="etl")
@click.option(
    "--debug", is_flag=True, envvar=DEBUG_ENV, help=f"Print the traceback of an internal error (also {DEBUG_ENV}=1)."
)
def main(debug: bool) -> None:
    """Turn vendor security APIs into a JupiterOne-compatible asset graph,
    driven by declarative YAML mapping files."""


for command in (
    *run_commands.COMMANDS,
    *tool_commands.COMMANDS,
    *store_commands.COMMANDS,
    *scaffold_commands.COMMANDS,
    *query_commands.COMMANDS,
):
    main.add_command(command)

__all__ = ["main"]
