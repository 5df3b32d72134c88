"""Client-side request budgets (`rate_limits` on a source), checked deterministically on a
fake clock: `engine.http.clock.sleep` and `engine.http.clock.monotonic` are replaced by a FakeClock
that only moves when the engine sleeps (or the server says a request took time). The local
server records the clock at every request it receives, and the tests check the server never
saw more than `requests` in any window of `seconds`, and that the engine waited no longer
than a sliding window needs."""

from __future__ import annotations

import pytest

from engine.http import clock as http_clock
from tests.fakes.paging import (
    FakeClock,
    PagingApi,
    item_ids,
    item_mapping,
    partial_types,
    tags_step,
    write_mapping,
)
from tests.fakes.server import Response
from tests.graphtools import read_output

EPSILON = 1e-6


@pytest.fixture
def clock(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(http_clock, "sleep", clock.sleep)
    monkeypatch.setattr(http_clock, "monotonic", clock.monotonic, raising=False)
    return clock


@pytest.fixture
def api(clock):
    with PagingApi("offset", 23) as server:
        server.clock = clock
        yield server


def busiest_window(times: list[float], seconds: float) -> int:
    """The most requests in any window [t, t + seconds)."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= seconds - EPSILON:
            start += 1
        best = max(best, end - start + 1)
    return best


def sliding_schedule(count: int, budgets: list[tuple[int, float]], step=lambda i: 0.0) -> list[float]:
    """When a greedy sliding-window client sends each of ``count`` requests, each taking ``step(i)``."""
    sent: list[float] = []
    now = 0.0
    for i in range(count):
        for allowed, seconds in budgets:
            if len(sent) >= allowed:
                now = max(now, sent[-allowed] + seconds)
        sent.append(now)
        now += step(i)
    return sent


def check_budgets(seen: list[float], budgets: list[tuple[int, float]], count: int, step=lambda i: 0.0) -> None:
    assert len(seen) == count
    for allowed, seconds in budgets:
        assert busiest_window(seen, seconds) <= allowed, (allowed, seconds, seen)
    ideal = sliding_schedule(count, budgets, step)
    assert seen[-1] <= ideal[-1] + 1.0, f"waited longer than needed: {seen} vs {ideal}"


def run(etl, tmp_path, api, limits, pagination=None, **kwargs):
    data = item_mapping(
        pagination or {"kind": "offset", "limit": 2, "total": "meta.total"},
        source={"rate_limits": [{"requests": r, "seconds": s} for r, s in limits]},
        **kwargs,
    )
    result = etl("run", write_mapping(tmp_path / "m.yaml", data), "--base-url", api.url, "--output", tmp_path / "out")
    return result


def test_helpers():
    assert busiest_window([0, 0, 0, 10, 10, 10], 10) == 3
    assert busiest_window([0, 6, 6, 10, 10, 10], 10) == 5  # what a fixed window would let through
    assert sliding_schedule(7, [(3, 10)]) == [0, 0, 0, 10, 10, 10, 20]
    assert sliding_schedule(5, [(3, 10)], lambda i: 6 if i == 0 else 0) == [0, 6, 6, 10, 16]


def test_one_budget(etl, api, clock, tmp_path):
    result = run(etl, tmp_path, api, [(3, 10)])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert item_ids(read_output(tmp_path / "out")) == list(range(1, 24))
    check_budgets(api.seen_at, [(3, 10)], 12)
    assert api.seen_at[-1] >= 30  # 12 requests, 3 per 10 s: the last cannot come before 30 s
    assert clock.sleeps and all(s > 0 for s in clock.sleeps)


def test_two_budgets(etl, api, clock, tmp_path):
    budgets = [(5, 10), (8, 100)]
    result = run(etl, tmp_path, api, budgets)
    assert result.exit_code == 0, result.stdout + result.stderr
    check_budgets(api.seen_at, budgets, 12)
    assert api.seen_at[-1] >= 100  # the ninth request waits for the 100 s window


def test_the_window_slides(etl, api, clock, tmp_path):
    # The first request takes 6 s; a fixed window starting at 0 would let requests 4-6 go
    # at t=10, making 5 requests in [6, 16).
    api.clock_step = lambda i: 6.0 if i == 0 else 0.0
    result = run(etl, tmp_path, api, [(3, 10)])
    assert result.exit_code == 0, result.stdout + result.stderr
    check_budgets(api.seen_at, [(3, 10)], 12, api.clock_step)


def test_no_waiting_when_requests_are_slow_anyway(etl, api, clock, tmp_path):
    api.clock_step = 5.0  # every request takes 5 s: 2 per 10 s is never exceeded
    result = run(etl, tmp_path, api, [(2, 10)])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert api.seen_at == [5.0 * i for i in range(12)]
    assert [s for s in clock.sleeps if s > 0] == []


def test_no_budget_no_waiting(etl, api, clock, tmp_path):
    data = item_mapping({"kind": "offset", "limit": 2, "total": "meta.total"})
    result = etl("run", write_mapping(tmp_path / "m.yaml", data), "--base-url", api.url, "--output", tmp_path / "out")
    assert result.exit_code == 0
    assert api.seen_at == [0.0] * 12 and clock.sleeps == []


def test_retries_count_against_the_budget(etl, api, clock, tmp_path):
    # Retry-After everywhere, so the schedule has no jitter.
    busy = Response(503, {"message": "busy"}, headers={"Retry-After": "2"})
    api.fail_request({"offset": "4"}, busy, busy)
    api.fail_request({"offset": "10"}, Response(429, {"message": "slow"}, headers={"Retry-After": "1"}))
    result = run(etl, tmp_path, api, [(3, 10)])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert item_ids(read_output(tmp_path / "out")) == list(range(1, 24))
    assert len(api.seen_at) == 15
    assert busiest_window(api.seen_at, 10) <= 3, api.seen_at
    assert 2.0 in clock.sleeps and 1.0 in clock.sleeps


@pytest.mark.parametrize("duration", [0.293, 0.947, 1.351])
def test_fractional_request_durations(etl, api, clock, tmp_path, duration):
    # The first request takes a fractional time, so the window edges are sums of floats:
    # the budget must hold however they round.
    api.clock_step = lambda i: duration if i == 0 else 0.0
    result = run(etl, tmp_path, api, [(3, 10)])
    assert result.exit_code == 0, result.stdout + result.stderr
    check_budgets(api.seen_at, [(3, 10)], 12, api.clock_step)


def test_the_budget_is_shared_by_the_steps_of_a_source(etl, api, clock, tmp_path):
    second = {
        "id": "fetch-more",
        "name": "Fetch more",
        "request": {"path": "/items"},
        "pagination": {"kind": "offset", "limit": 4, "total": "meta.total"},
        "records": "items",
        "entities": [
            {
                "type": "example_more",
                "class": "Record",
                "key": "example_more:{{ record.id }}",
                "properties": {"name": "name"},
            }
        ],
    }
    result = run(etl, tmp_path, api, [(4, 10)], steps_after=[second])
    assert result.exit_code == 0, result.stdout + result.stderr
    check_budgets(api.seen_at, [(4, 10)], 12 + 6)


def test_concurrent_fan_out_respects_the_budget(etl, clock, tmp_path):
    with PagingApi("none", 12) as api:
        api.clock = clock
        data = item_mapping(None, source={"rate_limits": [{"requests": 3, "seconds": 10}]}, steps_after=[tags_step()])
        result = etl(
            "run",
            write_mapping(tmp_path / "m.yaml", data),
            "--base-url",
            api.url,
            "--output",
            tmp_path / "out",
            "--concurrency",
            "6",
        )
        assert result.exit_code == 0, result.stdout + result.stderr
        output = read_output(tmp_path / "out")
        assert len([e for e in output["entities"] if e["_type"] == "example_tag"]) == 24
        assert partial_types(output) == []
        # 13 requests at 3 per 10 s: whatever the threads did, the last cannot come before 40 s.
        # (The clock the server reads may run ahead of a thread's send, so only this bound is exact.)
        assert len(api.seen_at) == 13
        assert max(api.seen_at) >= 40


def test_rate_limits_are_validated(etl, tmp_path):
    data = item_mapping(None, source={"rate_limits": [{"requests": 0, "seconds": 10}]})
    result = etl("validate", write_mapping(tmp_path / "m.yaml", data))
    assert result.exit_code == 3
    assert "rate_limits" in result.stderr
