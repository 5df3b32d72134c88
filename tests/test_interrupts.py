"""Ctrl-C and SIGTERM stop a real `etl run` process promptly even while a background thread is
blocked in a read that never ends: the prefetch of a step's next page, or a fan-out worker.
The process exits 130 within seconds (the server would hold its answer for a minute and the
source's timeout is two), and the previous output is left byte for byte as it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.paging import (
    ACCOUNT_STEP,
    HeldResponse,
    PagingApi,
    ignore_disconnects,
    item_mapping,
    make_items,
    tags_step,
    write_mapping,
)

ROOT = Path(__file__).resolve().parents[1]
HOLD = 60.0  # seconds the server would keep a held response
PATIENCE = 120  # the source's timeout: a read would block for this long
BOUND = 10.0  # seconds from the signal to the exit, generously (a noisy 2-core machine)
SOURCE = {"timeout": PATIENCE, "retry": {"max_attempts": 1}}
SIGNALS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]


def snapshot_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class Held:
    """Responses held back for a test; all released when it ends (the server's threads end too)."""

    def __init__(self) -> None:
        self.responses: list[HeldResponse] = []

    def __call__(self, status: int = 200, body=None) -> HeldResponse:
        response = HeldResponse(status, body, hold=HOLD)
        self.responses.append(response)
        return response

    def release(self) -> None:
        for response in self.responses:
            response.release.set()


@pytest.fixture
def held() -> Iterator[Held]:
    responses = Held()
    yield responses
    responses.release()


def interrupt(
    mapping: Path, api: PagingApi, out: Path, response: HeldResponse, signum: int, tmp_path: Path, *extra: str
) -> tuple[int, str, float]:
    """Start `etl run` in a process, wait until ``response`` holds one of its requests (and a
    moment more, for the main thread to wait on it), send ``signum``; (exit code, stderr, seconds
    from the signal to the exit)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "run", str(mapping), "--base-url", api.url, "--output", str(out), *extra],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert response.arrived.wait(30), "the run never made the request that hangs"
        time.sleep(0.5)
        assert process.poll() is None, process.communicate()
        process.send_signal(signum)
        sent = time.monotonic()
        _, stderr = process.communicate(timeout=30)
        return process.returncode, stderr, time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def assert_stopped(code: int, stderr: str, elapsed: float, out: Path, before: dict, tmp_path: Path) -> None:
    assert code == 130, stderr
    assert stderr.splitlines() == ["etl: error: interrupted; the previous output was left untouched"], stderr
    assert elapsed < BOUND, f"the run took {elapsed:.1f}s to stop"
    assert snapshot_files(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


@pytest.mark.parametrize("signum", SIGNALS)
def test_a_prefetch_blocked_in_a_read_does_not_hold_up_the_stop(etl, tmp_path, held, signum):
    with PagingApi("offset", 23) as api:
        ignore_disconnects(api)
        data = item_mapping(
            {"kind": "offset", "limit": 5, "total": "meta.total"}, source=SOURCE, steps_after=[ACCOUNT_STEP]
        )
        mapping = write_mapping(tmp_path / "example.yaml", data)
        out = tmp_path / "out"
        assert etl("run", mapping, "--base-url", api.url, "--output", out).exit_code == 0
        before = snapshot_files(out)
        # The third page never comes: it is prefetched while the second one is built, and the
        # main thread then waits for it.
        hanging = held(200, {"items": make_items(15)[10:], "meta": {"total": 23}})
        api.fail_request({"offset": "10"}, hanging)
        code, stderr, elapsed = interrupt(mapping, api, out, hanging, signum, tmp_path)
    assert_stopped(code, stderr, elapsed, out, before, tmp_path)


@pytest.mark.parametrize("signum", SIGNALS)
def test_a_fan_out_worker_blocked_in_a_read_does_not_hold_up_the_stop(etl, tmp_path, held, signum):
    with PagingApi("none", 6) as api:
        ignore_disconnects(api)
        mapping = write_mapping(tmp_path / "example.yaml", item_mapping(None, source=SOURCE, steps_after=[tags_step()]))
        out = tmp_path / "out"
        assert etl("run", mapping, "--base-url", api.url, "--output", out).exit_code == 0
        before = snapshot_files(out)
        # Item 2's tags never come (the main thread waits for them, in order); item 5's neither
        # (a second worker blocked too).
        hanging = held(200, [{"id": "2-a", "name": "tag a of item 2"}])
        api.fail_next("/items/2/tags", hanging)
        api.fail_next("/items/5/tags", held(200, []))
        code, stderr, elapsed = interrupt(mapping, api, out, hanging, signum, tmp_path)
    assert_stopped(code, stderr, elapsed, out, before, tmp_path)


def test_a_fan_out_with_one_worker_still_stops(etl, tmp_path, held):
    """--concurrency 1: the child request runs on the main thread (the plain case)."""
    with PagingApi("none", 3) as api:
        ignore_disconnects(api)
        mapping = write_mapping(tmp_path / "example.yaml", item_mapping(None, source=SOURCE, steps_after=[tags_step()]))
        out = tmp_path / "out"
        assert etl("run", mapping, "--base-url", api.url, "--output", out).exit_code == 0
        before = snapshot_files(out)
        hanging = held(200, [])
        api.fail_next("/items/2/tags", hanging)
        code, stderr, elapsed = interrupt(mapping, api, out, hanging, signal.SIGTERM, tmp_path, "--concurrency", "1")
    assert_stopped(code, stderr, elapsed, out, before, tmp_path)
