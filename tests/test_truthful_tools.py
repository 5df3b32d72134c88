"""Tools that tell the truth (issue 13, item 1), against real local APIs and the bundled cassettes:

* ``etl explain`` names the rule that built a key - which of several rules of one kind, and
  which ``for_each`` item;
* ``etl validate`` refuses an entity rule that never sets a property the data model requires
  (what the run's graph checks would refuse every entity for);
* a step whose every built object was refused does not succeed;
* a ``records`` selector that matches nothing is a warning, once per step, naming the keys
  the body has and the likeliest one; ``preview`` and ``coverage`` show it too;
* a 401/403 on a source's first request is an authentication failure (exit 5);
* each warning is printed once: in the run's summary (stdout), not also on stderr;
* ``etl validate`` of a missing file is a usage error; its counts are grammatical;
* a YAML indentation mistake gets a hint about indentation.
"""

from __future__ import annotations

import copy
import re

import pytest

from engine import datamodel
from engine.pipeline.load import load_mapping
from tests.conftest import MAPPINGS
from tests.fakes.paging import ACCOUNT_STEP, ITEM_ENTITY, PagingApi, item_mapping, step_status, write_mapping
from tests.fakes.server import LocalApi, Request, Response
from tests.graphtools import read_output

DIGICERT = MAPPINGS / "digicert.yaml"


def run(etl, tmp_path, api, data, *extra, command="run"):
    path = write_mapping(tmp_path / "example.yaml", data)
    output = ("--output", tmp_path / "out") if command == "run" else ()
    return etl(command, path, "--base-url", api.url, *output, *extra)


def everything(result) -> str:
    return result.stdout + result.stderr


# -- explain: which rule, which item ------------------------------------------------------------------

# Each item has parts (built as entities by one for_each rule) and spares; two relationship rules
# of one type link an item to its parts and to its spares.
ITEMS_WITH_PARTS = [
    {"id": 1, "name": "item 1", "parts": [{"id": "p1a"}, {"id": "p1b"}], "spares": [{"id": "p1c"}]},
    {"id": 2, "name": "item 2", "parts": [{"id": "p2a"}], "spares": []},
]


def parts_api() -> LocalApi:
    api = LocalApi()
    api.route("GET", "/items", lambda request: Response(200, {"items": ITEMS_WITH_PARTS}))
    return api


def parts_mapping() -> dict:
    to_part = {"type": "example_part", "key": "example_part:{{ item.id }}"}
    return item_mapping(
        step={
            "entities": [
                ITEM_ENTITY,
                {
                    "type": "example_part",
                    "class": "Record",
                    "for_each": "[parts, spares][]",
                    "key": "example_part:{{ item.id }}",
                    "properties": {"name": "id"},
                },
            ],
            "relationships": [
                {"class": "HAS", "from": "example_item", "to": to_part, "for_each": "parts"},
                {"class": "HAS", "from": "example_item", "to": to_part, "for_each": "spares"},
            ],
        }
    )


def explain(etl, tmp_path, key: str):
    with parts_api() as api:
        result = run(etl, tmp_path, api, parts_mapping(), "--key", key, command="explain")
    assert result.exit_code == 0, everything(result)
    return result.stdout


def rule_at(tmp_path, *path) -> str:
    """``FILE:LINE:COL (steps[0]...)`` of a rule of the test mapping, as explain cites it."""
    mapping = tmp_path / "example.yaml"
    where = load_mapping(mapping).source.locate(("steps", 0, *path))
    return f"by the rule at {where} (steps[0].{path[0]}[{path[1]}])"


def test_explain_names_the_second_relationship_rule_of_a_type_and_its_item(etl, tmp_path):
    text = explain(etl, tmp_path, "example_item:1|has|example_part:p1c")
    assert f"{rule_at(tmp_path, 'relationships', 1)}, for_each item 0\n" in text
    assert "to: spares" not in text and "the for_each item (spares):" in text
    assert '_toEntityKey = "example_part:p1c"  <- example_part:{{ item.id }}' in text


def test_explain_names_the_first_relationship_rule_and_the_item_it_was_built_for(etl, tmp_path):
    text = explain(etl, tmp_path, "example_item:1|has|example_part:p1b")
    assert f"{rule_at(tmp_path, 'relationships', 0)}, for_each item 1\n" in text
    assert 'the for_each item (parts):\n  {\n    "id": "p1b"\n  }' in text


def test_explain_names_the_for_each_item_of_an_entity(etl, tmp_path):
    text = explain(etl, tmp_path, "example_part:p1c")
    assert f"{rule_at(tmp_path, 'entities', 1)}, for_each item 2\n" in text  # parts, then spares
    assert 'name = "p1c"  <- id  (' in text


def test_explain_cites_the_second_mapped_rule_of_the_digicert_mapping(etl):
    """The certificate's other names (SANs) are mapped by the second rule, with for_each."""
    loaded = load_mapping(DIGICERT)
    step = next(i for i, s in enumerate(loaded.data["steps"]) if s["id"] == "fetch-orders")
    san = f"{loaded.source.locate(('steps', step, 'mapped_relationships', 1))} (steps[{step}].mapped_relationships[1])"
    common = (
        f"{loaded.source.locate(('steps', step, 'mapped_relationships', 0))} (steps[{step}].mapped_relationships[0])"
    )
    assert san != common

    key = "digicert_certificate:100005|has|REVERSE:_class=Domain:domainName=www.example.com"
    result = etl("explain", DIGICERT, "--offline", "--key", key)
    assert result.exit_code == 0, everything(result)
    # dns_names: shop (the common name, left out), checkout, www.
    assert f"by the rule at {san}, for_each item 1\n" in result.stdout
    assert "the for_each item (difference(" in result.stdout and '\n  "www.example.com"\n' in result.stdout

    key = "digicert_certificate:100005|has|REVERSE:_class=Domain:domainName=shop.example.com"
    result = etl("explain", DIGICERT, "--offline", "--key", key)
    assert result.exit_code == 0, everything(result)
    assert f"by the rule at {common}\n" in result.stdout
    assert "for_each item" not in result.stdout


def test_explain_of_a_missing_key_names_the_steps_that_failed(etl, tmp_path):
    with PagingApi("offset", 5) as api:
        api.fail_next("/items", Response(404, {"message": "no such list"}))
        result = run(etl, tmp_path, api, item_mapping(), "--key", "example_item:1", command="explain")
    assert result.exit_code == 1
    assert "example_item:1: not built in this run" in result.stdout
    assert "step fetch-items did not succeed (failure): GET " in result.stdout and "HTTP 404" in result.stdout


# -- validate: what the graph checks will enforce -----------------------------------------------------

USER_RULE = """\
version: 1
integration: {id: example, name: Example}
sources:
  api: {base_url: "https://api.example.invalid"}
steps:
  - id: fetch-users
    name: Fetch users
    request: {path: /users}
    entities:
      - type: example_user
        class: User
        key: "example_user:{{ record.id }}"
        properties:
          email: email
"""


def validate(etl, tmp_path, text: str):
    path = tmp_path / "example.yaml"
    path.write_text(text)
    return path, etl("validate", path)


def test_a_rule_without_a_required_name_is_a_located_validation_error(etl, tmp_path):
    path, result = validate(etl, tmp_path, USER_RULE)
    assert result.exit_code == 3
    assert result.stderr == (
        f"{path}:14:11: steps[0].entities[0].properties: every JupiterOne entity requires the property 'name', "
        "and this rule never sets it: every entity it builds would be refused. Add 'name' under properties\n"
    )


def test_a_class_requirement_names_the_class(etl, tmp_path):
    text = USER_RULE.replace("class: User", "class: Domain").replace("email: email", "name: host")
    path, result = validate(etl, tmp_path, text)
    assert result.exit_code == 3
    assert result.stderr.splitlines() == [
        f"{path}:14:11: steps[0].entities[0].properties: the class Domain requires the property 'domainName', "
        "and this rule never sets it: every entity it builds would be refused. Add 'domainName' under properties"
    ]


def test_a_rule_without_properties_is_located_at_the_rule(etl, tmp_path):
    text = USER_RULE.replace("        properties:\n          email: email\n", "")
    path, result = validate(etl, tmp_path, text)
    assert result.exit_code == 3
    assert result.stderr.startswith(f"{path}:10:9: steps[0].entities[0]: every JupiterOne entity requires")


def test_a_required_property_set_to_null_is_refused(etl, tmp_path):
    text = USER_RULE.replace("email: email", "name: {value: null}")
    path, result = validate(etl, tmp_path, text)
    assert result.exit_code == 3
    assert result.stderr.splitlines() == [
        f"{path}:14:17: steps[0].entities[0].properties.name: every JupiterOne entity requires the property "
        "'name', and this rule sets it to null: every entity it builds would be refused",
    ]


@pytest.mark.parametrize(
    "change",
    [
        ("email: email", "name: {template: '{{ record.first }} {{ record.last }}'}"),  # name, any form
        ('key: "example_user:{{ record.id }}"', 'key: "example_user:{{ record.id }}"\n        tags_from: labels'),
        ("class: User", "class: Vulnerability\n        properties: {name: title}\n        tags: {x: y}"),
    ],
    ids=["name-set", "tags-from-may-set-name", "null-allowed-class"],
)
def test_what_the_run_can_fill_in_validates(etl, tmp_path, change):
    """tags_from may set name (a tag called Name); displayName defaults to name; a
    Vulnerability's required properties may be null: as the graph checks say."""
    text = USER_RULE.replace(*change)
    if "Vulnerability" in text:
        text = text.replace("        properties:\n          email: email\n", "")
    _, result = validate(etl, tmp_path, text)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith(": ok (1 step, 1 entity type, 0 relationship types)\n")


@pytest.mark.parametrize("class_name", sorted(datamodel.CLASS_REQUIRED))
def test_validate_asks_exactly_what_the_checks_require(etl, tmp_path, class_name):
    """A rule of each class that sets only name: validate names the properties the run's
    checks (check.entity_problems) would refuse every entity for - those that may not be null."""
    text = USER_RULE.replace("class: User", f"class: {class_name}").replace("email: email", "name: title")
    _, result = validate(etl, tmp_path, text)
    required = sorted(n for n, allowed in datamodel.CLASS_REQUIRED[class_name].items() if "null" not in allowed)
    named = sorted(re.findall(r"requires the property '(\w+)'", result.stderr))
    assert named == required
    assert result.exit_code == (3 if required else 0)


def test_the_vendor_mappings_and_examples_still_validate(etl):
    paths = [*MAPPINGS.glob("*.yaml"), *(MAPPINGS / "examples").glob("*.yaml")]
    paths += (MAPPINGS.parent / "docs" / "examples").glob("*.yaml")
    result = etl("validate", *paths)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count(": ok (") == len(paths)


# -- a step whose every object was refused ----------------------------------------------------------


def test_a_step_without_a_request_whose_entity_is_refused_fails(etl, tmp_path):
    account = copy.deepcopy(ACCOUNT_STEP)
    del account["request"]
    account["entities"][0].update(key="short", properties={"name": {"value": "Example account"}})
    with PagingApi("offset", 3) as api:
        result = run(etl, tmp_path, api, item_mapping(steps_after=[account]))
    assert result.exit_code == 1, everything(result)
    output = read_output(tmp_path / "out")
    assert step_status(output, "fetch-account") == "failure"
    assert step_status(output, "fetch-items") == "success"
    assert (
        "error: nothing written from the config: example_account: 1 object(s) not written: "
        "_key shorter than 10 characters (e.g. short)"
    ) in result.stdout


def test_records_building_only_refused_objects_or_nothing_fail_the_step(etl, tmp_path):
    """Items 1 to 20 have no key, 21 to 23 a key too short: nothing was written."""
    entity = {**ITEM_ENTITY, "key": "{{ record.id if record.id > 20 else none }}"}
    with PagingApi("offset", 23) as api:
        pagination = {"kind": "offset", "limit": 10, "total": "meta.total"}
        result = run(etl, tmp_path, api, item_mapping(pagination, step={"entities": [entity]}))
    assert result.exit_code == 1, everything(result)
    assert step_status(read_output(tmp_path / "out"), "fetch-items") == "failure"
    assert "23 record(s) received, nothing built: example_item: 3 object(s) not written: _key shorter" in (
        result.stdout
    )


# -- a records selector that matches nothing ----------------------------------------------------------


def rows_api(body: dict) -> LocalApi:
    api = LocalApi()
    api.route("GET", "/items", lambda request: Response(200, body))
    api.route("GET", r"/items/(?P<item>\d+)/tags", lambda request, item: Response(200, body))
    return api


ROWS = {"rows": [{"id": 1, "name": "item 1"}], "pageInfo": {"hasNextPage": False}}
ROWZ_WARNING = "`records: rowz` matched nothing; the body has `rows`, `pageInfo` (did you mean `rows`?)"


def test_a_selector_that_matches_nothing_is_a_warning_naming_the_keys(etl, tmp_path):
    with rows_api(ROWS) as api:
        result = run(etl, tmp_path, api, item_mapping(records="rowz"))
    assert result.exit_code == 0, everything(result)
    assert f"1 warning(s); first: {ROWZ_WARNING}\n" in result.stdout
    assert everything(result).count("matched nothing") == 1


def test_a_nested_selector_names_the_keys_where_it_stopped(etl, tmp_path):
    body = {"data": {"items": [{"id": 1, "name": "item 1"}], "total": 1}}
    with rows_api(body) as api:
        result = run(etl, tmp_path, api, item_mapping(records="data.itemz"))
    assert (
        "`records: data.itemz` matched nothing; `data` has `data.items`, `data.total` (did you mean `data.items`?)"
    ) in result.stdout


def test_a_fan_out_warns_once_for_all_its_children(etl, tmp_path):
    tags = {
        "id": "fetch-tags",
        "name": "Fetch tags",
        "depends_on": ["fetch-items"],
        "for_each": "example_item",
        "request": {"path": "/items/{{ parent.itemId }}/tags"},
        "records": "rowz",
        "entities": [{**ITEM_ENTITY, "type": "example_tag", "key": "example_tag:{{ record.id }}"}],
    }
    body = {"rows": [{"id": n, "name": f"item {n}"} for n in (1, 2, 3)], "pageInfo": {}}
    with rows_api(body) as api:
        result = run(etl, tmp_path, api, item_mapping(records="rows", steps_after=[tags]))
        assert len([r for r in api.log if r.path.endswith("/tags")]) == 3
    assert result.exit_code == 0, everything(result)
    assert f"1 warning(s); first: {ROWZ_WARNING}" in result.stdout
    assert everything(result).count("matched nothing") == 1


def test_the_selector_warning_comes_before_the_truncation_it_causes(etl, tmp_path):
    with PagingApi("offset", 23) as api:
        result = run(
            etl, tmp_path, api, item_mapping({"kind": "offset", "limit": 5, "total": "meta.total"}, records="itemz")
        )
    assert result.exit_code == 1, everything(result)  # the total promised 23 records
    assert (
        "2 warning(s); first: `records: itemz` matched nothing; the body has `items`, `meta`, `has_more` "
        "(did you mean `items`?)\n"
    ) in result.stdout


def test_a_list_left_out_of_the_last_page_is_no_warning(etl, tmp_path):
    """The selector found records: an API may leave its list out of an empty page."""

    def items(request: Request) -> Response:
        offset = int(request.query.get("offset", "0"))
        if offset >= 4:
            return Response(200, {"meta": {"offset": offset}})
        return Response(200, {"items": [{"id": offset + n, "name": "item"} for n in (1, 2)], "meta": {}})

    with LocalApi() as api:
        api.route("GET", "/items", items)
        result = run(etl, tmp_path, api, item_mapping({"kind": "offset", "limit": 2}))
    assert result.exit_code == 0, everything(result)
    assert "warning" not in everything(result).lower()


def test_preview_and_coverage_show_the_selector_warning(etl, tmp_path):
    with rows_api(ROWS) as api:
        preview = run(etl, tmp_path, api, item_mapping(records="rowz"), command="preview")
        coverage = run(etl, tmp_path, api, item_mapping(records="rowz"), command="coverage")
    assert preview.exit_code == 0, everything(preview)
    assert "records (first 0):\n" in preview.stdout
    assert f"warnings and errors:\n  warning: {ROWZ_WARNING}\n" in preview.stdout + "\n"
    assert coverage.exit_code == 0, everything(coverage)
    assert coverage.stdout == (
        f"== step fetch-items: 0 records: no API fields to compare\nwarnings and errors:\n  warning: {ROWZ_WARNING}\n"
    )
    for result in (preview, coverage):
        assert everything(result).count("matched nothing") == 1


def test_coverage_reports_a_step_that_received_no_records(etl, tmp_path):
    with PagingApi("offset", 0) as api:
        result = run(etl, tmp_path, api, item_mapping(steps_after=[ACCOUNT_STEP]), command="coverage")
    assert result.exit_code == 0, everything(result)
    assert result.stdout.startswith("== step fetch-items: 0 records: no API fields to compare\n\n")
    assert "warnings and errors" not in result.stdout  # an empty list is an empty page


# -- credentials refused on a source's first request ---------------------------------------------------


def test_a_401_on_the_first_request_is_an_authentication_failure(etl, tmp_path):
    with PagingApi("offset", 5) as api:
        api.auth = lambda request: "invalid token"
        result = run(etl, tmp_path, api, item_mapping(steps_after=[ACCOUNT_STEP]))
        assert len(api.log) == 1  # no other step ran
    assert result.exit_code == 5, everything(result)
    assert result.stderr == (
        f"etl: error: authentication failed: GET {api.url}/items failed: HTTP 401 Unauthorized: invalid token "
        "- check the API credentials in the config\n"
    )
    assert not (tmp_path / "out").exists()


def test_a_403_on_the_first_request_is_one_too(etl, tmp_path):
    with PagingApi("offset", 5) as api:
        api.fail_next("/items", Response(403, {"message": "forbidden"}))
        result = run(etl, tmp_path, api, item_mapping())
    assert result.exit_code == 5, everything(result)
    assert "authentication failed: " in result.stderr and "check the API credentials in the config" in result.stderr


def test_an_on_status_rule_for_the_status_is_kept(etl, tmp_path):
    """The DigiCert way: a 403 on a list means a permission the key lacks."""
    with PagingApi("offset", 5) as api:
        api.fail_next("/items", Response(403, {"message": "missing permission"}))
        result = run(
            etl, tmp_path, api, item_mapping(source={"on_status": {403: "partial"}}, steps_after=[ACCOUNT_STEP])
        )
    assert result.exit_code == 1, everything(result)
    output = read_output(tmp_path / "out")
    assert output["summary"]["metadata"]["partialDatasets"]["types"] == ["example_item"]
    assert step_status(output, "fetch-account") == "success"


def test_a_401_after_the_source_answered_keeps_the_status_rules(etl, tmp_path):
    with PagingApi("offset", 23) as api:
        api.fail_request({"offset": "10"}, Response(401, {"message": "token expired"}))
        result = run(etl, tmp_path, api, item_mapping({"kind": "offset", "limit": 10}, steps_after=[ACCOUNT_STEP]))
    assert result.exit_code == 1, everything(result)
    output = read_output(tmp_path / "out")
    assert step_status(output, "fetch-items") == "failure"
    assert step_status(output, "fetch-account") == "success"
    assert "HTTP 401 Unauthorized: token expired" in result.stdout


# -- each warning once ---------------------------------------------------------------------------------


def test_a_duplicate_key_is_told_once(etl, tmp_path):
    body = {"items": [{"id": 1, "name": "item 1"}, {"id": 1, "name": "item 1 again"}]}
    with rows_api(body) as api:
        result = run(etl, tmp_path, api, item_mapping())
        verbose = run(etl, tmp_path, api, item_mapping(), "-v")
    note = "example_item: 1 duplicate key(s); kept the first of each"
    assert result.exit_code == 0, everything(result)
    assert everything(result).count(note) == 1 and f"  note: {note}\n" in result.stdout
    assert result.stderr == ""
    assert verbose.stdout.count(note) == 1 and f"INFO: {note}\n" in verbose.stderr  # -v: the live log


@pytest.mark.parametrize("kind", ["warning", "error"])
def test_step_warnings_and_errors_are_told_once(etl, tmp_path, kind):
    with PagingApi("offset", 23) as api:
        api.fail_request({"offset": "5"}, *[Response(500, {"message": "the API fell over"})] * 3)
        pagination = {"kind": "offset", "limit": 5, **({"max_pages": 1} if kind == "warning" else {})}
        result = run(etl, tmp_path, api, item_mapping(pagination))
    said = "stopped after max_pages=1" if kind == "warning" else "the API fell over"
    assert result.exit_code == 1, everything(result)
    assert everything(result).count(said) == 1
    assert result.stderr == ""


# -- the validate command ------------------------------------------------------------------------------


def test_validate_of_a_missing_file_is_a_usage_error(etl, tmp_path):
    result = etl("validate", DIGICERT, tmp_path / "nosuch.yaml")
    assert result.exit_code == 2
    assert (
        result.stderr == f"etl: error: cannot read mapping file {tmp_path / 'nosuch.yaml'}: No such file or directory\n"
    )
    assert result.stdout == ""


def test_validate_counts_are_grammatical(etl, tmp_path):
    data = item_mapping(
        step={"relationships": [{"class": "HAS", "from": {"type": "example_account"}, "to": "example_item"}]}
    )
    data["steps"][0]["depends_on"] = ["fetch-account"]
    data["steps"].insert(0, ACCOUNT_STEP)
    path = write_mapping(tmp_path / "example.yaml", data)
    result = etl("validate", path)
    assert result.stdout == f"{path}: ok (2 steps, 2 entity types, 1 relationship type)\n"
    del data["steps"][1]
    write_mapping(path, data)
    assert etl("validate", path).stdout == f"{path}: ok (1 step, 1 entity type, 0 relationship types)\n"


# -- YAML indentation ------------------------------------------------------------------------------------

HINT = (
    "check the indentation of this line and the one above it (YAML uses spaces; items of one list or "
    "mapping must start in the same column)"
)


@pytest.mark.parametrize(
    ("broken", "line", "pyyaml_says"),
    [
        (
            "    name: Fetch users\n",
            "   name: Fetch users\n",
            "expected <block end>, but found '<block mapping start>'",
        ),
        ("    name: Fetch users\n", "      name: Fetch users\n", "mapping values are not allowed here"),
        ("        class: User\n", "       class: User\n", "expected <block end>"),
    ],
    ids=["key-outdented", "key-indented", "rule-key-outdented"],
)
def test_an_indentation_mistake_gets_a_hint(etl, tmp_path, broken, line, pyyaml_says):
    text = USER_RULE.replace("email: email", "name: name").replace(broken, line)
    path, result = validate(etl, tmp_path, text)
    assert result.exit_code == 3
    number = text.splitlines().index(line.rstrip("\n")) + 1
    assert re.match(rf"{re.escape(str(path))}:{number}:\d+: YAML syntax error: {re.escape(pyyaml_says)}", result.stderr)
    assert result.stderr.rstrip().endswith(f"; {HINT}")


def test_quiet_still_prints_a_failed_steps_error(etl, tmp_path):
    """-q prints only errors: the summary is hidden, a failed step's error is not."""
    api = PagingApi()
    api.fail_next("/items", Response(500, {"message": "boom"}))
    with api:
        data = item_mapping(
            {"kind": "offset", "limit": 5, "total": "meta.total"}, source={"retry": {"max_attempts": 1}}
        )
        result = etl(
            "run", write_mapping(tmp_path / "m.yaml", data), "--base-url", api.url, "--output", tmp_path / "out", "-q"
        )
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "etl: error: step fetch-items:" in result.stderr and "HTTP 500" in result.stderr
