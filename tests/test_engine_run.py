"""The generic engine on a small made-up API served by a real local HTTP server."""

from __future__ import annotations

import json
import re
import textwrap
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from tests.fakes.server import LocalApi, Response
from tests.graphtools import read_output

SECRET = "s3cr3t-token-value"

BASE_MAPPING = """\
version: 1
integration: {id: acme, name: Acme}
config:
  token: {env: ACME_TOKEN, secret: true}
  org: {required: false, default: example}
tags:
  Org: "{{ config.org }}"
sources:
  api:
    base_url: http://unused.invalid
    params: {api_key: "{{ config.token }}"}
    retry: {max_attempts: 3, initial_delay: 0.5, max_delay: 4}
    timeout: 2
steps:
  - id: fetch-teams
    name: Fetch Teams
    request: {path: /teams}
    pagination: {kind: offset, limit: 2, total: meta.total}
    records: items
    entities:
      - resource: Team
        type: acme_team
        class: Team
        key: "acme_team:{{ record.id }}"
        properties:
          name: name
          createdOn: to_epoch_ms(created)
  - id: fetch-users
    name: Fetch Users
    depends_on: [fetch-teams]
    request: {path: /users}
    records: "@"
    filter: "deleted != `true`"
    entities:
      - resource: User
        type: acme_user
        class: User
        key: "acme_user:{{ record.id }}"
        properties:
          name: name
          email: email
          profile: profile
        tags_from: labels
    relationships:
      - class: HAS
        for_each: teams
        from: {type: acme_team, key: "acme_team:{{ item }}"}
        to: acme_user
"""


def teams_handler(teams):
    def handler(request):
        offset, limit = int(request.query["offset"]), int(request.query["limit"])
        return Response(200, {"items": teams[offset : offset + limit], "meta": {"total": len(teams)}})

    return handler


TEAMS = [{"id": i, "name": f"Team {i}", "created": f"2024-01-0{i}T00:00:00Z"} for i in range(1, 6)]
USERS = [
    {"id": 1, "name": "Ann", "email": "ann@example.com", "teams": [1, 2], "labels": {"Env": "prod", "Vip": "true"}},
    {"id": 2, "name": "Ben", "email": "ben@example.com", "teams": [9], "profile": {"nested": True}},
    {"id": 3, "name": "Gone", "deleted": True, "teams": [1]},
    {"id": 4, "email": "noname@example.com", "teams": []},
    {"id": 1, "name": "Ann again", "email": "ann@example.com", "teams": []},
]


@pytest.fixture
def api():
    with LocalApi() as server:
        server.route("GET", "/teams", teams_handler(TEAMS))
        server.route("GET", "/users", lambda request: Response(200, USERS))
        yield server


@pytest.fixture
def mapping(tmp_path):
    def write(text: str = BASE_MAPPING) -> str:
        path = tmp_path / "acme.yaml"
        path.write_text(textwrap.dedent(text))
        return str(path)

    return write


def run(etl, mapping_path, api, out, *extra):
    return etl("run", mapping_path, "--base-url", api.url, "--output", out, *extra, env={"ACME_TOKEN": SECRET})


def test_pagination_records_relationships_and_graph_checks(etl, api, mapping, tmp_path):
    result = run(etl, mapping(), api, tmp_path / "out")
    assert result.exit_code == 1, result.stderr  # some users could not be written: partial
    output = read_output(tmp_path / "out")
    keys = sorted(e["_key"] for e in output["entities"])
    assert keys == [f"acme_team:{i}" for i in range(1, 6)] + ["acme_user:1", "acme_user:2"]
    assert [r.query.get("offset") for r in api.log if r.path == "/teams"] == ["0", "2", "4"]
    team = next(e for e in output["entities"] if e["_key"] == "acme_team:3")
    assert team["createdOn"] == 1704240000000 and team["tag.Org"] == "example"
    ann = next(e for e in output["entities"] if e["_key"] == "acme_user:1")
    assert ann["name"] == "Ann"  # the repeated record was dropped, the first kept
    assert ann["tag.Env"] == "prod" and ann["tag.Vip"] is True and ann["tags"] == ["Vip"]
    ben = next(e for e in output["entities"] if e["_key"] == "acme_user:2")
    assert "profile" not in ben  # an object is not a property
    rel_keys = sorted(r["_key"] for r in output["relationships"])
    assert rel_keys == ["acme_team:1|has|acme_user:1", "acme_team:2|has|acme_user:1"]
    summary = output["summary"]
    # User 4 has no name (invalid User), Ben's team 9 does not exist (dangling).
    assert summary["metadata"]["partialDatasets"]["types"] == ["acme_team_has_user", "acme_user"]
    assert "acme_user: 1 duplicate key(s); kept the first of each" in result.stdout
    assert "acme_user: 1 object(s) not written: missing required property 'name' (e.g. acme_user:4)" in result.stdout
    assert "acme_team_has_user: 1 relationship(s) not written: an endpoint entity does not exist" in result.stdout
    assert "an object cannot be an entity property" in result.stdout


def test_retry_after_seconds_and_http_date_are_honoured(etl, api, mapping, tmp_path, sleeps):
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    api.fail_next(
        "/users",
        Response(429, {"message": "slow down"}, headers={"Retry-After": "2"}),
        Response(503, {"message": "busy"}, headers={"Retry-After": later}),
    )
    result = run(etl, mapping(), api, tmp_path / "out")
    assert result.exit_code == 1  # the graph problems above; the retries themselves succeeded
    assert sleeps[0] == 2.0 and 1.0 < sleeps[1] <= 3.0
    assert len([r for r in api.log if r.path == "/users"]) == 3


def test_retries_exhausted_fail_the_step_only(etl, api, mapping, tmp_path, sleeps):
    api.fail_next("/users", *[Response(502, b"<html>Bad gateway</html>", headers={"Content-Type": "text/html"})] * 3)
    result = run(etl, mapping(), api, tmp_path / "out")
    assert result.exit_code == 1
    assert (
        f"GET {api.url}/users?api_key=[REDACTED] failed: HTTP 502 Bad Gateway: <html>Bad gateway</html> "
        f"(after 3 attempts)" in result.stdout
    )
    assert len(sleeps) == 2 and all(s <= 4 for s in sleeps)
    summary = read_output(tmp_path / "out")["summary"]
    assert [s["status"] for s in summary["integrationStepResults"]] == ["success", "failure"]


def test_dropped_connection_and_timeout_are_retried(etl, api, mapping, tmp_path, sleeps):
    api.fail_next("/teams", Response(200, {"items": TEAMS}, drop=True), Response(200, {}, delay=3))
    result = run(etl, mapping(), api, tmp_path / "out")
    assert len(sleeps) == 2
    output = read_output(tmp_path / "out")
    assert len([e for e in output["entities"] if e["_type"] == "acme_team"]) == 5
    assert result.exit_code == 1  # (the users' graph problems)


def test_secret_never_printed_or_written(etl, api, mapping, tmp_path):
    api.fail_next("/users", Response(200, f"oops {SECRET}".encode(), headers={"Content-Type": "text/plain"}))
    result = run(etl, mapping(), api, tmp_path / "out", "-vv")
    assert api.log[0].query["api_key"] == SECRET  # it was sent...
    assert SECRET not in result.stdout + result.stderr  # ...but never shown
    assert "api_key=[REDACTED]" in result.stderr
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text()


def test_step_without_request_builds_entities_from_config(etl, api, mapping, tmp_path):
    text = (
        BASE_MAPPING
        + "  "
        + textwrap.dedent("""\
      - id: account
        name: Account from config
        entities:
          - type: acme_account
            class: Account
            key: "acme_account:{{ config.org }}"
            properties:
              name: {template: "{{ config.org }}"}
              function: {value: [MAST]}
    """)
        .replace("\n", "\n  ")
        .rstrip()
        + "\n"
    )
    result = run(etl, mapping(text), api, tmp_path / "out", "--step", "account")
    assert result.exit_code == 0, result.stdout + result.stderr
    (account,) = read_output(tmp_path / "out")["entities"]
    assert account["_key"] == "acme_account:example" and account["function"] == ["MAST"]
    assert api.log == []


def test_named_base_url_override(etl, api, mapping, tmp_path):
    result = etl(
        "run", mapping(), "--base-url", f"api={api.url}", "--output", tmp_path / "out", env={"ACME_TOKEN": SECRET}
    )
    assert read_output(tmp_path / "out")["entities"], result.stdout + result.stderr


def test_bad_total_is_reported(etl, api, mapping, tmp_path):
    api.fail_next("/teams", Response(200, {"items": TEAMS[:2], "meta": {"total": "many"}}))
    result = run(etl, mapping(), api, tmp_path / "out")
    assert 'the total (meta.total) is "many", not a number' in result.stdout


def test_records_selector_of_the_wrong_shape_is_an_error(etl, api, mapping, tmp_path):
    api.fail_next("/teams", Response(200, {"items": "nope", "meta": {"total": 1}}))
    result = run(etl, mapping(), api, tmp_path / "out")
    assert "the records selector 'items' gives a string \"nope\", not a list of records" in result.stdout
    summary = read_output(tmp_path / "out")["summary"]
    assert "acme_team" in summary["metadata"]["partialDatasets"]["types"]


def test_summary_json_is_valid_json_with_partial_types(etl, api, mapping, tmp_path):
    run(etl, mapping(), api, tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["integrationStepResults"][1]["dependsOn"] == ["fetch-teams"]


def test_missing_total_falls_back_to_the_short_page_rule(etl, api, mapping, tmp_path):
    api.routes.insert(
        0,
        (
            "GET",
            re.compile("^/teams$"),
            lambda request: Response(
                200, {"items": TEAMS[int(request.query["offset"]) : int(request.query["offset"]) + 2]}
            ),
        ),
    )
    run(etl, mapping(), api, tmp_path / "out")
    assert [r.query["offset"] for r in api.log if r.path == "/teams"] == ["0", "2", "4"]
    teams = [e for e in read_output(tmp_path / "out")["entities"] if e["_type"] == "acme_team"]
    assert len(teams) == 5


def test_body_params_and_headers_are_rendered_as_an_api_expects(etl, api, mapping, tmp_path):
    seen = []
    api.routes.insert(
        0,
        (
            "POST",
            re.compile("^/search$"),
            lambda request: (seen.append(request), Response(200, [{"id": 7, "name": "Found"}]))[1],
        ),
    )
    text = BASE_MAPPING.replace(
        "    request: {path: /users}\n",
        """\
    request:
      method: POST
      path: /search
      params: {active: true, org: "{{ config.org }}"}
      headers: {X-Missing: "{{ config.missing }}"}
      body: {query: "name:{{ config.org }}", size: 50, filters: [{field: kind, value: user}]}
""",
    ).replace(
        "  org: {required: false, default: example}\n",
        "  org: {required: false, default: example}\n  missing: {required: false}\n",
    )
    result = run(etl, mapping(text), api, tmp_path / "out")
    assert result.exit_code == 0, result.stdout + result.stderr
    request = seen[0]
    assert request.query["active"] == "true" and request.query["org"] == "example"
    assert "x-missing" not in request.headers  # a null header is left out, not sent as "None"
    assert json.loads(request.body) == {
        "query": "name:example",
        "size": 50,
        "filters": [{"field": "kind", "value": "user"}],
    }


def test_auth_kind_without_its_fields_is_a_mapping_error(etl, mapping):
    text = BASE_MAPPING.replace('    params: {api_key: "{{ config.token }}"}\n', "    auth: {kind: bearer}\n")
    result = etl("validate", mapping(text))
    assert result.exit_code == 3
    assert "sources.api.auth: auth kind 'bearer' needs 'token'" in result.stderr


def test_max_pages_marks_the_step_partial(etl, api, mapping, tmp_path):
    text = BASE_MAPPING.replace(
        "pagination: {kind: offset, limit: 2, total: meta.total}",
        "pagination: {kind: offset, limit: 2, total: meta.total, max_pages: 2}",
    )
    result = run(etl, mapping(text), api, tmp_path / "out", "--step", "fetch-teams")
    assert result.exit_code == 1
    assert "stopped after max_pages=2, before the last page; the step's types are marked partial" in result.stdout
    output = read_output(tmp_path / "out")
    assert len(output["entities"]) == 4
    assert output["summary"]["metadata"]["partialDatasets"]["types"] == ["acme_team"]


def test_a_filter_that_fails_on_a_record_skips_it_with_a_warning(etl, api, mapping, tmp_path):
    text = BASE_MAPPING.replace('filter: "deleted != `true`"', "filter: \"!starts_with(name, 'Gone')\"")
    result = run(etl, mapping(text), api, tmp_path / "out", "--step", "fetch-users", "-vv")
    assert "record 3: filter: JMESPathTypeError" in result.stderr  # user 4 has no name
    keys = {e["_key"] for e in read_output(tmp_path / "out")["entities"]}
    assert "acme_user:1" in keys and "acme_user:3" not in keys


def test_mapped_relationship_of_an_entity_that_was_not_written_is_not_written(etl, api, mapping, tmp_path):
    text = (
        BASE_MAPPING
        + """\
    mapped_relationships:
      - class: IS
        source: acme_user
        type: acme_user_is_person
        target: {type: person, class: Person, properties: {email: email}}
        filter_keys: [[_class, email]]
"""
    )
    run(etl, mapping(text), api, tmp_path / "out", "--step", "fetch-users")
    mapped = [r for r in read_output(tmp_path / "out")["relationships"] if "_mapping" in r]
    # user 4 (no name) was refused by the graph checks: its mapped relationship went with it
    assert sorted(r["_mapping"]["sourceEntityKey"] for r in mapped) == ["acme_user:1", "acme_user:2"]


def test_incomplete_data_of_a_dependency_makes_dependents_partial(etl, api, mapping, tmp_path):
    text = BASE_MAPPING.replace(
        "pagination: {kind: offset, limit: 2, total: meta.total}",
        "pagination: {kind: offset, limit: 2, total: meta.total, max_pages: 1}",
    )
    result = run(etl, mapping(text), api, tmp_path / "out", "-vv")
    assert result.exit_code == 1
    assert (
        "fetch-teams, which this step depends on, has incomplete data; this step's types are marked partial too"
    ) in result.stderr
    summary = read_output(tmp_path / "out")["summary"]
    assert {"acme_team", "acme_user", "acme_team_has_user"} <= set(summary["metadata"]["partialDatasets"]["types"])
    assert [s["status"] for s in summary["integrationStepResults"]] == ["success", "success"]


def test_paging_is_only_for_paginated_requests(etl, mapping):
    text = BASE_MAPPING.replace("    request: {path: /users}", '    request: {path: "/users/{{ paging.page }}"}')
    result = etl("validate", mapping(text))
    assert result.exit_code == 3
    assert "'paging' is not available here: only requests of paginated steps see paging" in result.stderr
