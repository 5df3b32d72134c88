"""Pagination and totals read from response headers, and search APIs paged through the POST
body (`from`/`size`, `search_after`), against a real local API (tests/fakes/feeds.py)."""

from __future__ import annotations

import json

import pytest

from tests.fakes.feeds import FeedApi
from tests.fakes.paging import EXAMPLES, item_ids, item_mapping, partial_types, write_mapping
from tests.fakes.server import Response
from tests.graphtools import read_output

ALL = list(range(1, 24))


@pytest.fixture
def api():
    with FeedApi() as server:
        yield server


def run(etl, mapping, api, out, *extra):
    return etl("run", mapping, "--base-url", api.url, "--output", out, *extra)


def succeeded(result, out) -> dict:
    assert result.exit_code == 0, result.stdout + result.stderr
    output = read_output(out)
    assert item_ids(output) == ALL
    assert partial_types(output) == []
    return output


def test_total_in_a_header(etl, api, tmp_path):
    succeeded(run(etl, EXAMPLES / "pagination-header-total.yaml", api, tmp_path / "out"), tmp_path / "out")
    assert [r.query for r in api.log] == [{"offset": str(o), "limit": "10"} for o in (0, 10, 20)]


def test_cursor_in_a_header(etl, api, tmp_path):
    api.cursor_style = True
    succeeded(run(etl, EXAMPLES / "pagination-header-cursor.yaml", api, tmp_path / "out"), tmp_path / "out")
    assert [r.query for r in api.log] == [
        {"limit": "10"},
        {"limit": "10", "cursor": "10"},
        {"limit": "10", "cursor": "20"},
    ]


def test_search_after(etl, api, tmp_path):
    succeeded(run(etl, EXAMPLES / "pagination-search-after.yaml", api, tmp_path / "out"), tmp_path / "out")
    bodies = [json.loads(r.body) for r in api.log]
    assert bodies[0] == {"query": {"match_all": {}}, "sort": ["updated_at", "id"], "size": 10}
    assert [b.get("search_after") for b in bodies] == [None, ["2026-01-10T00:00:00Z", 10], ["2026-01-20T00:00:00Z", 20]]


def test_search_from_size(etl, api, tmp_path):
    succeeded(run(etl, EXAMPLES / "pagination-search-from-size.yaml", api, tmp_path / "out"), tmp_path / "out")
    assert [(b["from"], b["size"]) for b in map(json.loads, (r.body for r in api.log))] == [(0, 10), (10, 10), (20, 10)]


def test_a_header_total_that_promises_more_marks_the_types_partial(etl, api, tmp_path):
    api.reported_total = 30
    result = run(etl, EXAMPLES / "pagination-header-total.yaml", api, tmp_path / "out")
    assert result.exit_code == 1
    assert "the total (header X-Total-Count) is 30: 7 record(s) not received" in result.stdout
    assert partial_types(read_output(tmp_path / "out")) == ["example_item"]


def test_a_header_total_that_is_not_a_number_fails_the_step(etl, api, tmp_path):
    api.route("GET", "/odd", lambda request: Response(200, [{"id": 1, "name": "a"}], headers={"X-Total-Count": "many"}))
    data = item_mapping(
        {"kind": "offset", "limit": 10, "total": {"header": "X-Total-Count"}}, request={"path": "/odd"}, records="@"
    )
    result = run(etl, write_mapping(tmp_path / "m.yaml", data), api, tmp_path / "out")
    assert result.exit_code == 1
    assert 'the total (header X-Total-Count) is "many", not a number' in result.stdout


def test_has_more_and_next_url_from_headers(etl, api, tmp_path):
    def page(request):
        start = int(request.query.get("after", 0))
        headers = {"X-More": "true" if start + 10 < 23 else "false", "X-Next": f"/paged?after={start + 10}"}
        return Response(200, api.items[start : start + 10], headers=headers)

    api.route("GET", "/paged", page)
    data = item_mapping(
        {"kind": "next_url", "next_url": {"header": "X-Next"}, "has_more": {"header": "X-More"}},
        request={"path": "/paged"},
        records="@",
    )
    succeeded(run(etl, write_mapping(tmp_path / "m.yaml", data), api, tmp_path / "out"), tmp_path / "out")
    assert [r.query.get("after") for r in api.log] == [None, "10", "20"]


def test_total_pages_from_a_header_any_case(etl, api, tmp_path):
    def page(request):
        number = int(request.query.get("page", 1))
        return Response(200, api.items[(number - 1) * 10 : number * 10], headers={"x-total-pages": "3"})

    api.route("GET", "/pages", page)
    data = item_mapping(
        {"kind": "page", "total_pages": {"header": "X-Total-Pages"}}, request={"path": "/pages"}, records="@"
    )
    succeeded(run(etl, write_mapping(tmp_path / "m.yaml", data), api, tmp_path / "out"), tmp_path / "out")
    assert len(api.log) == 3


def test_search_after_that_repeats_is_a_loop(etl, api, tmp_path):
    api.route(
        "POST",
        "/stuck",
        lambda request: Response(
            200, {"hits": {"hits": [{"_source": {"id": i, "name": "x"}, "sort": [1]} for i in range(1, 3)]}}
        ),
    )
    data = item_mapping(
        {"kind": "search_after", "size": 2},
        request={"method": "POST", "path": "/stuck", "body": {"q": 1}},
        records="hits.hits",
        step={
            "entities": [
                {
                    "resource": "Item",
                    "type": "example_item",
                    "class": "Record",
                    "key": "example_item:{{ record._source.id }}",
                    "properties": {"name": "_source.name", "itemId": "_source.id"},
                }
            ]
        },
    )
    result = run(etl, write_mapping(tmp_path / "m.yaml", data), api, tmp_path / "out")
    assert result.exit_code == 1
    assert "pagination loop" in result.stdout


def test_header_forms_are_checked(etl, tmp_path):
    data = item_mapping({"kind": "cursor", "cursor": {"header": ""}, "page_info": {"header": "X"}})
    result = etl("validate", write_mapping(tmp_path / "bad.yaml", data))
    assert result.exit_code == 3
    assert "bad.yaml:" in result.stderr and "pagination" in result.stderr
