"""Every pagination kind against a real local API (tests/fakes/paging.py): the documented
examples in docs/examples/ produce the whole record set with exactly the expected requests,
paging values go where `in` says, the stop conditions combine as documented, and the loop
guard stops a paginator that would never end, keeping what was fetched."""

from __future__ import annotations

import json
import time

import pytest

from tests.fakes.paging import (
    ACCOUNT_STEP,
    EXAMPLES,
    PagingApi,
    item_ids,
    item_mapping,
    partial_types,
    require_query,
    step_status,
    write_mapping,
)
from tests.graphtools import read_output

ALL = list(range(1, 24))  # the 23 records every API below serves
BOUND = 10.0  # seconds; no run here needs more than a fraction of it


@pytest.fixture
def serve():
    """serve(kind, total=23, **knobs) -> a started PagingApi; stopped after the test."""
    servers = []

    def start(kind: str, total: int = 23, **knobs) -> PagingApi:
        api = PagingApi(kind, total).__enter__()
        servers.append(api)
        for name, value in knobs.items():
            assert hasattr(api, name), name
            setattr(api, name, value)
        return api

    yield start
    for api in servers:
        api.__exit__(None, None, None)


def run(etl, mapping, api, out, *extra):
    return etl("run", mapping, "--base-url", api.url, "--output", out, *extra)


def run_inline(etl, tmp_path, api, data, *extra):
    path = write_mapping(tmp_path / "example.yaml", data)
    started = time.monotonic()
    result = run(etl, path, api, tmp_path / "out", *extra)
    assert time.monotonic() - started < BOUND
    return result


def succeeded(result, out, expected=ALL) -> dict:
    """The run succeeded completely and built exactly the items ``expected``."""
    text = result.stdout + result.stderr
    assert result.exit_code == 0, text
    output = read_output(out)
    assert item_ids(output) == expected, text
    assert step_status(output, "fetch-items") == "success"
    assert partial_types(output) == []
    return output


def stopped_short(result, out) -> dict:
    """Every item the API had was built, but the API's total promised more: exit 1, types partial."""
    text = result.stdout + result.stderr
    assert result.exit_code == 1, text
    output = read_output(out)
    assert item_ids(output) == ALL, text
    assert partial_types(output) == ["example_item"]
    return output


def queries(api) -> list[dict]:
    return [r.query for r in api.data_log()]


def variables(api) -> list[dict]:
    """The GraphQL variables of every request, with null values left out."""
    out = []
    for request in api.data_log():
        body = json.loads(request.body)
        out.append({k: v for k, v in body["variables"].items() if v is not None})
    return out


# -- the documented examples, one per kind -----------------------------------------------------


def test_every_example_is_a_valid_mapping(etl):
    files = sorted(EXAMPLES.glob("*.yaml"))
    names = {f.name for f in files}
    for kind in ("none", "offset", "page", "cursor", "next-url", "link-header", "graphql-cursor"):
        assert f"pagination-{kind}.yaml" in names
    for kind in ("bearer", "basic", "api-key", "oauth2-client-credentials"):
        assert f"auth-{kind}.yaml" in names
    result = etl("validate", *files)
    assert result.exit_code == 0, result.stdout + result.stderr
    several_steps = {"fanout-nested-detail.yaml", "accounts-per-region.yaml"}
    one_step = ": ok (1 step, 1 entity type, 0 relationship types)"
    assert result.stdout.count(one_step) == len(files) - len(several_steps)
    for name in several_steps:
        assert f"{name}: ok (" in result.stdout


def test_example_none_makes_one_request(etl, serve, tmp_path):
    api = serve("none")
    result = run(etl, EXAMPLES / "pagination-none.yaml", api, tmp_path / "out")
    succeeded(result, tmp_path / "out")
    assert [(r.method, r.path, r.query) for r in api.log] == [("GET", "/items", {})]


def test_example_offset(etl, serve, tmp_path):
    api = serve("offset")
    result = run(etl, EXAMPLES / "pagination-offset.yaml", api, tmp_path / "out", "--config", "pageSize=5")
    output = succeeded(result, tmp_path / "out")
    assert queries(api) == [{"offset": str(o), "limit": "5"} for o in (0, 5, 10, 15, 20)]
    assert len([e for e in output["entities"] if e["_type"] == "example_item"]) == 23
    assert "Graph: 23 entities, 0 relationships" in result.stdout


def test_example_page(etl, serve, tmp_path):
    api = serve("page")
    result = run(etl, EXAMPLES / "pagination-page.yaml", api, tmp_path / "out", "--config", "pageSize=5")
    succeeded(result, tmp_path / "out")
    assert queries(api) == [{"page": str(p), "per_page": "5"} for p in (1, 2, 3, 4, 5)]


def test_example_cursor(etl, serve, tmp_path):
    api = serve("cursor")
    result = run(etl, EXAMPLES / "pagination-cursor.yaml", api, tmp_path / "out", "--config", "pageSize=5")
    succeeded(result, tmp_path / "out")
    # The first request has no cursor at all; the last page's next_cursor is null.
    assert queries(api) == [{"limit": "5"}] + [{"limit": "5", "cursor": f"after-{o}"} for o in (5, 10, 15, 20)]


def test_example_next_url(etl, serve, tmp_path):
    api = serve("next_url")  # relative next URLs: "/items?after=5&limit=5"
    result = run(etl, EXAMPLES / "pagination-next-url.yaml", api, tmp_path / "out", "--config", "pageSize=5")
    succeeded(result, tmp_path / "out")
    assert [r.path for r in api.log] == ["/items"] * 5
    assert queries(api) == [{"limit": "5"}] + [{"after": str(o), "limit": "5"} for o in (5, 10, 15, 20)]


def test_example_link_header(etl, serve, tmp_path):
    api = serve("link_header")
    result = run(etl, EXAMPLES / "pagination-link-header.yaml", api, tmp_path / "out", "--config", "pageSize=5")
    succeeded(result, tmp_path / "out")
    # per_page on the first request; then the rel="next" URLs exactly as the API gave them.
    assert queries(api) == [{"per_page": "5"}] + [{"page": str(p), "per_page": "5"} for p in (2, 3, 4, 5)]


def test_example_graphql_cursor(etl, serve, tmp_path):
    api = serve("graphql_cursor")
    result = run(etl, EXAMPLES / "pagination-graphql-cursor.yaml", api, tmp_path / "out", "--config", "pageSize=5")
    succeeded(result, tmp_path / "out")
    assert [(r.method, r.path, r.query) for r in api.log] == [("POST", "/graphql", {})] * 5
    # The last page has a non-null endCursor: hasNextPage: false is what stops the paging.
    assert variables(api) == [{"first": 5}] + [{"first": 5, "after": f"after-{o}"} for o in (5, 10, 15, 20)]
    assert all("pageInfo" in json.loads(r.body)["query"] for r in api.log)


# -- where the paging values go (`in`) -----------------------------------------------------------


def test_page_values_in_headers(etl, serve, tmp_path):
    api = serve("page", names={"page": "X-Page", "size": "X-Per-Page"})
    data = item_mapping(
        {
            "kind": "page",
            "in": "header",
            "page_param": "X-Page",
            "size_param": "X-Per-Page",
            "size": 5,
            "total_pages": "meta.total_pages",
        }
    )
    succeeded(run_inline(etl, tmp_path, api, data), tmp_path / "out")
    assert queries(api) == [{}] * 5
    assert [(r.headers["x-page"], r.headers["x-per-page"]) for r in api.data_log()] == [
        (str(p), "5") for p in (1, 2, 3, 4, 5)
    ]


def test_cursor_in_a_header(etl, serve, tmp_path):
    api = serve("cursor", names={"cursor": "X-Cursor", "size": "X-Limit"})
    data = item_mapping(
        {
            "kind": "cursor",
            "in": "header",
            "cursor": "next_cursor",
            "cursor_param": "X-Cursor",
            "size_param": "X-Limit",
            "size": 5,
        }
    )
    succeeded(run_inline(etl, tmp_path, api, data), tmp_path / "out")
    assert queries(api) == [{}] * 5
    assert [r.headers.get("x-cursor") for r in api.data_log()] == [None] + [f"after-{o}" for o in (5, 10, 15, 20)]
    assert {r.headers["x-limit"] for r in api.data_log()} == {"5"}


def test_offset_values_in_the_json_body(etl, serve, tmp_path):
    api = serve("offset")
    data = item_mapping(
        {"kind": "offset", "in": "body", "limit": 5, "total": "meta.total"},
        request={"method": "POST", "path": "/items", "body": {"value": {"filter": {"state": "open"}}}},
    )
    succeeded(run_inline(etl, tmp_path, api, data), tmp_path / "out")
    assert [(r.method, r.query) for r in api.data_log()] == [("POST", {})] * 5
    # The paging values are merged into the request's own body, as numbers.
    assert [json.loads(r.body) for r in api.data_log()] == [
        {"filter": {"state": "open"}, "offset": o, "limit": 5} for o in (0, 5, 10, 15, 20)
    ]


def test_offset_values_in_the_path(etl, serve, tmp_path):
    api = serve("offset")
    data = item_mapping(
        {"kind": "offset", "in": "path", "limit": 5, "total": "meta.total"},
        request={"path": "/items/offset/{{ paging.offset }}/limit/{{ paging.limit }}"},
    )
    succeeded(run_inline(etl, tmp_path, api, data), tmp_path / "out")
    assert [(r.path, r.query) for r in api.log] == [(f"/items/offset/{o}/limit/5", {}) for o in (0, 5, 10, 15, 20)]


def test_page_number_in_the_path(etl, serve, tmp_path):
    api = serve("page")  # serves 10 a page when the client names no size
    data = item_mapping({"kind": "page", "in": "path", "size": 10}, request={"path": "/items/page/{{ paging.page }}"})
    succeeded(run_inline(etl, tmp_path, api, data), tmp_path / "out")
    # Nothing is added to the query; page 3 holds 3 < size records, so it is the last.
    assert [(r.path, r.query) for r in api.log] == [("/items/page/1", {}), ("/items/page/2", {}), ("/items/page/3", {})]


def test_absolute_next_urls_keep_source_params_and_auth_but_not_step_params(etl, serve, tmp_path):
    key = "k3y-for-next-url-paging"
    api = serve("next_url", absolute_next=True, auth=require_query("api_key", key))
    data = item_mapping(
        {"kind": "next_url", "next_url": "links.next", "size_param": "limit", "size": 5},
        request={"path": "/items", "params": {"state": "open"}},
        config={"apiKey": {"secret": True}},
        source={
            "params": {"region": "eu"},
            "auth": {"kind": "api_key", "in": "query", "name": "api_key", "value": "{{ config.apiKey }}"},
        },
    )
    result = run_inline(etl, tmp_path, api, data, "--config", f"apiKey={key}")
    succeeded(result, tmp_path / "out")
    first, *rest = queries(api)
    assert first == {"region": "eu", "api_key": key, "state": "open", "limit": "5"}
    # The next URL replaces the request's path and query; the source's params and auth still apply.
    assert rest == [{"region": "eu", "api_key": key, "after": str(o), "limit": "5"} for o in (5, 10, 15, 20)]
    assert key not in result.stdout + result.stderr


def test_graphql_cursor_names_of_variables(etl, serve, tmp_path):
    api = serve("graphql_cursor", names={"cursor": "cursorAfter", "size": "pageSize"})
    data = item_mapping(
        {
            "kind": "graphql_cursor",
            "page_info": "data.items.pageInfo",
            "cursor_param": "cursorAfter",
            "size_param": "pageSize",
            "size": 10,
        },
        request={
            "path": "/graphql",
            "graphql": {
                "query": "query Items($pageSize: Int, $cursorAfter: String, $state: String) { items { nodes { id } } }",
                "variables": {"state": "open"},
            },
        },
        records="data.items.nodes",
    )
    succeeded(run_inline(etl, tmp_path, api, data), tmp_path / "out")
    assert variables(api) == [
        {"state": "open", "pageSize": 10},
        {"state": "open", "pageSize": 10, "cursorAfter": "after-10"},
        {"state": "open", "pageSize": 10, "cursorAfter": "after-20"},
    ]


# -- stop conditions ---------------------------------------------------------------------------


def offset_run(etl, serve, tmp_path, pagination, total=23, **knobs):
    api = serve("offset", total, **knobs)
    result = run_inline(etl, tmp_path, api, item_mapping({"kind": "offset", "limit": 5, **pagination}))
    return api, result


def test_offset_stops_at_the_total(etl, serve, tmp_path):
    api, result = offset_run(etl, serve, tmp_path, {"total": "meta.total"}, total=25)
    succeeded(result, tmp_path / "out", list(range(1, 26)))
    # 25 is reached after the fifth page: no sixth request, although that page was full.
    assert [q["offset"] for q in queries(api)] == ["0", "5", "10", "15", "20"]


def test_offset_total_that_lies_high_stops_at_the_empty_page(etl, serve, tmp_path):
    """The empty page ends the walk; the total says more exist, so the data is partial, not complete."""
    api, result = offset_run(etl, serve, tmp_path, {"total": "meta.total"}, reported_total=100)
    stopped_short(result, tmp_path / "out")
    assert [q["offset"] for q in queries(api)] == ["0", "5", "10", "15", "20", "23"]


def test_offset_total_that_lies_low_is_believed(etl, serve, tmp_path):
    api, result = offset_run(etl, serve, tmp_path, {"total": "meta.total"}, reported_total=12)
    succeeded(result, tmp_path / "out", list(range(1, 16)))
    assert [q["offset"] for q in queries(api)] == ["0", "5", "10"]


def test_offset_without_total_stops_at_a_short_page(etl, serve, tmp_path):
    api, result = offset_run(etl, serve, tmp_path, {})
    succeeded(result, tmp_path / "out")
    assert [q["offset"] for q in queries(api)] == ["0", "5", "10", "15", "20"]


def test_offset_without_total_stops_at_an_empty_page(etl, serve, tmp_path):
    api, result = offset_run(etl, serve, tmp_path, {}, total=25)
    succeeded(result, tmp_path / "out", list(range(1, 26)))
    assert [q["offset"] for q in queries(api)] == ["0", "5", "10", "15", "20", "25"]


def test_has_more_false_stops_before_the_total(etl, serve, tmp_path):
    api, result = offset_run(etl, serve, tmp_path, {"total": "meta.total", "has_more": "has_more"}, has_more_until=1)
    succeeded(result, tmp_path / "out", list(range(1, 11)))
    assert [q["offset"] for q in queries(api)] == ["0", "5"]


def test_page_stops_at_total_pages(etl, serve, tmp_path):
    api = serve("page", reported_total_pages=3)
    data = item_mapping({"kind": "page", "size_param": "per_page", "size": 5, "total_pages": "meta.total_pages"})
    succeeded(run_inline(etl, tmp_path, api, data), tmp_path / "out", list(range(1, 16)))
    assert [q["page"] for q in queries(api)] == ["1", "2", "3"]


def test_page_total_pages_that_lies_high_stops_at_the_empty_page(etl, serve, tmp_path):
    api = serve("page", reported_total_pages=10)
    data = item_mapping({"kind": "page", "size_param": "per_page", "size": 5, "total_pages": "meta.total_pages"})
    stopped_short(run_inline(etl, tmp_path, api, data), tmp_path / "out")
    assert [q["page"] for q in queries(api)] == ["1", "2", "3", "4", "5", "6"]


def test_page_without_total_pages_stops_at_a_short_page(etl, serve, tmp_path):
    api = serve("page")
    data = item_mapping({"kind": "page", "size_param": "per_page", "size": 5})
    succeeded(run_inline(etl, tmp_path, api, data), tmp_path / "out")
    assert queries(api) == [{"page": str(p), "per_page": "5"} for p in (1, 2, 3, 4, 5)]


def test_page_without_size_stops_at_an_empty_page(etl, serve, tmp_path):
    api = serve("page")  # 10 a page by default: 10, 10, 3, then nothing
    data = item_mapping({"kind": "page"})
    succeeded(run_inline(etl, tmp_path, api, data), tmp_path / "out")
    # Without a size, a short page proves nothing: only the empty page stops.
    assert queries(api) == [{"page": str(p)} for p in (1, 2, 3, 4)]


def test_page_numbers_from_zero(etl, serve, tmp_path):
    api = serve("page", first_page=0)
    data = item_mapping(
        {"kind": "page", "start_page": 0, "size_param": "per_page", "size": 5, "total_pages": "meta.total_pages"}
    )
    succeeded(run_inline(etl, tmp_path, api, data), tmp_path / "out")
    # total_pages is a count (5): numbered from 0, the last page is page 4, and no page 5 is asked for.
    assert [q["page"] for q in queries(api)] == ["0", "1", "2", "3", "4"]


def test_cursor_stops_on_an_empty_string_token(etl, serve, tmp_path):
    api = serve("cursor", end_cursor="")
    data = item_mapping({"kind": "cursor", "cursor": "next_cursor", "size_param": "limit", "size": 5})
    succeeded(run_inline(etl, tmp_path, api, data), tmp_path / "out")
    assert len(queries(api)) == 5


def test_cursor_on_the_last_page_costs_one_empty_request_without_has_more(etl, serve, tmp_path):
    api = serve("cursor", next_on_last_page=True)
    data = item_mapping({"kind": "cursor", "cursor": "next_cursor", "size_param": "limit", "size": 5})
    succeeded(run_inline(etl, tmp_path, api, data), tmp_path / "out")
    assert [q.get("cursor") for q in queries(api)] == [None, "after-5", "after-10", "after-15", "after-20", "after-25"]


def test_has_more_stops_a_cursor_that_never_ends(etl, serve, tmp_path):
    api = serve("cursor", next_on_last_page=True)
    data = item_mapping(
        {"kind": "cursor", "cursor": "next_cursor", "size_param": "limit", "size": 5, "has_more": "has_more"}
    )
    succeeded(run_inline(etl, tmp_path, api, data), tmp_path / "out")
    assert [q.get("cursor") for q in queries(api)] == [None, "after-5", "after-10", "after-15", "after-20"]


def test_an_empty_page_stops_by_default(etl, serve, tmp_path):
    api = serve("cursor", empty_pages={1})  # the API withholds page 2's records but says there is more
    data = item_mapping({"kind": "cursor", "cursor": "next_cursor", "size_param": "limit", "size": 5})
    succeeded(run_inline(etl, tmp_path, api, data), tmp_path / "out", [1, 2, 3, 4, 5])
    assert [q.get("cursor") for q in queries(api)] == [None, "after-5"]


def test_stop_on_empty_false_walks_past_an_empty_page(etl, serve, tmp_path):
    api = serve("cursor", empty_pages={1})
    data = item_mapping(
        {"kind": "cursor", "cursor": "next_cursor", "size_param": "limit", "size": 5, "stop_on_empty": False}
    )
    succeeded(run_inline(etl, tmp_path, api, data), tmp_path / "out", [1, 2, 3, 4, 5] + list(range(11, 24)))
    assert [q.get("cursor") for q in queries(api)] == [None, "after-5", "after-10", "after-15", "after-20"]


def test_max_pages_stops_a_cursor(etl, serve, tmp_path):
    api = serve("cursor")
    data = item_mapping({"kind": "cursor", "cursor": "next_cursor", "size_param": "limit", "size": 5, "max_pages": 2})
    result = run_inline(etl, tmp_path, api, data)
    output = read_output(tmp_path / "out")
    assert item_ids(output) == list(range(1, 11)), result.stdout + result.stderr
    assert len(queries(api)) == 2


def test_max_pages_before_total_pages(etl, serve, tmp_path):
    api = serve("page")
    data = item_mapping(
        {"kind": "page", "size_param": "per_page", "size": 5, "total_pages": "meta.total_pages", "max_pages": 3}
    )
    run_inline(etl, tmp_path, api, data)
    assert item_ids(read_output(tmp_path / "out")) == list(range(1, 16))
    assert [q["page"] for q in queries(api)] == ["1", "2", "3"]


def test_max_pages_of_links(etl, serve, tmp_path):
    api = serve("link_header")
    data = item_mapping({"kind": "link_header", "size_param": "per_page", "size": 5, "max_pages": 4}, records="@")
    run_inline(etl, tmp_path, api, data)
    assert item_ids(read_output(tmp_path / "out")) == list(range(1, 21))
    assert len(queries(api)) == 4


def test_max_pages_of_next_urls_and_graphql(etl, serve, tmp_path):
    api = serve("next_url")
    run_inline(
        etl,
        tmp_path,
        api,
        item_mapping({"kind": "next_url", "next_url": "links.next", "size_param": "limit", "size": 5, "max_pages": 1}),
    )
    assert item_ids(read_output(tmp_path / "out")) == [1, 2, 3, 4, 5]
    assert len(api.log) == 1
    gql = serve("graphql_cursor")
    run(
        etl,
        write_mapping(
            tmp_path / "gql.yaml",
            item_mapping(
                {"kind": "graphql_cursor", "page_info": "data.items.pageInfo", "size": 5, "max_pages": 2},
                request={"path": "/graphql", "graphql": {"query": "query { items { nodes { id } } }"}},
                records="data.items.nodes",
            ),
        ),
        gql,
        tmp_path / "gql",
    )
    assert item_ids(read_output(tmp_path / "gql")) == list(range(1, 11))
    assert len(gql.log) == 2


# -- the loop guard ------------------------------------------------------------------------------


def loop_run(etl, serve, tmp_path, kind, pagination, records="items", request=None, **knobs):
    """A run of the item step plus an independent account step after it."""
    api = serve(kind, **knobs)
    data = item_mapping(pagination, records=records, request=request, steps_after=[ACCOUNT_STEP])
    return api, run_inline(etl, tmp_path, api, data)


def assert_loop_stopped(result, out, *, kept, named=None):
    """The step failed with a 'pagination loop' error naming the repeated value; what it
    fetched before is kept; the other step ran; the run is partial (exit code 1)."""
    text = result.stdout + result.stderr
    assert result.exit_code == 1, text
    lines = [line for line in text.splitlines() if "pagination loop" in line]
    assert lines, text
    if named is not None:
        assert any(named in line for line in lines), text
    output = read_output(out)
    assert item_ids(output) == kept
    assert step_status(output, "fetch-items") == "failure"
    assert "example_item" in partial_types(output)
    assert step_status(output, "fetch-account") == "success"
    assert [e["_key"] for e in output["entities"] if e["_type"] == "example_account"] == ["example_account:acct-1"]


CURSOR = {"kind": "cursor", "cursor": "next_cursor", "size_param": "limit", "size": 5}


def test_loop_cursor_repeating_itself(etl, serve, tmp_path):
    # The page fetched with after-10 says its next page is after-10 again, forever.
    api, result = loop_run(etl, serve, tmp_path, "cursor", CURSOR, loop_back=(2, 2))
    assert_loop_stopped(result, tmp_path / "out", kept=list(range(1, 16)), named="after-10")
    assert [q.get("cursor") for q in queries(api)] == [None, "after-5", "after-10"]


def test_loop_cursor_pointing_back(etl, serve, tmp_path):
    api, result = loop_run(etl, serve, tmp_path, "cursor", CURSOR, loop_back=(3, 1))
    assert_loop_stopped(result, tmp_path / "out", kept=list(range(1, 21)), named="after-5")
    assert [q.get("cursor") for q in queries(api)] == [None, "after-5", "after-10", "after-15"]


def test_loop_graphql_end_cursor_repeating(etl, serve, tmp_path):
    api, result = loop_run(
        etl,
        serve,
        tmp_path,
        "graphql_cursor",
        {"kind": "graphql_cursor", "page_info": "data.items.pageInfo", "size": 5},
        records="data.items.nodes",
        request={"path": "/graphql", "graphql": {"query": "query { items { nodes { id } } }"}},
        loop_back=(2, 2),
    )
    assert_loop_stopped(result, tmp_path / "out", kept=list(range(1, 16)), named="after-10")
    assert [v.get("after") for v in variables(api)] == [None, "after-5", "after-10"]


def test_loop_next_url_pointing_back(etl, serve, tmp_path):
    api, result = loop_run(
        etl,
        serve,
        tmp_path,
        "next_url",
        {"kind": "next_url", "next_url": "links.next", "size_param": "limit", "size": 5},
        loop_back=(2, 1),
    )
    assert_loop_stopped(result, tmp_path / "out", kept=list(range(1, 16)), named="/items?after=5&limit=5")
    assert len(api.log) == 3 + 1  # three pages, then the account


def test_loop_link_header_pointing_back(etl, serve, tmp_path):
    api, result = loop_run(
        etl,
        serve,
        tmp_path,
        "link_header",
        {"kind": "link_header", "size_param": "per_page", "size": 5},
        records="@",
        loop_back=(2, 1),
    )
    assert_loop_stopped(result, tmp_path / "out", kept=list(range(1, 16)), named=f"{api.url}/items?page=2&per_page=5")
    assert queries(api) == [{"per_page": "5"}, {"page": "2", "per_page": "5"}, {"page": "3", "per_page": "5"}]


def test_loop_link_header_back_to_the_first_page(etl, serve, tmp_path):
    # rel="next" of page 3 is page 1, under a URL not seen before: page 1's records come again.
    api, result = loop_run(
        etl,
        serve,
        tmp_path,
        "link_header",
        {"kind": "link_header", "size_param": "per_page", "size": 5},
        records="@",
        loop_back=(2, 0),
    )
    assert_loop_stopped(result, tmp_path / "out", kept=list(range(1, 16)))
    assert queries(api) == [{"per_page": "5"}] + [{"page": str(p), "per_page": "5"} for p in (2, 3, 1)]


def test_loop_offset_api_serving_the_same_page(etl, serve, tmp_path):
    api, result = loop_run(
        etl, serve, tmp_path, "offset", {"kind": "offset", "limit": 5, "total": "meta.total"}, same_page=True
    )
    assert_loop_stopped(result, tmp_path / "out", kept=[1, 2, 3, 4, 5])
    assert [q["offset"] for q in queries(api)] == ["0", "5"]


def test_loop_page_api_serving_the_same_page(etl, serve, tmp_path):
    api, result = loop_run(
        etl, serve, tmp_path, "page", {"kind": "page", "size_param": "per_page", "size": 5}, same_page=True
    )
    assert_loop_stopped(result, tmp_path / "out", kept=[1, 2, 3, 4, 5])
    assert [q["page"] for q in queries(api)] == ["1", "2"]


def test_loop_cursor_api_serving_the_same_page(etl, serve, tmp_path):
    # The cursors advance but the records do not.
    api, result = loop_run(etl, serve, tmp_path, "cursor", CURSOR, same_page=True)
    assert_loop_stopped(result, tmp_path / "out", kept=[1, 2, 3, 4, 5])
    assert len(queries(api)) == 2


def test_loop_repeated_offset(etl, serve, tmp_path):
    # Past the real end, the API keeps claiming 100 records; with stop_on_empty: false the
    # empty page does not advance the offset, so the next request would repeat offset 23.
    api, result = loop_run(
        etl,
        serve,
        tmp_path,
        "offset",
        {"kind": "offset", "limit": 5, "total": "meta.total", "stop_on_empty": False},
        reported_total=100,
    )
    assert_loop_stopped(result, tmp_path / "out", kept=ALL)
    text = result.stdout + result.stderr
    assert any("offset" in line and "23" in line for line in text.splitlines() if "pagination loop" in line)
    assert [q["offset"] for q in queries(api)] == ["0", "5", "10", "15", "20", "23"]


def test_a_step_depending_on_a_looping_step_still_runs(etl, serve, tmp_path):
    api = serve("cursor", total=3, loop_back=(1, 1))  # the page fetched with after-1 points to after-1
    owners = {
        "id": "fetch-owners",
        "name": "Fetch owners",
        "depends_on": ["fetch-items"],
        "for_each": "example_item",
        "request": {"path": "/items/{{ parent.itemId }}/owners"},
        "entities": [
            {
                "type": "example_owner",
                "class": "User",
                "key": "example_owner:{{ record.id }}",
                "properties": {"name": "name"},
            }
        ],
    }
    result = run_inline(etl, tmp_path, api, item_mapping({**CURSOR, "size": 1}, steps_after=[owners]))
    text = result.stdout + result.stderr
    assert result.exit_code == 1, text
    assert any("after-1" in line for line in text.splitlines() if "pagination loop" in line), text
    output = read_output(tmp_path / "out")
    assert item_ids(output) == [1, 2]
    assert sorted(e["_key"] for e in output["entities"] if e["_type"] == "example_owner") == [
        "example_owner:owner-1",
        "example_owner:owner-2",
    ]
    assert step_status(output, "fetch-items") == "failure"
    assert step_status(output, "fetch-owners") == "partial_success_due_to_dependency_failure"
    paths = [r.path for r in api.log]
    assert paths[:2] == ["/items", "/items"]
    assert sorted(paths[2:]) == ["/items/1/owners", "/items/2/owners"]  # concurrent: either order


# -- invalid pagination is reported before any request ---------------------------------------------


@pytest.mark.parametrize(
    "pagination, missing",
    [
        ({"kind": "cursor", "size": 5}, "cursor"),
        ({"kind": "graphql_cursor", "size": 5}, "page_info"),
    ],
)
def test_a_required_pagination_key_is_checked(etl, tmp_path, pagination, missing):
    path = write_mapping(tmp_path / "bad.yaml", item_mapping(pagination))
    result = etl("validate", path)
    assert result.exit_code == 3
    assert "pagination" in result.stderr and missing in result.stderr


def test_an_unknown_in_is_rejected(etl, tmp_path):
    path = write_mapping(tmp_path / "bad.yaml", item_mapping({"kind": "offset", "limit": 5, "in": "cookie"}))
    result = etl("validate", path)
    assert result.exit_code == 3
    assert "steps[0].pagination.in" in result.stderr
