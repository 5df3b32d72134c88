"""Nothing is lost silently, against real local APIs (tests/fakes/paging.py):

* a paginator that runs out of records (an empty page, no records key, a body of the wrong
  shape) while the declared total says more exist marks the step's types partial, exits 1 and
  says where it stopped and what the total was; a total that shrinks during the run does too,
  one that grows is a warning; short pages in the middle are paged past correctly;
* a step that received records but wrote nothing fails, naming the first reason;
* a template that fails at run time (instance tags, a source's values, a request) is reported
  with its place in the mapping - a clean error, never an internal one.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.fakes.paging import (
    ACCOUNT_STEP,
    ITEM_ENTITY,
    PagingApi,
    item_ids,
    item_mapping,
    make_items,
    partial_types,
    step_status,
    write_mapping,
)
from tests.fakes.server import LocalApi, Request, Response
from tests.graphtools import read_output

ALL = list(range(1, 24))
BOUND = 10.0  # seconds of wall time any run here may take
OFFSET = {"kind": "offset", "limit": 5, "total": "meta.total"}
PAGE = {"kind": "page", "size_param": "per_page", "size": 5, "total_pages": "meta.total_pages"}


def run(etl, tmp_path, api, data, *extra):
    path = write_mapping(tmp_path / "example.yaml", data)
    started = time.monotonic()
    result = etl("run", path, "--base-url", api.url, "--output", tmp_path / "out", *extra)
    assert time.monotonic() - started < BOUND, "the run took too long"
    return result


def text_of(result) -> str:
    return result.stdout + result.stderr


def one_line(text: str, needle: str) -> str:
    lines = [line for line in text.splitlines() if needle in line]
    assert lines, f"no line says {needle!r}:\n{text}"
    return lines[0]


def truncated(result, tmp_path, kept: list[int]) -> tuple[dict, str]:
    """The run finished, kept ``kept``, marked the items partial and exited 1."""
    text = text_of(result)
    assert result.exit_code == 1, text
    output = read_output(tmp_path / "out")
    assert item_ids(output) == kept, text
    assert partial_types(output) == ["example_item"], text
    assert step_status(output, "fetch-account") == "success"
    return output, text


def complete(result, tmp_path, expected: list[int] = ALL) -> tuple[dict, str]:
    text = text_of(result)
    assert result.exit_code == 0, text
    output = read_output(tmp_path / "out")
    assert item_ids(output) == expected, text
    assert partial_types(output) == []
    return output, text


# -- running out of records before the declared total ------------------------------------------------

# What the API sends instead of the third page (records 11 to 15): (body, how messages call it).
STOPS = {
    "an empty page": (lambda meta: {"items": [], "meta": meta}, "a page without records"),
    "no records key": (lambda meta: {"meta": meta}, "a page without records"),
    "a null records key": (lambda meta: {"items": None, "meta": meta}, "a page without records"),
    "an empty object": (lambda meta: {}, "an empty object as the body"),
    "null": (lambda meta: b"null", "a null body"),
    "a list": (lambda meta: [{"id": 11, "name": "item 11"}], "a list as the body"),
}


@pytest.mark.parametrize("stop", list(STOPS))
def test_offset_running_out_before_the_total(etl, tmp_path, stop):
    body, shape = STOPS[stop]
    with PagingApi("offset", 23) as api:
        api.fail_request({"offset": "10"}, Response(200, body({"total": 23, "offset": 10, "limit": 5})))
        result = run(etl, tmp_path, api, item_mapping(OFFSET, steps_after=[ACCOUNT_STEP]))
        assert [r.query["offset"] for r in api.data_log()] == ["0", "5", "10"]
    output, text = truncated(result, tmp_path, list(range(1, 11)))
    line = one_line(text, "warning(s); first: ")  # told once, in the summary
    assert f"/items?offset=10&limit=5: {shape} at offset 10, but the total (meta.total) is 23" in line
    assert "13 record(s) not received; the step's types are marked partial" in line
    assert f"first: GET {api.url}/items?offset=10&limit=5: {shape} at offset 10" in result.stdout


@pytest.mark.parametrize("stop", list(STOPS))
def test_page_running_out_before_the_page_count(etl, tmp_path, stop):
    body, shape = STOPS[stop]
    with PagingApi("page", 23) as api:
        meta = {"page": 3, "per_page": 5, "total_pages": 5, "total": 23}
        api.fail_request({"page": "3"}, Response(200, body(meta)))
        result = run(etl, tmp_path, api, item_mapping(PAGE, steps_after=[ACCOUNT_STEP]))
        assert [r.query["page"] for r in api.data_log()] == ["1", "2", "3"]
    _, text = truncated(result, tmp_path, list(range(1, 11)))
    line = one_line(text, "warning(s); first: ")  # told once, in the summary
    assert f"/items?page=3&per_page=5: {shape} at page 3, but the page count (meta.total_pages) is 5" in line
    assert "pages 3 to 5 brought no records" in line


def test_a_total_that_lies_high_is_a_partial_dataset(etl, tmp_path):
    """The API says 100 and has 23: indistinguishable from records withheld, so not complete."""
    with PagingApi("offset", 23) as api:
        api.reported_total = 100
        result = run(etl, tmp_path, api, item_mapping(OFFSET, steps_after=[ACCOUNT_STEP]))
    _, text = truncated(result, tmp_path, ALL)
    assert "a page without records at offset 23, but the total (meta.total) is 100" in text


def test_a_page_count_that_lies_high_is_a_partial_dataset(etl, tmp_path):
    with PagingApi("page", 23) as api:
        api.reported_total_pages = 10
        result = run(etl, tmp_path, api, item_mapping(PAGE, steps_after=[ACCOUNT_STEP]))
    _, text = truncated(result, tmp_path, ALL)
    assert "at page 6, but the page count (meta.total_pages) is 10: pages 6 to 10 brought no records" in text


def test_an_empty_page_at_the_total_is_the_end(etl, tmp_path):
    """Without a total the empty page is the end, as before (stop_on_empty)."""
    with PagingApi("offset", 25) as api:
        result = run(etl, tmp_path, api, item_mapping({"kind": "offset", "limit": 5}, steps_after=[ACCOUNT_STEP]))
    _, text = complete(result, tmp_path, list(range(1, 26)))
    assert "warning" not in text.lower()


def test_a_link_header_naming_pages_after_an_empty_one(etl, tmp_path):
    with PagingApi("link_header", 23) as api:
        api.empty_pages = {2}
        data = item_mapping(
            {"kind": "link_header", "size_param": "per_page", "size": 5}, records="@", steps_after=[ACCOUNT_STEP]
        )
        result = run(etl, tmp_path, api, data)
    _, text = truncated(result, tmp_path, list(range(1, 11)))
    assert "an empty list as the body, but the Link header names a next page and a last page after this one" in text


def test_a_link_header_ending_normally(etl, tmp_path):
    with PagingApi("link_header", 23) as api:
        data = item_mapping(
            {"kind": "link_header", "size_param": "per_page", "size": 5}, records="@", steps_after=[ACCOUNT_STEP]
        )
        complete(run(etl, tmp_path, api, data), tmp_path)


def test_a_fan_out_child_running_out_names_its_parent(etl, tmp_path):
    with PagingApi("none", 2) as api:

        def parts(request: Request, item: str) -> Response:
            offset = int(request.query["offset"])
            records = [] if item == "2" and offset == 5 else make_items(12)[offset : offset + 5]
            parts = [{"id": f"{item}-{r['id']}", "name": f"part {r['id']} of item {item}"} for r in records]
            return Response(200, {"parts": parts, "total": 12})

        api.route("GET", r"/items/(?P<item>\d+)/parts", parts)
        part_step = {
            "id": "fetch-parts",
            "name": "Fetch parts",
            "depends_on": ["fetch-items"],
            "for_each": "example_item",
            "request": {"path": "/items/{{ parent.itemId }}/parts"},
            "pagination": {"kind": "offset", "limit": 5, "total": "total"},
            "records": "parts",
            "entities": [
                {
                    "type": "example_part",
                    "class": "Record",
                    "key": "example_part:{{ record.id }}",
                    "properties": {"name": "name"},
                }
            ],
        }
        result = run(etl, tmp_path, api, item_mapping(None, steps_after=[part_step]))
    text = text_of(result)
    assert result.exit_code == 1, text
    output = read_output(tmp_path / "out")
    assert len([e for e in output["entities"] if e["_type"] == "example_part"]) == 12 + 5, text
    assert partial_types(output) == ["example_part"]
    line = one_line(text, "warning(s); first: ")  # told once, in the summary
    assert "for example_item example_item:2: GET " in line
    assert "a page without records at offset 5, but the total (total) is 12: 7 record(s) not received" in line


# -- totals that change during the run -----------------------------------------------------------------


def changing_api(server: LocalApi, records: list[dict], total_at) -> None:
    """``/items`` by offset and limit: ``records[offset:offset+limit]`` and the total ``total_at(offset)``."""

    def items(request: Request) -> Response:
        offset, limit = int(request.query["offset"]), int(request.query["limit"])
        return Response(200, {"items": records[offset : offset + limit], "meta": {"total": total_at(offset)}})

    server.route("GET", "/items", items)
    server.route("GET", "/account", lambda request: Response(200, {"id": "acct-1", "name": "Example account"}))


def test_a_total_that_grows_is_a_warning(etl, tmp_path):
    with LocalApi() as api:
        changing_api(api, make_items(25), lambda offset: 23 if offset < 10 else 25)
        result = run(etl, tmp_path, api, item_mapping(OFFSET, steps_after=[ACCOUNT_STEP]))
    _, text = complete(result, tmp_path, list(range(1, 26)))
    line = one_line(text, "warning(s); first: ")  # told once, in the summary
    assert (
        "/items?offset=10&limit=5: the total (meta.total) changed from 23 to 25 during the run (at offset 10)" in line
    )


def test_a_total_that_shrinks_is_a_partial_dataset(etl, tmp_path):
    """Records deleted while the run pages: later offsets skip records it never sees."""
    with LocalApi() as api:
        records = make_items(23)
        changing_api(api, records, lambda offset: 23 if offset < 10 else 20)
        original = api.routes[0][2]

        def deleting(request: Request) -> Response:
            if request.query["offset"] == "10":
                del records[2:5]  # three records before the offset go away
            return original(request)

        api.routes[0] = (api.routes[0][0], api.routes[0][1], deleting)
        result = run(etl, tmp_path, api, item_mapping(OFFSET, steps_after=[ACCOUNT_STEP]))
    _, text = truncated(result, tmp_path, list(range(1, 11)) + list(range(14, 24)))
    assert "the total (meta.total) changed from 23 to 20 during the run (at offset 10): records may have been" in text


def test_a_page_count_that_shrinks_is_a_partial_dataset(etl, tmp_path):
    with PagingApi("page", 23) as api:
        meta = {"page": 2, "per_page": 5, "total_pages": 4, "total": 20}
        api.fail_request({"page": "2"}, Response(200, {"items": make_items(10)[5:], "meta": meta}))
        result = run(etl, tmp_path, api, item_mapping(PAGE, steps_after=[ACCOUNT_STEP]))
    _, text = truncated(result, tmp_path, ALL)
    assert "the page count (meta.total_pages) changed from 5 to 4 during the run (at page 2)" in text


# -- short pages in the middle -----------------------------------------------------------------------


def test_a_short_page_in_the_middle_advances_by_what_it_held(etl, tmp_path):
    with PagingApi("offset", 23) as api:
        short = {"items": make_items(8)[5:], "meta": {"total": 23, "offset": 5, "limit": 5}}
        api.fail_request({"offset": "5"}, Response(200, short))
        result = run(etl, tmp_path, api, item_mapping(OFFSET, steps_after=[ACCOUNT_STEP]))
        assert [r.query["offset"] for r in api.data_log()] == ["0", "5", "8", "13", "18"]
    complete(result, tmp_path)


def test_an_api_capping_the_page_size(etl, tmp_path):
    with PagingApi("offset", 23) as api:
        api.max_size = 3  # asked for 5, it sends 3 at a time
        result = run(etl, tmp_path, api, item_mapping(OFFSET, steps_after=[ACCOUNT_STEP]))
        assert [r.query["offset"] for r in api.data_log()] == [str(o) for o in range(0, 23, 3)]
    complete(result, tmp_path)


def test_a_total_missing_from_a_later_page_is_remembered(etl, tmp_path):
    """Some APIs send the total on the first page only: a short page later does not end it."""
    with PagingApi("offset", 23) as api:
        api.fail_request({"offset": "5"}, Response(200, {"items": make_items(8)[5:]}))
        result = run(etl, tmp_path, api, item_mapping(OFFSET, steps_after=[ACCOUNT_STEP]))
    complete(result, tmp_path)


# -- steps that build nothing from what they received ------------------------------------------------


def item_step(entity: dict | None = None, **step) -> dict:
    return item_mapping(
        OFFSET, step={"entities": [{**ITEM_ENTITY, **(entity or {})}], **step}, steps_after=[ACCOUNT_STEP]
    )


def built_nothing(result, tmp_path, says: str) -> str:
    text = text_of(result)
    assert result.exit_code == 1, text
    output = read_output(tmp_path / "out")
    assert step_status(output, "fetch-items") == "failure", text
    assert step_status(output, "fetch-account") == "success"
    assert "example_item" in partial_types(output)
    line = one_line(result.stdout, "error: ")
    assert "23 record(s) received, nothing built: " in line, text
    assert says in line, line
    return line


def test_every_entity_invalid(etl, tmp_path):
    with PagingApi("offset", 23) as api:
        result = run(etl, tmp_path, api, item_step({"key": "{{ record.id }}"}))
    built_nothing(result, tmp_path, "example_item: 23 object(s) not written: _key shorter than 10 characters (e.g. 1)")


def test_every_key_null(etl, tmp_path):
    with PagingApi("offset", 23) as api:
        result = run(etl, tmp_path, api, item_step({"key": "{{ record.itemKey | default(none) }}"}))
    built_nothing(result, tmp_path, "no entity key could be made (every key was null)")


def test_every_key_failing(etl, tmp_path):
    with PagingApi("offset", 23) as api:
        result = run(etl, tmp_path, api, item_step({"key": "example_item:{{ record.uuid }}"}))
    line = built_nothing(result, tmp_path, "fetch-items: page 1 (")
    assert re.search(r"record 0: entities\[0\]\.key: 'dict object' has no attribute 'uuid'", line), line


def test_every_relationship_dangling(etl, tmp_path):
    link_step = {
        "id": "link-items",
        "name": "Link items to their account",
        "depends_on": ["fetch-items", "fetch-account"],
        "request": {"path": "/items"},
        "pagination": OFFSET,
        "records": "items",
        "relationships": [
            {
                "class": "HAS",
                "from": {"type": "example_account", "key": "example_account:{{ record.name }}"},
                "to": {"type": "example_item", "key": "example_item:{{ record.id }}"},
            }
        ],
    }
    with PagingApi("offset", 23) as api:
        result = run(etl, tmp_path, api, item_mapping(OFFSET, steps_after=[ACCOUNT_STEP, link_step]))
    text = text_of(result)
    assert result.exit_code == 1, text
    output = read_output(tmp_path / "out")
    assert step_status(output, "fetch-items") == "success"
    assert step_status(output, "link-items") == "failure"
    line = one_line(result.stdout, "error: ")
    assert "23 record(s) received, nothing built: example_account_has_item: 23 relationship(s) not written" in line


def test_a_filter_keeping_nothing_is_a_success(etl, tmp_path):
    with PagingApi("offset", 23) as api:
        result = run(etl, tmp_path, api, item_step(filter="id > `100`"))
    text = text_of(result)
    assert result.exit_code == 0, text
    assert step_status(read_output(tmp_path / "out"), "fetch-items") == "success"


def test_no_records_is_a_success(etl, tmp_path):
    with PagingApi("offset", 0) as api:
        result = run(etl, tmp_path, api, item_step())
    output, _ = complete(result, tmp_path, [])
    assert step_status(output, "fetch-items") == "success"


def test_records_that_were_all_duplicates_are_a_success(etl, tmp_path):
    again = {**item_mapping(OFFSET)["steps"][0], "id": "fetch-again", "name": "Fetch the items again"}
    with PagingApi("offset", 23) as api:
        result = run(etl, tmp_path, api, item_mapping(OFFSET, steps_after=[again, ACCOUNT_STEP]))
    output, text = complete(result, tmp_path)
    assert step_status(output, "fetch-again") == "success", text


def test_nothing_built_after_a_failed_dependency_stays_partial(etl, tmp_path):
    link_step = {
        "id": "link-items",
        "name": "Link items to their account",
        "depends_on": ["fetch-items", "fetch-account"],
        "request": {"path": "/items"},
        "pagination": OFFSET,
        "records": "items",
        "relationships": [
            {
                "class": "HAS",
                "from": {"type": "example_account"},
                "to": {"type": "example_item", "key": "example_item:{{ record.id }}"},
            },
        ],
    }
    data = item_mapping(OFFSET, steps_after=[ACCOUNT_STEP, link_step])
    with PagingApi("offset", 23) as api:
        api.fail_next("/account", *[Response(500, {"message": "down"})] * 3)
        result = run(etl, tmp_path, api, data)
    text = text_of(result)
    assert result.exit_code == 1, text
    output = read_output(tmp_path / "out")
    assert step_status(output, "fetch-account") == "failure"
    assert step_status(output, "link-items") == "partial_success_due_to_dependency_failure"
    assert "23 record(s) received, nothing built" in text


# -- templates that fail at run time ---------------------------------------------------------------


def clean_error(result, exit_code: int, *needles: str) -> str:
    text = text_of(result)
    assert result.exit_code == exit_code, text
    assert "internal error" not in text and "Traceback" not in text, text
    line = one_line(result.stderr if exit_code != 1 else text, needles[0])
    for needle in needles[1:]:
        assert needle in line, line
    return line


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("acct-{{ config.account }}", "a template expression is null"),
        ("{{ config.account + 1 }}", "TypeError: unsupported operand type(s) for +: 'NoneType' and 'int'"),
        ("{{ config.account.name }}", "'None' has no attribute 'name'"),
    ],
)
def test_an_instance_tag_failing(etl, tmp_path, template, problem):
    data = item_mapping(OFFSET, config={"account": {"required": False}})
    data["tags"] = {"Team": "security", "AccountName": template}
    out = tmp_path / "out"
    with PagingApi("offset", 23) as api:
        assert run(etl, tmp_path, api, item_mapping(OFFSET)).exit_code == 0
        before = sorted(p.read_bytes() for p in out.rglob("*") if p.is_file())
        asked = len(api.log)
        result = run(etl, tmp_path, api, data)
        assert len(api.log) == asked  # the failed run asked for nothing
    line = clean_error(result, 5, "tags.AccountName", problem)
    assert re.match(r"etl: error: \S*example\.yaml:\d+:\d+: tags\.AccountName: ", line), line
    assert sorted(p.read_bytes() for p in out.rglob("*") if p.is_file()) == before


def test_a_request_parameter_failing_fails_the_step(etl, tmp_path):
    request = {"path": "/items", "params": {"since": "{{ config.days + 'x' }}"}}
    data = item_mapping(OFFSET, request=request, config={"days": {"type": "integer", "default": 3}})
    data["steps"].append(ACCOUNT_STEP)
    with PagingApi("offset", 23) as api:
        result = run(etl, tmp_path, api, data)
    clean_error(
        result,
        1,
        "cannot build the request",
        "({{ config.days + 'x' }}): TypeError: unsupported operand type(s) for +: 'int' and 'str'",
        "example.yaml:",
        ": steps[0].request.params.since)",
    )
    output = read_output(tmp_path / "out")
    assert step_status(output, "fetch-items") == "failure"
    assert step_status(output, "fetch-account") == "success"


def test_a_page_size_failing_fails_the_step(etl, tmp_path):
    data = item_mapping(
        {**OFFSET, "limit": "{{ config.size * 'x' * 1.5 }}"}, config={"size": {"type": "integer", "default": 5}}
    )
    data["steps"].append(ACCOUNT_STEP)
    with PagingApi("offset", 23) as api:
        result = run(etl, tmp_path, api, data)
    clean_error(result, 1, "cannot build the request", "steps[0].pagination.limit)")


def test_a_source_header_failing(etl, tmp_path):
    data = item_mapping(OFFSET, source={"headers": {"X-Org": "org-{{ config.org }}"}}, config={"org": {}})
    data["config"]["org"] = {"required": False}
    with PagingApi("offset", 23) as api:
        result = run(etl, tmp_path, api, data)
    clean_error(result, 5, "sources.api.headers.X-Org", "a template expression is null")


def test_a_validation_request_failing(etl, tmp_path):
    validate = {"path": "/account", "params": {"org": "{{ config.org.id }}"}}
    data = item_mapping(OFFSET, source={"validate": validate}, config={"org": {"required": False}})
    with PagingApi("offset", 23) as api:
        result = run(etl, tmp_path, api, data)
    clean_error(result, 5, "sources.api.validate.params.org", "'None' has no attribute 'id'")


def test_a_base_url_an_auth_value_and_a_when_failing(etl, tmp_path):
    config = {"region": {"required": False}, "token": {"required": False}}
    cases = [
        (
            {"base_url": "https://{{ config.region }}.example.invalid"},
            {},
            "sources.api.base_url",
            "a template expression is null",
        ),
        ({"auth": {"kind": "bearer", "token": "{{ config.token.secret }}"}}, {}, "sources.api.auth.token", "'None'"),
        ({}, {"when": "length(config('region')) > `1`"}, "steps[0].when", "JMESPathTypeError: In function length()"),
    ]
    for source, step, place, problem in cases:
        path = write_mapping(tmp_path / "example.yaml", item_mapping(OFFSET, source=source, step=step, config=config))
        result = etl("run", path, "--output", tmp_path / "out")
        line = clean_error(result, 5, place, problem)
        assert re.match(rf"etl: error: \S*example\.yaml:\d+:\d+: {re.escape(place)}: ", line), line


def test_records_kept_by_the_filter_that_build_nothing(etl, tmp_path):
    with PagingApi("offset", 23) as api:
        result = run(etl, tmp_path, api, item_step({"key": "{{ record.id }}"}, filter="id > `20`"))
    text = text_of(result)
    assert result.exit_code == 1, text
    line = one_line(result.stdout, "error: ")
    assert "3 record(s) received and kept by the filter, nothing built: example_item: 3 object(s) not written" in line
