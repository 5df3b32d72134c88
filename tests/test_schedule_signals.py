"""A scheduled `etl run --every` stopped while it waits between runs: SIGTERM or Ctrl-C (SIGINT)
exits 130 with a message saying where the last output is, and that output is left byte for
byte as it was. Each run's summary starts with its start time, and its log lines (-v) with
theirs.

A real `etl run` process against a local API. The interval is a minute, not a second: the
signal is sent as soon as the process says when its next run is, and a minute leaves no
chance (on a slow, busy machine) that the next run has begun by then."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import MAPPINGS, ROOT
from tests.fakes import digicert
from tests.fakes.server import LocalApi

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGINT, id="SIGINT")]


def snapshot_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class Schedule:
    """`etl run MAPPING --every 1m -v` in its own process; its stdout read line by line as it comes."""

    def __init__(self, api: LocalApi, out: Path, cwd: Path, api_key: str = digicert.API_KEY):
        command = [sys.executable, "-m", "engine", "run", str(MAPPINGS / "digicert.yaml")]
        command += ["--base-url", f"{api.url}/services/v2", "--output", str(out), "--every", "1m", "-v"]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "DIGICERT_API_KEY": api_key}
        self.process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for_the_wait(self) -> None:
        """Until the first run is over and the process waits for the next one."""
        while True:
            line = self.lines.get(timeout=60)
            assert line is not None, f"etl exited early: {self.process.wait()} {self.process.stderr.read()}"
            self.stdout.append(line)
            if line.startswith("Next run at "):
                return

    def stop(self, signum: int) -> tuple[int, str]:
        """Send ``signum``; (exit code, stderr)."""
        self.process.send_signal(signum)
        _, stderr = self.process.communicate(timeout=30)
        while (line := self.lines.get(timeout=30)) is not None:
            self.stdout.append(line)
        return self.process.returncode, stderr

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


@pytest.mark.parametrize("signum", SIGNALS)
def test_a_signal_between_runs_exits_130_and_keeps_the_last_output(tmp_path, signum):
    out = tmp_path / "out"
    with LocalApi() as api:
        digicert.install(api)
        schedule = Schedule(api, out, tmp_path)
        try:
            schedule.wait_for_the_wait()
            before = snapshot_files(out)
            code, stderr = schedule.stop(signum)
        finally:
            schedule.kill()
    assert code == 130, stderr
    lines = stderr.splitlines()
    assert lines[-1] == f"etl: error: stopped between runs; the last output is in {out}"
    assert all(re.match(rf"{STAMP} etl: (INFO|DEBUG|WARNING): ", line) for line in lines[:-1]), lines
    assert any("step fetch-users: Fetch Users" in line for line in lines)
    assert "Traceback" not in stderr
    assert snapshot_files(out) == before and "summary.json" in before
    assert re.fullmatch(rf"Run started {STAMP}", schedule.stdout[0]), schedule.stdout
    assert schedule.stdout[1] == f"DigiCert ({MAPPINGS / 'digicert.yaml'}) -> {out}"  # then the summary
    assert re.fullmatch(rf"Next run at {STAMP} \(in \d+s\)", schedule.stdout[-1]), schedule.stdout


def test_a_stop_before_any_run_wrote_output_says_so(tmp_path):
    out = tmp_path / "out"
    with LocalApi() as api:
        digicert.install(api, api_key="rotated-key-0123456789")  # every run's key is refused
        schedule = Schedule(api, out, tmp_path)
        try:
            schedule.wait_for_the_wait()
            code, stderr = schedule.stop(signal.SIGTERM)
        finally:
            schedule.kill()
    assert code == 130, stderr
    lines = stderr.splitlines()
    assert re.fullmatch(rf"{STAMP} etl: error: authentication failed: .*", lines[-2]), lines  # the run's error, timed
    assert lines[-1] == f"etl: error: stopped between runs; no run has written {out} yet"
    assert not out.exists()
