"""Scheduled runs: a history of outputs, and what changed (diff, alerts) after each run.

``etl run MAPPING --output DIR --keep N`` copies each finished output to
``DIR.history/<UTC time>/`` (hard links: no second copy of the data), keeps the N newest,
and compares the new one with the one before: a diff summary, and the alerts of
``--alerts RULES``, printed and saved next to it as ``diff.json`` and ``alerts.json``.
``--every 6h`` repeats the run on that interval (cron or a systemd timer can do the same
with ``--keep`` alone; see docs/monitoring.md); Ctrl-C or SIGTERM while it waits for the next
run ends the schedule (:func:`wait_for_next_run`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from ..errors import RunInterrupted
from ..pipeline.progress import duration, utc_timestamp
from ..signals import terminate_as_interrupt
from .alerts import RuleSet, evaluate_rules, format_alerts
from .diff import diff_outputs

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_INTERVAL = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_interval(text: str) -> float:
    """'90s', '30m', '6h', '1d', '1h30m' -> seconds."""
    compact = text.replace(" ", "").lower()
    parts = _INTERVAL.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"{text!r} is not an interval like 30m, 6h, 1d or 1h30m")
    seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive interval")
    return seconds


def wait_for_next_run(seconds: float, output: Path, announce: Callable[[str], None] | None = None) -> None:
    """Wait ``seconds`` for a schedule's next run, first telling ``announce`` when it will be.
    Ctrl-C or SIGTERM meanwhile ends the schedule: :class:`RunInterrupted` (exit 130), saying
    where the last run's output is (nothing is being written while waiting)."""
    try:
        with terminate_as_interrupt():
            if announce is not None:
                announce(f"Next run at {utc_timestamp(time.time() + seconds)} (in {duration(seconds)})")
            time.sleep(seconds)
    except KeyboardInterrupt:
        raise RunInterrupted(stopped_between_runs(output)) from None


def stopped_between_runs(output: Path) -> str:
    where = f"the last output is in {output}" if output.exists() else f"no run has written {output} yet"
    return f"stopped between runs; {where}"


def history_dir(output: Path) -> Path:
    return output.with_name(output.name + ".history")


def record(output: Path, keep: int, when: datetime | None = None) -> tuple[Path | None, Path]:
    """Add ``output`` to its history; keep the ``keep`` newest. Returns (previous, new) entries."""
    history = history_dir(output)
    history.mkdir(parents=True, exist_ok=True)
    entries = sorted(p for p in history.iterdir() if p.is_dir())
    stamp = (when or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    entry = history / stamp
    shutil.copytree(output, entry, copy_function=_link_or_copy)
    previous = entries[-1] if entries else None
    for old in (entries + [entry])[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return previous, entry


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)  # each run writes new files: sharing them is safe
    except OSError:
        shutil.copy2(source, destination)


def report_changes(previous: Path, current: Path, rules: RuleSet | None, now: int | None) -> str:
    """What changed from ``previous`` to ``current``: saved as diff.json (and alerts.json), returned as text."""
    diff = diff_outputs(previous, current)
    (current / "diff.json").write_text(json.dumps(diff.to_json(), indent=2) + "\n")
    lines = [
        f"Changes since {previous.name}: "
        + "; ".join(
            f"{title} {len(part.added)} added, {len(part.removed)} removed, {len(part.changed)} changed"
            for title, part in (("entities", diff.entities), ("relationships", diff.relationships))
        )
    ]
    if rules is not None:
        report = evaluate_rules(rules, previous, current, now=now)
        (current / "alerts.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
        lines.append(format_alerts(report))
        lines.extend(f"warning: {w}" for w in report.warnings)
        lines.extend(f"error: {e}" for e in report.errors)
    return "\n".join(lines)
