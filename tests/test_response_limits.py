"""Every response is bounded, against real local servers: an attempt has the source's `timeout`
in all (a server trickling its headers or its body a byte at a time fails the attempt, which is
retried like a timeout), and a body has at most `max_response_bytes` once decompressed (gzip and
deflate bombs are refused with a clear error, not a MemoryError). The OAuth2 token request too.

Nothing sleeps long: source timeouts are 0.5 s, trickles stop when the client hangs up, and
the retry backoff is recorded, not waited (the `sleeps` fixture).
"""

from __future__ import annotations

import gzip
import time
import zlib

import pytest

from engine.http import clock as http_clock
from engine.http.transfer import DEFAULT_MAX_RESPONSE_BYTES
from engine.pipeline.compile import compile_file
from tests.fakes.paging import item_ids, item_mapping, step_status, write_mapping
from tests.fakes.server import Response, Trickle, TricklingApi
from tests.graphtools import read_output

BOUND = 8.0  # seconds of wall time any run here may take (generous: a noisy 2-core machine)
ITEMS = [{"id": i, "name": f"item {i}"} for i in range(1, 4)]
SOURCE = {"timeout": 0.5, "retry": {"max_attempts": 2, "initial_delay": 0.1, "max_delay": 1}}
BODY = {"items": ITEMS, "padding": "x" * 200}  # long enough to trickle for 10 s at 0.05 s a byte


@pytest.fixture
def api():
    with TricklingApi() as server:
        server.route("GET", "/items", lambda request: Response(200, BODY))
        yield server


def run(etl, tmp_path, url, source=None, *extra):
    data = item_mapping(None, source={**SOURCE, **(source or {})})
    path = write_mapping(tmp_path / "example.yaml", data)
    started = time.monotonic()
    result = etl("run", path, "--base-url", url, "--output", tmp_path / "out", *extra)
    elapsed = time.monotonic() - started
    assert elapsed < BOUND, f"the run took {elapsed:.1f}s"
    return result


def item_requests(api) -> int:
    return sum(1 for r in api.log if r.path == "/items")


# -- a deadline per attempt ------------------------------------------------------------------------


@pytest.mark.parametrize("head", [False, True], ids=["body", "headers"])
def test_a_trickle_fails_the_attempt_after_the_timeout_and_is_retried(etl, api, tmp_path, sleeps, head):
    # 0.05 s between bytes: no single read ever waits 0.5 s, but the whole answer would take 10 s.
    api.fail_next("/items", Trickle(200, BODY, interval=0.05, head=head))
    result = run(etl, tmp_path, api.url)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert item_ids(read_output(tmp_path / "out")) == [1, 2, 3]
    assert item_requests(api) == 2 and len(sleeps) == 1  # one timeout, one retry


@pytest.mark.parametrize("head", [False, True], ids=["body", "headers"])
def test_a_server_that_always_trickles_fails_the_step_in_bounded_time(etl, api, tmp_path, sleeps, head):
    api.fail_next("/items", *[Trickle(200, BODY, interval=0.05, head=head)] * 2)
    started = time.monotonic()
    result = run(etl, tmp_path, api.url, None, "-v")
    elapsed = time.monotonic() - started
    text = result.stdout + result.stderr
    assert result.exit_code == 1, text
    assert f"GET {api.url}/items failed after 2 attempts: timed out (no complete response within 0.5s)" in text
    assert step_status(read_output(tmp_path / "out"), "fetch-items") == "failure"
    assert item_requests(api) == 2 and len(sleeps) == 1
    assert elapsed < 5  # two attempts of 0.5 s (and the run), not 2 x 10 s of trickle


def test_the_deadline_runs_on_the_deadline_clock(etl, api, tmp_path, sleeps, monkeypatch):
    """clock.deadline is what the deadline reads: a test can end one without waiting."""
    calls = iter(range(10**6))
    monkeypatch.setattr(http_clock, "deadline", lambda: float(next(calls) * 1000))  # 1000 s per look
    result = run(etl, tmp_path, api.url, {"timeout": 30})
    text = result.stdout + result.stderr
    assert result.exit_code == 1, text
    assert "timed out" in text and "no complete response within 30s" in text
    assert len(sleeps) == 1


def test_a_slow_but_steady_response_within_the_timeout_is_fine(etl, api, tmp_path, sleeps):
    small = {"items": ITEMS[:1]}
    api.fail_next("/items", Trickle(200, small, interval=0.005))  # ~30 bytes: 0.15 s in all
    result = run(etl, tmp_path, api.url, {"timeout": 5})
    assert result.exit_code == 0, result.stdout + result.stderr
    assert item_ids(read_output(tmp_path / "out")) == [1]
    assert sleeps == []


# -- a size limit ---------------------------------------------------------------------------------


def bomb(encoding: str, size: int) -> bytes:
    """A JSON document of ``size`` bytes (mostly spaces), compressed to a few kilobytes."""
    document = b'{"items": []' + b" " * size + b"}"
    if encoding == "gzip":
        return gzip.compress(document, compresslevel=9)
    return zlib.compress(document, 9)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_decompression_bomb_is_refused_clearly(etl, api, tmp_path, sleeps, encoding):
    payload = bomb(encoding, 50 * 1024 * 1024)  # 50 MiB decoded
    assert len(payload) < 200 * 1024
    api.fail_next("/items", Response(200, payload, headers={"Content-Encoding": encoding}))
    result = run(etl, tmp_path, api.url, {"max_response_bytes": 1_000_000})
    text = result.stdout + result.stderr
    assert result.exit_code == 1, text
    assert f"GET {api.url}/items" in text
    assert "more than the limit of 1000000 bytes (decoded)" in text
    assert "sources.api.max_response_bytes" in text
    assert "MemoryError" not in text and "internal error" not in text
    assert item_requests(api) == 1 and sleeps == []  # not retried: it would only come again


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_response_within_the_limit_is_decoded(etl, api, tmp_path, encoding):
    payload = bomb(encoding, 500_000)
    payload = gzip.compress(b'{"items": [{"id": 7, "name": "seven"}]}') if encoding == "gzip" else payload
    api.fail_next("/items", Response(200, payload, headers={"Content-Encoding": encoding}))
    result = run(etl, tmp_path, api.url, {"max_response_bytes": 1_000_000})
    assert result.exit_code == 0, result.stdout + result.stderr
    assert item_ids(read_output(tmp_path / "out")) == ([7] if encoding == "gzip" else [])


def test_a_plain_body_over_the_limit_is_refused_by_its_length(etl, api, tmp_path, sleeps):
    api.fail_next("/items", Response(200, {"items": ITEMS, "padding": "x" * 5000}))
    result = run(etl, tmp_path, api.url, {"max_response_bytes": 1000})
    text = result.stdout + result.stderr
    assert result.exit_code == 1, text
    assert "the response body declares" in text and "more than the limit of 1000 bytes" in text
    assert sleeps == []


def test_the_default_limit_is_generous(tmp_path):
    plan = compile_file(write_mapping(tmp_path / "m.yaml", item_mapping(None)))
    assert plan.sources[0].max_response_bytes == DEFAULT_MAX_RESPONSE_BYTES == 256 * 1024 * 1024


@pytest.mark.parametrize("value", [0, -5, "big", 1.5])
def test_max_response_bytes_must_be_a_positive_whole_number(etl, tmp_path, value):
    path = write_mapping(tmp_path / "m.yaml", item_mapping(None, source={"max_response_bytes": value}))
    result = etl("validate", path)
    assert result.exit_code == 3, result.stdout + result.stderr
    assert "max_response_bytes" in result.stderr


# -- the OAuth2 token request -----------------------------------------------------------------------

CLIENT_SECRET = "limits-client-secret-4f0c"
OAUTH = {
    "auth": {
        "kind": "oauth2_client_credentials",
        "token_url": "/oauth/token",
        "client_id": "limits-client",
        "client_secret": "{{ config.clientSecret }}",
    }
}


def oauth_run(etl, tmp_path, api, source):
    data = item_mapping(None, source={**SOURCE, **OAUTH, **source}, config={"clientSecret": {"secret": True}})
    path = write_mapping(tmp_path / "example.yaml", data)
    started = time.monotonic()
    result = etl(
        "run", path, "--base-url", api.url, "--output", tmp_path / "out", "--config", f"clientSecret={CLIENT_SECRET}"
    )
    assert time.monotonic() - started < BOUND
    return result


def test_a_trickling_token_endpoint_is_an_authentication_error_in_bounded_time(etl, tmp_path, sleeps):
    with TricklingApi() as api:
        api.route("POST", "/oauth/token", lambda r: Trickle(200, {"access_token": "t" * 100}, interval=0.05))
        result = oauth_run(etl, tmp_path, api, {})
        text = result.stdout + result.stderr
        assert result.exit_code == 5, text
        assert f"authentication failed: POST {api.url}/oauth/token failed after 2 attempts: timed out" in text
        assert [r.path for r in api.log] == ["/oauth/token"] * 2
        assert CLIENT_SECRET not in text


def test_a_token_response_bomb_is_refused(etl, tmp_path, sleeps):
    payload = bomb("gzip", 20 * 1024 * 1024)
    with TricklingApi() as api:
        api.route("POST", "/oauth/token", lambda r: Response(200, payload, headers={"Content-Encoding": "gzip"}))
        result = oauth_run(etl, tmp_path, api, {"max_response_bytes": 100_000})
        text = result.stdout + result.stderr
        assert result.exit_code == 5, text
        assert "authentication failed" in text and "more than the limit of 100000 bytes (decoded)" in text
        assert [r.path for r in api.log] == ["/oauth/token"] and sleeps == []
        assert CLIENT_SECRET not in text
