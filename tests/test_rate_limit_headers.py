"""Rate limits the API announces (`rate_limit_headers` on a source), against a local API that
counts requests per fixed window of a fake clock and refuses (429) any beyond its quota
(tests/fakes/quota.py). The engine must never be refused: it waits, once what is left is down
to the floor, exactly until the announced reset - whatever the header style, with concurrent
fan-out threads, together with `rate_limits` and Retry-After - and it shrugs off headers it
cannot read. `engine.http.clock` and the wall clock epoch resets are measured against are
both the fake clock."""

from __future__ import annotations

import logging

import pytest

from engine.http import clock as http_clock
from engine.pipeline.ratelimit import HeaderLimits, read_announcement, reset_seconds
from tests.fakes.paging import EXAMPLES, FakeClock, item_ids, item_mapping, partial_types, tags_step, write_mapping
from tests.fakes.quota import EPOCH, STYLES, QuotaApi
from tests.graphtools import read_output
from tests.test_rate_limits import busiest_window

ALL = list(range(1, 24))


@pytest.fixture
def clock(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(http_clock, "sleep", clock.sleep)
    monkeypatch.setattr(http_clock, "monotonic", clock.monotonic, raising=False)
    monkeypatch.setattr(http_clock, "wall", lambda: EPOCH + clock.now)
    return clock


def run(etl, tmp_path, api, mapping, *extra):
    return etl("run", mapping, "--base-url", api.url, "--output", tmp_path / "out", *extra)


def mapping(tmp_path, headers=True, pagination=None, **kwargs):
    data = item_mapping(
        pagination or {"kind": "offset", "limit": 2, "total": "meta.total"},
        source={"rate_limit_headers": headers, "timeout": 30, **kwargs.pop("source", {})},
        **kwargs,
    )
    return write_mapping(tmp_path / "m.yaml", data)


def assert_complete(result, out):
    assert result.exit_code == 0, result.stdout + result.stderr
    output = read_output(out)
    assert item_ids(output) == ALL
    assert partial_types(output) == []


# -- the documented example -----------------------------------------------------------------------


def test_the_example_keeps_a_request_in_reserve_and_waits_for_each_reset(etl, clock, tmp_path):
    with QuotaApi("offset", 23, quota=4, window=10, clock=clock) as api:
        result = run(etl, tmp_path, api, EXAMPLES / "rate-limit-headers.yaml", "-v")
        assert_complete(result, tmp_path / "out")
        assert api.refused == 0
        # 12 pages, 4 a window with 1 kept in reserve: 3 a window, each window waited for exactly.
        assert api.seen_at == [0.0] * 3 + [10.0] * 3 + [20.0] * 3 + [30.0] * 3
        assert clock.sleeps == [10.0, 10.0, 10.0]
        assert "X-RateLimit-Remaining is down to 1 (floor 1); waiting 10.0s" in result.stderr


# -- every header style -----------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_every_header_style_is_kept_to_exactly(etl, clock, tmp_path, style):
    headers = True
    if style == "custom":
        headers = {"remaining": "X-Quota-Left", "reset": "X-Quota-Reset-Ms", "reset_format": "epoch_ms"}
    with QuotaApi("offset", 23, quota=5, window=10, clock=clock, style=style) as api:
        result = run(etl, tmp_path, api, mapping(tmp_path, headers))
        assert_complete(result, tmp_path / "out")
        assert api.refused == 0
        assert api.seen_at == [0.0] * 5 + [10.0] * 5 + [20.0] * 2
        assert clock.sleeps == [10.0, 10.0]


def test_without_rate_limit_headers_the_api_refuses_and_retry_after_catches_up(etl, clock, tmp_path):
    # The contrast: the same API, the headers not read. Retry-After still saves the run.
    with QuotaApi("offset", 23, quota=5, window=10, clock=clock) as api:
        result = run(etl, tmp_path, api, mapping(tmp_path, headers=False))
        assert_complete(result, tmp_path / "out")
        assert api.refused == 2


def test_a_refusal_is_waited_for_once_not_twice(etl, clock, tmp_path):
    # Another client spent this window: the first request is refused with Retry-After 10 and
    # the headers' reset in 10 s. The retry waits for Retry-After; the reset has come by then.
    with QuotaApi("offset", 23, quota=5, window=10, clock=clock) as api:
        api.used[0] = 5
        result = run(etl, tmp_path, api, mapping(tmp_path))
        assert_complete(result, tmp_path / "out")
        assert api.refused == 1
        assert clock.sleeps[0] == 10.0 and api.seen_at[:2] == [0.0, 10.0]
        assert api.busiest_window() <= 5


def test_announced_limits_and_budgets_are_both_kept(etl, clock, tmp_path):
    with QuotaApi("offset", 23, quota=4, window=10, clock=clock) as api:
        budgets = [{"requests": 2, "seconds": 3}]
        result = run(etl, tmp_path, api, mapping(tmp_path, source={"rate_limits": budgets}))
        assert_complete(result, tmp_path / "out")
        assert api.refused == 0
        assert busiest_window(api.seen_at, 10) <= 4
        assert busiest_window(api.seen_at, 3) <= 2


# -- fan-out -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["x-epoch", "ietf"])
def test_concurrent_fan_out_shares_the_announced_quota(etl, clock, tmp_path, style):
    with QuotaApi("none", 12, quota=5, window=10, clock=clock, style=style) as api:
        data = item_mapping(None, source={"rate_limit_headers": True, "timeout": 30}, steps_after=[tags_step()])
        result = run(etl, tmp_path, api, write_mapping(tmp_path / "m.yaml", data), "--concurrency", "6")
        assert result.exit_code == 0, result.stdout + result.stderr
        output = read_output(tmp_path / "out")
        assert len([e for e in output["entities"] if e["_type"] == "example_tag"]) == 24
        assert partial_types(output) == []
        # 13 requests, 5 per 10 s window, and none refused, whatever the threads did.
        assert api.refused == 0
        assert len(api.seen_at) == 13
        assert api.busiest_window() <= 5
        assert max(api.seen_at) >= 20


def test_concurrent_fan_out_without_an_announced_limit_probes_each_new_window(etl, clock, tmp_path):
    # No limit header: after a reset, one request learns what the new window allows.
    with QuotaApi("none", 12, quota=5, window=10, clock=clock, style="custom") as api:
        headers = {"remaining": "X-Quota-Left", "reset": "X-Quota-Reset-Ms"}
        data = item_mapping(None, source={"rate_limit_headers": headers, "timeout": 30}, steps_after=[tags_step()])
        result = run(etl, tmp_path, api, write_mapping(tmp_path / "m.yaml", data), "--concurrency", "6")
        assert result.exit_code == 0, result.stdout + result.stderr
        assert api.refused == 0 and len(api.seen_at) == 13 and api.busiest_window() <= 5


# -- what cannot be read or kept --------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        {"X-RateLimit-Remaining": "lots", "X-RateLimit-Reset": "soon"},
        {"X-RateLimit-Remaining": "-3", "X-RateLimit-Reset": "nan"},
        {"X-RateLimit-Remaining": "", "X-RateLimit-Limit": "1e999"},
        {"RateLimit": '"default";r=;t=x', "RateLimit-Policy": "q=?"},
        {"RateLimit": "limit=, remaining=many"},
    ],
)
def test_garbage_headers_are_ignored_with_a_debug_log(etl, clock, tmp_path, garbage):
    with QuotaApi("offset", 23, quota=100, window=10, clock=clock) as api:
        api.extra_headers = garbage
        result = run(etl, tmp_path, api, mapping(tmp_path), "-vv")
        assert_complete(result, tmp_path / "out")
        assert clock.sleeps == []
        assert "ignoring the rate limit header" in result.stderr


def test_a_reset_in_the_past_is_ignored(etl, clock, tmp_path):
    with QuotaApi("offset", 23, quota=100, window=10, clock=clock) as api:
        api.extra_headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(EPOCH - 60)}
        result = run(etl, tmp_path, api, mapping(tmp_path), "-vv")
        assert_complete(result, tmp_path / "out")
        assert clock.sleeps == []
        assert "its reset is past" in result.stderr


def test_a_reset_beyond_max_wait_with_nothing_left_fails_the_step_without_sending(etl, clock, tmp_path):
    with QuotaApi("offset", 23, quota=3, window=3600, clock=clock) as api:
        result = run(etl, tmp_path, api, mapping(tmp_path, {"max_wait": 60}))
        assert result.exit_code == 1, result.stdout + result.stderr
        assert len(api.log) == 3 and api.refused == 0  # the fourth request is never sent
        assert clock.sleeps == []
        assert (
            "source 'api': the API's rate limit is used up (X-RateLimit-Remaining) and resets only in 3600s, "
            "more than rate_limit_headers.max_wait (60s): not waiting that long. Run again later, or raise "
            "sources.api.rate_limit_headers.max_wait"
        ) in result.stdout


def test_a_reset_beyond_max_wait_spends_the_reserve_with_a_warning(etl, clock, tmp_path):
    with QuotaApi("offset", 23, quota=100, window=3600, clock=clock) as api:
        result = run(etl, tmp_path, api, mapping(tmp_path, {"floor": 95, "max_wait": 60}))
        assert_complete(result, tmp_path / "out")
        assert api.refused == 0 and clock.sleeps == []
        assert result.stderr.count("not waiting, using the requests kept in reserve") == 1


def test_the_block_is_validated(etl, tmp_path):
    bad = {"floor": -1, "reset_format": "fortnights", "remaining": "X Bad"}
    result = etl("validate", mapping(tmp_path, bad))
    assert result.exit_code == 3
    assert "rate_limit_headers" in result.stderr


# -- reading the headers ---------------------------------------------------------------------------------

NOW = float(EPOCH)


def announced(headers: dict, **settings):
    news = read_announcement(headers, HeaderLimits(**settings), NOW)
    return news.remaining, news.limit, news.reset


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({"X-RateLimit-Remaining": "7", "X-RateLimit-Limit": "60", "X-RateLimit-Reset": str(EPOCH + 30)}, (7, 60, 30)),
        ({"x-ratelimit-remaining": "7", "x-ratelimit-reset": "30"}, (7, None, 30)),
        ({"X-Rate-Limit-Remaining": "1", "X-Rate-Limit-Reset": str((EPOCH + 2) * 1000)}, (1, None, 2)),
        ({"RateLimit-Remaining": "0", "RateLimit-Reset": "12", "RateLimit-Limit": "10, 10;w=60"}, (0, 10, 12)),
        ({"RateLimit": '"default";r=50;t=30', "RateLimit-Policy": '"default";q=100;w=60'}, (50, 100, 30)),
        (
            {"RateLimit": '"burst";r=9;t=1, "day";r=2;t=3600', "RateLimit-Policy": '"burst";q=10;w=1, "day";q=50'},
            (2, 50, 3600),
        ),
        ({"RateLimit": "limit=100, remaining=50, reset=5"}, (50, 100, 5)),
        ({"RateLimit": '"default";r=4'}, (4, None, None)),
        ({"X-RateLimit-Remaining": "59, 999"}, (59, None, None)),
        ({"X-RateLimit-Remaining": "3", "X-RateLimit-Reset": "Tue, 02 Jan 2024 03:05:05 GMT"}, (3, None, 60)),
        ({"Content-Type": "application/json"}, (None, None, None)),
    ],
)
def test_reading_the_usual_headers(headers, expected):
    assert announced(headers) == expected


def test_named_headers_and_reset_formats():
    headers = {"X-Quota-Left": "4", "X-Quota-Reset": "90", "X-RateLimit-Remaining": "100"}
    assert announced(headers, remaining="X-Quota-Left", reset="X-Quota-Reset") == (4, None, 90)
    assert reset_seconds(str(EPOCH + 5), "epoch", NOW) == 5
    assert reset_seconds("1500000000", "seconds", NOW) == 1_500_000_000  # configured: not guessed
    assert reset_seconds(str((EPOCH + 5) * 1000), "auto", NOW) == 5
    with pytest.raises(ValueError):
        reset_seconds("Tue, 02 Jan 2024 03:05:05 GMT", "seconds", NOW)


def test_unreadable_values_are_left_out_and_logged(caplog):
    caplog.set_level(logging.DEBUG, logger="etl.http")
    assert announced({"X-RateLimit-Remaining": "many", "X-RateLimit-Reset": "30"}) == (None, None, 30)
    assert "ignoring the rate limit header X-RateLimit-Remaining: 'many'" in caplog.text
    assert announced({"RateLimit": "garbage;;;", "X-RateLimit-Remaining": "2"}) == (2, None, None)
