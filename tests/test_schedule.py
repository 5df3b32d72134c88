"""Scheduled runs: --keep keeps a history and reports what changed, --alerts raises alerts on
each change, --every repeats the run and survives a failed one."""

from __future__ import annotations

import json

import pytest

from engine.tools.schedule import history_dir, parse_interval
from tests.conftest import MAPPINGS, ROOT
from tests.fakes import digicert
from tests.fakes.server import LocalApi
from tests.graphtools import read_output

MAPPING = MAPPINGS / "digicert.yaml"
RULES = ROOT / "rules" / "digicert.yaml"


@pytest.mark.parametrize(
    "text, seconds", [("90s", 90), ("30m", 1800), ("6h", 21600), ("1d", 86400), ("1h30m", 5400), ("0.5s", 0.5)]
)
def test_intervals(text, seconds):
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "6", "h", "6x", "-1h", "0s", "1h 30"])
def test_bad_intervals(text):
    with pytest.raises(ValueError):
        parse_interval(text)


def run(etl, api, out, *extra, env=None):
    return etl(
        "run",
        MAPPING,
        "--base-url",
        f"{api.url}/services/v2",
        "--output",
        out,
        *extra,
        env={"DIGICERT_API_KEY": digicert.API_KEY, **(env or {})},
    )


def test_keep_records_history_and_reports_changes_and_alerts(etl, tmp_path):
    out = tmp_path / "out"
    with LocalApi() as api:
        data = digicert.install(api)
        first = run(etl, api, out, "--keep", "2", "--alerts", RULES)
        assert first.exit_code == 0, first.stderr
        assert "Changes since" not in first.stdout  # nothing to compare with yet
        promoted = dict(digicert.USERS[1], access_roles=[{"id": 1, "name": "Administrator"}])
        data.users = [promoted] + data.users[2:] + [dict(digicert.USERS[0], id=2000099, email="new@example.com")]
        second = run(etl, api, out, "--keep", "2", "--alerts", RULES)
        third = run(etl, api, out, "--keep", "2", "--alerts", RULES)
    assert second.exit_code == 0, second.stderr
    entries = sorted(history_dir(out).iterdir())
    assert len(entries) == 2  # the oldest of three was pruned
    assert "Changes since" in second.stdout
    assert "entities 1 added, 1 removed, 1 changed" in second.stdout
    assert "[user-became-admin] changed digicert_user digicert_user:1234567:2000002" in second.stdout
    assert "[new-admin-user] added digicert_user digicert_user:1234567:2000099" in second.stdout
    assert "[admin-user-removed] removed digicert_user digicert_user:1234567:2000001" in second.stdout
    assert "entities 0 added, 0 removed, 0 changed" in third.stdout and "No alerts." in third.stdout
    latest = entries[-1]
    assert json.loads((latest / "alerts.json").read_text()) == []
    assert json.loads((latest / "diff.json").read_text())["entities"] == {"added": [], "removed": [], "changed": []}
    # The history entry is the output as it was written (hard links, not a second copy).
    assert read_output(latest)["entities"] == read_output(out)["entities"]


def test_every_repeats_and_survives_a_failed_run(etl, tmp_path):
    out = tmp_path / "out"
    with LocalApi() as api:
        digicert.install(api, api_key="rotated-key-0123456789")  # the first run's key is refused
        result = run(
            etl, api, out, "--every", "0.2s", "--runs", "2", "--keep", "3", env={"DIGICERT_API_KEY": digicert.API_KEY}
        )
    assert result.exit_code == 5  # the last run's code
    assert result.stderr.count("authentication failed") == 2  # reported, and the schedule went on
    assert not out.exists()


def test_every_runs_the_mapping_again(etl, tmp_path):
    out = tmp_path / "out"
    with LocalApi() as api:
        digicert.install(api)
        result = run(etl, api, out, "--every", "0.1s", "--runs", "3", "--keep", "5")
        requests = [r.path for r in api.log].count("/services/v2/order/certificate")
    assert result.exit_code == 0, result.stderr
    assert requests == 3
    assert len(list(history_dir(out).iterdir())) == 3
    assert result.stdout.count("Changes since") == 2


def test_schedule_options_are_checked(etl, tmp_path):
    result = etl("run", MAPPING, "--alerts", RULES, "--offline")
    assert result.exit_code == 2 and "--alerts needs --keep N" in result.stderr
    result = etl("run", MAPPING, "--every", "soon", "--offline")
    assert result.exit_code == 2 and "not an interval like 30m" in result.stderr
    result = etl("run", MAPPING, "--runs", "2", "--offline")
    assert result.exit_code == 2 and "--runs goes with --every" in result.stderr
