"""The fault matrix against a real local server (tests/fakes/paging.py): every fault either
recovers with the full graph or fails clearly, naming the URL, in bounded time. Also the
per-status rules (skip / partial / fail) and the one-line-per-request log of `etl run -v`.

Nothing really waits: the `sleeps` fixture records the delays the engine asks for. Real
delays stay at or under 1 s and the source timeout is 0.5 s.
"""

from __future__ import annotations

import re
import socket
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from tests.fakes.paging import (
    ACCOUNT_STEP,
    PagingApi,
    item_ids,
    item_mapping,
    partial_types,
    step_status,
    tags_step,
    write_mapping,
)
from tests.fakes.server import Response
from tests.graphtools import read_output

ALL = list(range(1, 24))
OFFSETS = ["0", "5", "10", "15", "20"]
BOUND = 10.0  # seconds of wall time any run here may take
SECRET = "fault-test-api-key-0451"

PAGINATION = {"kind": "offset", "limit": 5, "total": "meta.total"}
SOURCE = {"timeout": 0.5, "retry": {"max_attempts": 4, "initial_delay": 0.5, "max_delay": 4}}
HTML = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"


@pytest.fixture
def api():
    with PagingApi("offset", 23) as server:
        yield server


def run(etl, tmp_path, api, data=None, *extra, base_url=None):
    data = data or item_mapping(PAGINATION, source=SOURCE, steps_after=[ACCOUNT_STEP])
    path = write_mapping(tmp_path / "example.yaml", data)
    started = time.monotonic()
    result = etl("run", path, "--base-url", base_url or api.url, "--output", tmp_path / "out", *extra)
    assert time.monotonic() - started < BOUND, "the run took too long"
    return result


def page_url(api, offset: int) -> str:
    return f"{api.url}/items?offset={offset}&limit=5"


def offsets_seen(api) -> list[str]:
    return [r.query.get("offset") for r in api.data_log()]


def recovered(result, tmp_path) -> dict:
    text = result.stdout + result.stderr
    assert result.exit_code == 0, text
    output = read_output(tmp_path / "out")
    assert item_ids(output) == ALL
    assert partial_types(output) == []
    assert step_status(output, "fetch-account") == "success"
    return output


def failed_clearly(result, tmp_path, *, url: str, kept: list[int], says: str = "") -> str:
    """The item step failed with a message naming ``url``; the rest of the run went on."""
    text = result.stdout + result.stderr
    assert result.exit_code == 1, text
    lines = [line for line in text.splitlines() if url in line]
    assert lines, f"no message names {url}:\n{text}"
    if says:
        assert any(says in line for line in lines), text
    output = read_output(tmp_path / "out")
    assert item_ids(output) == kept
    assert step_status(output, "fetch-items") == "failure"
    assert "example_item" in partial_types(output)
    assert step_status(output, "fetch-account") == "success"
    return text


# -- recovering ------------------------------------------------------------------------------------


def test_429_with_retry_after(etl, api, tmp_path, sleeps):
    api.fail_request({"offset": "5"}, Response(429, {"message": "slow down"}, headers={"Retry-After": "7"}))
    recovered(run(etl, tmp_path, api), tmp_path)
    assert sleeps == [7.0]
    assert offsets_seen(api) == ["0", "5", "5", "10", "15", "20"]


def test_429_with_retry_after_as_an_http_date(etl, api, tmp_path, sleeps):
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    api.fail_request({"offset": "10"}, Response(429, {"message": "slow down"}, headers={"Retry-After": later}))
    recovered(run(etl, tmp_path, api), tmp_path)
    assert len(sleeps) == 1 and 27 <= sleeps[0] <= 30


def test_429_without_retry_after_backs_off(etl, api, tmp_path, sleeps):
    api.fail_request({"offset": "5"}, Response(429, {"message": "slow down"}), Response(429, {"message": "again"}))
    recovered(run(etl, tmp_path, api), tmp_path)
    # Exponential backoff with jitter: at most 0.5 s, then at most 1 s.
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 0.5 and 0 <= sleeps[1] <= 1.0
    assert offsets_seen(api) == ["0", "5", "5", "5", "10", "15", "20"]


def test_500_502_503_then_success(etl, api, tmp_path, sleeps):
    api.fail_request(
        {"offset": "10"},
        Response(500, {"message": "oops"}),
        Response(502, HTML, headers={"Content-Type": "text/html"}),
        Response(503, {"message": "busy"}),
    )
    recovered(run(etl, tmp_path, api), tmp_path)
    assert offsets_seen(api) == ["0", "5", "10", "10", "10", "10", "15", "20"]
    assert len(sleeps) == 3 and sleeps[0] <= 0.5 and sleeps[1] <= 1.0 and sleeps[2] <= 2.0


def test_dropped_connection_mid_body(etl, api, tmp_path, sleeps):
    page = {"items": api.items[5:10], "meta": {"total": 23}}
    api.fail_request({"offset": "5"}, Response(200, page, drop=True))
    recovered(run(etl, tmp_path, api), tmp_path)
    assert offsets_seen(api) == ["0", "5", "5", "10", "15", "20"]
    assert len(sleeps) == 1


def test_response_slower_than_the_timeout(etl, api, tmp_path, sleeps):
    api.fail_request({"offset": "15"}, Response(200, {"items": [], "meta": {"total": 23}}, delay=1.0))
    recovered(run(etl, tmp_path, api), tmp_path)
    assert offsets_seen(api) == ["0", "5", "10", "15", "15", "20"]
    assert len(sleeps) == 1


# -- failing clearly ---------------------------------------------------------------------------------


def test_retries_exhausted_on_an_html_error_page(etl, api, tmp_path, sleeps):
    api.fail_request({"offset": "5"}, *[Response(502, HTML, headers={"Content-Type": "text/html"})] * 4)
    text = failed_clearly(
        run(etl, tmp_path, api), tmp_path, url=page_url(api, 5), kept=[1, 2, 3, 4, 5], says="HTTP 502"
    )
    assert "Bad Gateway" in text and "(after 4 attempts)" in text
    assert offsets_seen(api) == ["0", "5", "5", "5", "5"]
    assert len(sleeps) == 3


def test_an_html_page_with_status_200(etl, api, tmp_path):
    maintenance = b"<html><body><h1>Down for maintenance</h1></body></html>"
    api.fail_request({"offset": "10"}, Response(200, maintenance, headers={"Content-Type": "text/html"}))
    text = failed_clearly(
        run(etl, tmp_path, api), tmp_path, url=page_url(api, 10), kept=list(range(1, 11)), says="not JSON"
    )
    assert "text/html" in text and "Down for maintenance" in text


def test_invalid_json(etl, api, tmp_path):
    api.fail_request({"offset": "5"}, Response(200, b'{"items": [{"id": 6, "name": "item 6"},'))
    text = failed_clearly(
        run(etl, tmp_path, api), tmp_path, url=page_url(api, 5), kept=[1, 2, 3, 4, 5], says="not JSON"
    )
    assert '{"items": [{"id": 6' in text  # the start of what came instead


def test_connection_dropped_on_every_attempt(etl, api, tmp_path, sleeps):
    page = {"items": api.items[5:10], "meta": {"total": 23}}
    api.fail_request({"offset": "5"}, *[Response(200, page, drop=True)] * 4)
    failed_clearly(
        run(etl, tmp_path, api), tmp_path, url=page_url(api, 5), kept=[1, 2, 3, 4, 5], says="after 4 attempts"
    )
    assert len(sleeps) == 3


def test_always_slower_than_the_timeout(etl, api, tmp_path, sleeps):
    slow = Response(200, {"items": [], "meta": {"total": 23}}, delay=1.0)
    api.fail_request({"offset": "5"}, slow, slow)
    data = item_mapping(
        PAGINATION, source={**SOURCE, "retry": {"max_attempts": 2, "initial_delay": 0.5}}, steps_after=[ACCOUNT_STEP]
    )
    started = time.monotonic()
    failed_clearly(
        run(etl, tmp_path, api, data), tmp_path, url=page_url(api, 5), kept=[1, 2, 3, 4, 5], says="timed out"
    )
    assert time.monotonic() - started < 4  # two 0.5 s timeouts, not the server's delays
    assert len(sleeps) == 1


def test_connection_refused(etl, tmp_path, sleeps):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = item_mapping(PAGINATION, source=SOURCE)
    result = run(etl, tmp_path, None, data, base_url=f"http://127.0.0.1:{port}")
    text = result.stdout + result.stderr
    assert result.exit_code == 1, text
    assert f"http://127.0.0.1:{port}/items?offset=0&limit=5 failed after 4 attempts" in text
    assert "refused" in text.lower()
    assert len(sleeps) == 3


def test_a_retry_after_too_long_fails_at_once(etl, api, tmp_path, sleeps):
    api.fail_request({"offset": "5"}, Response(429, {"message": "quota exhausted"}, headers={"Retry-After": "86400"}))
    text = failed_clearly(
        run(etl, tmp_path, api), tmp_path, url=page_url(api, 5), kept=[1, 2, 3, 4, 5], says="HTTP 429"
    )
    assert "Retry-After" in text and "quota exhausted" in text
    assert sleeps == []


def test_a_status_that_is_not_retried(etl, api, tmp_path, sleeps):
    api.fail_request({"offset": "5"}, Response(400, {"errors": [{"message": "offset out of range"}]}))
    failed_clearly(
        run(etl, tmp_path, api),
        tmp_path,
        url=page_url(api, 5),
        kept=[1, 2, 3, 4, 5],
        says="HTTP 400 Bad Request: offset out of range",
    )
    assert offsets_seen(api) == ["0", "5"]
    assert sleeps == []


def test_a_paginator_repeating_its_cursor_forever(etl, tmp_path, sleeps):
    with PagingApi("cursor", 23) as api:
        api.loop_back = (2, 2)  # from the page of after-10 on, the next cursor is always after-10
        data = item_mapping(
            {"kind": "cursor", "cursor": "next_cursor", "size_param": "limit", "size": 5},
            source=SOURCE,
            steps_after=[ACCOUNT_STEP],
        )
        result = run(etl, tmp_path, api, data)
        text = failed_clearly(result, tmp_path, url="after-10", kept=list(range(1, 16)), says="pagination loop")
        assert len(api.data_log()) == 3
        assert sleeps == []
        assert text.count("pagination loop") >= 1


def test_a_link_header_loop(etl, tmp_path, sleeps):
    with PagingApi("link_header", 23) as api:
        api.loop_back = (3, 1)  # page 4 says its next page is page 2
        data = item_mapping(
            {"kind": "link_header", "size_param": "per_page", "size": 5},
            records="@",
            source=SOURCE,
            steps_after=[ACCOUNT_STEP],
        )
        result = run(etl, tmp_path, api, data)
        failed_clearly(
            result, tmp_path, url=f"{api.url}/items?page=2&per_page=5", kept=list(range(1, 21)), says="pagination loop"
        )
        assert len(api.data_log()) == 4


def test_the_fake_stops_a_runaway_client(etl, tmp_path):
    """The guard of the fake itself: a paginator that never stops would fail, not hang the suite."""
    with PagingApi("cursor", 23) as api:
        api.request_limit = 2
        data = item_mapping(
            {"kind": "cursor", "cursor": "next_cursor", "size_param": "limit", "size": 5}, source=SOURCE
        )
        result = run(etl, tmp_path, api, data)
        assert result.exit_code == 1
        assert "HTTP 410" in result.stdout


# -- status rules ------------------------------------------------------------------------------------

TAGS = tags_step(
    relationships=[
        {
            "class": "HAS",
            "from": {"type": "example_item", "key": "example_item:{{ parent.itemId }}"},
            "to": "example_tag",
        }
    ]
)
OWNERS = {
    "id": "fetch-owners",
    "name": "Fetch owners",
    "depends_on": ["fetch-items"],
    "for_each": "example_item",
    "request": {"path": "/items/{{ parent.itemId }}/owners"},
    "entities": [
        {
            "resource": "Owner",
            "type": "example_owner",
            "class": "User",
            "key": "example_owner:{{ record.id }}",
            "properties": {"name": "name"},
        }
    ],
}


@pytest.fixture
def three():
    with PagingApi("none", 3) as server:
        yield server


def fan_out(source_rules=None, tags_rules=None, owners_rules=None) -> dict:
    tags = {**TAGS, **({"on_status": tags_rules} if tags_rules is not None else {})}
    owners = {**OWNERS, **({"on_status": owners_rules} if owners_rules is not None else {})}
    source = {**SOURCE, **({"on_status": source_rules} if source_rules is not None else {})}
    return item_mapping(None, source=source, steps_after=[tags, owners])


def tag_keys(output) -> list[str]:
    return sorted(e["_key"] for e in output["entities"] if e["_type"] == "example_tag")


def test_skip_a_missing_child(etl, three, tmp_path, sleeps):
    three.fail_next("/items/2/tags", Response(404, {"message": "item 2 has no tags"}))
    result = run(etl, tmp_path, three, fan_out(tags_rules={404: "skip"}))
    text = result.stdout + result.stderr
    assert result.exit_code == 0, text
    output = read_output(tmp_path / "out")
    assert tag_keys(output) == ["example_tag:1-a", "example_tag:1-b", "example_tag:3-a", "example_tag:3-b"]
    assert step_status(output, "fetch-tags") == "success"
    assert partial_types(output) == []
    assert "item 2 has no tags" not in result.stdout  # not an error, not a warning
    assert [r.path for r in three.log].count("/items/2/tags") == 1 and sleeps == []


def test_partial_marks_the_types_partial_and_names_url_status_and_message(etl, three, tmp_path):
    three.fail_next("/items/2/tags", Response(403, {"message": "missing scope tags:read"}))
    result = run(etl, tmp_path, three, fan_out(tags_rules={403: "partial"}))
    text = result.stdout + result.stderr
    assert result.exit_code == 1, text
    output = read_output(tmp_path / "out")
    assert tag_keys(output) == ["example_tag:1-a", "example_tag:1-b", "example_tag:3-a", "example_tag:3-b"]
    assert step_status(output, "fetch-tags") == "success"
    assert {"example_tag", "example_item_has_tag"} <= set(partial_types(output))
    assert "example_item" not in partial_types(output) and "example_owner" not in partial_types(output)
    warning = [line for line in text.splitlines() if f"{three.url}/items/2/tags" in line]
    assert any("403" in line and "missing scope tags:read" in line for line in warning), text


def test_fail_is_the_default(etl, three, tmp_path):
    three.fail_next("/items/2/tags", Response(404, {"message": "Not Found"}))
    result = run(etl, tmp_path, three, fan_out())
    text = result.stdout + result.stderr
    assert result.exit_code == 1, text
    assert f"GET {three.url}/items/2/tags failed: HTTP 404 Not Found" in text
    output = read_output(tmp_path / "out")
    assert step_status(output, "fetch-tags") == "failure"
    assert tag_keys(output) == ["example_tag:1-a", "example_tag:1-b", "example_tag:3-a", "example_tag:3-b"]
    assert "example_tag" in partial_types(output)


def test_a_step_rule_overrides_the_source_default(etl, three, tmp_path):
    three.fail_next("/items/2/tags", Response(404, {"message": "no tags"}))
    three.fail_next("/items/2/owners", Response(404, {"message": "no owner"}))
    result = run(etl, tmp_path, three, fan_out(source_rules={404: "partial"}, tags_rules={404: "skip"}))
    text = result.stdout + result.stderr
    assert result.exit_code == 1, text  # the owners are partial (the source's rule)
    output = read_output(tmp_path / "out")
    assert step_status(output, "fetch-tags") == "success" and step_status(output, "fetch-owners") == "success"
    assert partial_types(output) == ["example_owner"]
    assert sorted(e["_key"] for e in output["entities"] if e["_type"] == "example_owner") == [
        "example_owner:owner-1",
        "example_owner:owner-3",
    ]
    assert any(f"{three.url}/items/2/owners" in line and "no owner" in line for line in text.splitlines())


def test_a_step_can_fail_what_its_source_skips(etl, three, tmp_path):
    three.fail_next("/items/2/tags", Response(404, {"message": "no tags"}))
    result = run(etl, tmp_path, three, fan_out(source_rules={404: "skip"}, tags_rules={404: "fail"}))
    assert result.exit_code == 1
    output = read_output(tmp_path / "out")
    assert step_status(output, "fetch-tags") == "failure" and step_status(output, "fetch-owners") == "success"


def test_status_keys_may_be_quoted(etl, three, tmp_path):
    three.fail_next("/items/3/tags", Response(404, {"message": "no tags"}))
    result = run(etl, tmp_path, three, fan_out(tags_rules={"404": "skip"}))
    assert result.exit_code == 0, result.stdout + result.stderr


def test_skip_on_a_list_request(etl, three, tmp_path):
    three.fail_next("/items", Response(404, {"message": "this account has no items"}))
    data = item_mapping(None, source=SOURCE, step={"on_status": {404: "skip"}}, steps_after=[ACCOUNT_STEP])
    result = run(etl, tmp_path, three, data)
    assert result.exit_code == 0, result.stdout + result.stderr
    output = read_output(tmp_path / "out")
    assert item_ids(output) == [] and step_status(output, "fetch-items") == "success"
    assert partial_types(output) == []


def test_rules_do_not_stop_retries(etl, three, tmp_path, sleeps):
    # 503 is retried; the rule only applies to what is left after the retries.
    three.fail_next("/items/2/tags", Response(503, {"message": "busy"}), Response(503, {"message": "busy"}))
    result = run(etl, tmp_path, three, fan_out(tags_rules={404: "skip"}), "--concurrency", "1")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert len(sleeps) == 2
    assert tag_keys(read_output(tmp_path / "out"))[2:4] == ["example_tag:2-a", "example_tag:2-b"]


def test_an_unknown_action_is_a_mapping_error(etl, tmp_path):
    path = write_mapping(tmp_path / "bad.yaml", fan_out(tags_rules={404: "ignore"}))
    result = etl("validate", path)
    assert result.exit_code == 3
    assert "on_status" in result.stderr


# -- `etl run -v`: one line per request ---------------------------------------------------------------

DURATION = re.compile(r"\d+(\.\d+)?\s?(ms|s)\b")


def request_lines(stderr: str, url_part: str) -> list[str]:
    """The per-request log lines of ``url_part``: method, URL, status, duration and records."""
    return [line for line in stderr.splitlines() if url_part in line and re.search(r"\b\d+ records?\b", line)]


def test_verbose_logs_one_line_per_request(etl, api, tmp_path, sleeps):
    api.fail_request({"offset": "5"}, Response(503, {"message": "busy"}))
    data = item_mapping(
        PAGINATION, source={**SOURCE, "params": {"api_key": "{{ config.apiKey }}"}}, config={"apiKey": {"secret": True}}
    )
    result = run(etl, tmp_path, api, data, "-v", "--config", f"apiKey={SECRET}")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert SECRET not in result.stdout + result.stderr
    for offset, records in zip(OFFSETS, (5, 5, 5, 5, 3)):
        url = f"{api.url}/items?api_key=[REDACTED]&offset={offset}&limit=5"
        lines = request_lines(result.stderr, url)
        assert len(lines) == 1, (offset, result.stderr)
        line = lines[0]
        assert "GET" in line and re.search(r"\b200\b", line) and DURATION.search(line), line
        assert re.search(rf"\b{records} records?\b", line), line
        retried = re.search(r"\b1 retr|retr\w*\W+1\b", line)
        assert bool(retried) == (offset == "5"), line


def test_without_verbose_there_are_no_request_lines(etl, api, tmp_path):
    result = run(etl, tmp_path, api)
    assert result.exit_code == 0
    assert request_lines(result.stderr, f"{api.url}/items") == []
