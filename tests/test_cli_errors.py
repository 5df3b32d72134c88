"""The CLI converts every error in one place: an EtlError is a message and its exit code; a bug
is one line, a hint to re-run with --debug, and exit 70 - never 1 ("partial success")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import EXIT_BROKEN_PIPE, EXIT_INTERNAL, EXIT_USAGE
from engine.secrets import Redactor, log_redaction
from tests.conftest import MAPPINGS, ROOT

BUG = "import engine.cli.run_commands as r; r.compile_file = lambda path: {}[path]; "


def run_etl(*args: str, prelude: str = "", env: dict | None = None, **streams) -> subprocess.CompletedProcess:
    """The real `etl` entry point in a child process; ``prelude`` plants a bug first."""
    code = f"{prelude}from engine.cli import main; main(prog_name='etl')"
    streams = streams or {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        **streams,
    )


def test_a_bug_is_one_line_with_a_hint_and_exit_70():
    result = run_etl("validate", "mappings/digicert.yaml", prelude=BUG)
    assert result.returncode == EXIT_INTERNAL == 70
    lines = result.stderr.splitlines()
    assert lines[0] == "etl: internal error: KeyError: PosixPath('mappings/digicert.yaml')"
    assert "--debug" in lines[1] and "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("how", [["--debug"], []])
def test_debug_shows_the_traceback(how):
    env = {} if how else {"ETL_DEBUG": "1"}
    result = run_etl(*how, "validate", "mappings/digicert.yaml", prelude=BUG, env=env)
    assert result.returncode == EXIT_INTERNAL
    assert "Traceback (most recent call last)" in result.stderr and "KeyError" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("etl: this is a bug in etl")


def test_an_internal_error_message_is_redacted(etl, monkeypatch):
    secret = "s3cr3t-token-value"
    monkeypatch.setattr(log_redaction, "redactor", Redactor([secret]))

    def broken(path):
        raise RuntimeError(f"could not use {secret}")

    monkeypatch.setattr("engine.cli.run_commands.compile_file", broken)
    result = etl("validate", MAPPINGS / "digicert.yaml")
    assert result.exit_code == EXIT_INTERNAL
    assert secret not in result.stderr and "RuntimeError: could not use [REDACTED]" in result.stderr


def test_an_etl_error_is_its_message_and_its_code(etl, tmp_path):
    result = etl("run", MAPPINGS / "digicert.yaml", "--offline", "--as-of", "next tuesday", "--output", tmp_path)
    assert result.exit_code == EXIT_USAGE
    assert result.stderr == "etl: error: --as-of: 'next tuesday' is not an ISO-8601 time\n"


def test_a_closed_stdout_is_not_a_bug():
    read, write = os.pipe()
    os.close(read)  # the reader is gone before etl writes a byte: the first write fails with EPIPE
    try:
        result = run_etl("schema", stdout=write, stderr=subprocess.PIPE)
    finally:
        os.close(write)
    assert result.returncode == EXIT_BROKEN_PIPE
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr


def test_every_command_documents_the_internal_error_code(etl):
    from engine.cli import main

    for name in main.commands:
        if name == "schema":
            continue
        assert f"{EXIT_INTERNAL}  internal error" in etl(name, "--help").stdout, name
    assert Path(ROOT / "README.md").read_text().count(f"| {EXIT_INTERNAL} |") == 1


@pytest.mark.parametrize("where", ["the top-level options", "a command's options"])
def test_ctrl_c_while_options_are_parsed_exits_130(etl, monkeypatch, where):
    """Ctrl-C can land before any command runs, while click parses the command line: that is
    an interruption too (130), never click's own Abort (1, which means partial success)."""
    import click

    from engine.cli import EtlGroup

    def interrupted(self, ctx, args):
        raise KeyboardInterrupt

    target = EtlGroup if where == "the top-level options" else click.Command
    monkeypatch.setattr(target, "parse_args", interrupted)
    result = etl("validate", MAPPINGS / "digicert.yaml")
    assert result.exit_code == 130 and "etl: error: interrupted" in result.stderr
