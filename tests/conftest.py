import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.http import clock as http_clock

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ROOT / "mappings"
CASSETTES = ROOT / "cassettes"
SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE_SNAPSHOTS = os.environ.get("ETL_UPDATE_SNAPSHOTS") == "1"

VENDOR_ENV = (
    "DIGICERT_API_KEY",
    "DIGICERT_ACCOUNT_NAME",
    "DIGICERT_TAG_ACCOUNT_NAME",
    "DIGICERT_BASE_URL",
    "DIGICERT_PAGE_SIZE",
    "NOWSECURE_API_TOKEN",
)


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No vendor credentials from the developer's shell, no .env from the repo, no real sleeping."""
    for name in VENDOR_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    sleeps: list[float] = []
    monkeypatch.setattr(http_clock, "sleep", sleeps.append)
    return sleeps


@pytest.fixture
def sleeps(isolated):
    """The delays the engine asked to sleep for (it does not really sleep in tests)."""
    return isolated


@pytest.fixture
def etl():
    """Run the CLI in-process: etl("run", ...) -> click Result with .exit_code, .stdout, .stderr."""
    runner = CliRunner()

    def invoke(*args, env=None):
        return runner.invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)

    return invoke
