"""Fan-out of a fan-out and per-record detail requests, against a real local API
(tests/fakes/tenants.py): organisations -> projects -> issues, the issue list holding ids only.
The documented example runs as written; templates see the parent and its ancestors; detail
requests go through the bounded pool and keep the list's order; a failed detail follows its
status rules and the other records are kept; mistakes are mapping errors with their place."""

from __future__ import annotations

import copy

import pytest
import yaml

from tests.fakes.paging import EXAMPLES, partial_types, step_status, write_mapping
from tests.fakes.server import LocalApi, Response
from tests.fakes.tenants import TOKEN, WorkspaceApi
from tests.graphtools import read_output

EXAMPLE = EXAMPLES / "fanout-nested-detail.yaml"
ISSUES = [f"I-{n}" for n in range(1, 7)]


@pytest.fixture
def api():
    with WorkspaceApi() as server:
        yield server


def run(etl, mapping, api, out, *extra, command="run"):
    where = ("--output", out) if command == "run" else ()
    return etl(command, mapping, "--base-url", api.url, *where, "--config", f"apiToken={TOKEN}", *extra)


def example(tmp_path, change=None):
    """The example mapping, changed by ``change(data)`` and written beside the test."""
    data = yaml.safe_load(EXAMPLE.read_text())
    if change is not None:
        change(data)
    return write_mapping(tmp_path / "mapping.yaml", data)


def issue_step(data: dict) -> dict:
    return next(s for s in data["steps"] if s["id"] == "fetch-issues")


def entities(output: dict, entity_type: str) -> list[dict]:
    return [e for e in output["entities"] if e["_type"] == entity_type]


def test_the_example_walks_three_levels_and_reads_each_issue(etl, api, tmp_path):
    result = run(etl, EXAMPLE, api, tmp_path / "out")
    assert result.exit_code == 0, result.stdout + result.stderr
    output = read_output(tmp_path / "out")
    issues = entities(output, "example_issue")
    assert [i["issueId"] for i in issues] == ISSUES
    # the detail's fields, and the organisation two levels up through `ancestors`
    assert [(i["name"], i["severity"], i["organisation"]) for i in issues[:2]] == [
        ("Issue 1", "high", "Org o1"),
        ("Issue 2", "low", "Org o1"),
    ]
    assert issues[3]["organisation"] == "Org o2"
    relationships = {r["_key"] for r in output["relationships"]}
    assert "example_project:o1/p2|has|example_issue:I-3" in relationships
    assert "example_org:o2|has|example_project:o2/p4" in relationships
    # the list request of each project names its organisation and itself; then one GET per issue
    paths = [r.path for r in api.log]
    assert "/orgs/o1/projects/p3/issues" in paths and "/orgs/o2/projects/p4/issues" in paths
    assert sorted(p for p in paths if p.startswith("/issues/")) == [f"/issues/{i}" for i in ISSUES]
    assert partial_types(output) == []


def test_details_keep_the_order_of_the_list_whatever_answers_first(etl, api, tmp_path):
    api.tree = {"o1": {"p1": [f"I-{n}" for n in range(1, 13)]}}
    api.delays = {"I-1": 0.3, "I-2": 0.2, "I-5": 0.25}  # the first ones answer last
    result = run(etl, EXAMPLE, api, tmp_path / "out", "--concurrency", "4")
    assert result.exit_code == 0, result.stdout + result.stderr
    issues = entities(read_output(tmp_path / "out"), "example_issue")
    assert [i["issueId"] for i in issues] == [f"I-{n}" for n in range(1, 13)]
    # the details overlapped: some request started before an earlier one was answered
    details = [r for r in api.log if r.path.startswith("/issues/")]
    assert len(details) == 12


def test_a_failed_detail_fails_the_step_and_keeps_the_other_records(etl, api, tmp_path):
    api.fail_next("/issues/I-2", *[Response(500, {"error": "boom"})] * 10)
    result = run(etl, EXAMPLE, api, tmp_path / "out")
    assert result.exit_code == 1, result.stdout + result.stderr
    output = read_output(tmp_path / "out")
    assert [i["issueId"] for i in entities(output, "example_issue")] == ["I-1", *ISSUES[2:]]
    assert step_status(output, "fetch-issues") == "failure"
    assert "example_issue" in partial_types(output)
    assert "detail: GET" in result.stdout + result.stderr and "/issues/I-2" in result.stdout + result.stderr


def test_a_detail_status_rule_skips_a_record_quietly(etl, api, tmp_path):
    def gone_is_fine(data):
        issue_step(data)["detail"]["on_status"] = {404: "skip"}

    api.fail_next("/issues/I-4", Response(404, {"error": "deleted since it was listed"}))
    result = run(etl, example(tmp_path, gone_is_fine), api, tmp_path / "out")
    assert result.exit_code == 0, result.stdout + result.stderr
    output = read_output(tmp_path / "out")
    assert [i["issueId"] for i in entities(output, "example_issue")] == ["I-1", "I-2", "I-3", "I-5", "I-6"]
    assert step_status(output, "fetch-issues") == "success"


def test_a_detail_without_the_record_warns_and_skips_it(etl, api, tmp_path):
    api.fail_next("/issues/I-3", Response(200, {"unexpected": True}))
    result = run(etl, EXAMPLE, api, tmp_path / "out")
    assert result.exit_code == 1, result.stdout + result.stderr
    output = read_output(tmp_path / "out")
    assert "I-3" not in [i["issueId"] for i in entities(output, "example_issue")]
    assert "has no record at 'issue'" in result.stdout + result.stderr
    assert "example_issue" in partial_types(output)


def test_merge_keeps_the_listed_fields_under_the_details(etl, api, tmp_path):
    def merged(data):
        step = issue_step(data)
        step["detail"]["merge"] = True
        step["records"] = "issues[].{id: id, listedAs: 'summary'}"
        step["entities"][0]["properties"]["listedAs"] = "listedAs"

    result = run(etl, example(tmp_path, merged), api, tmp_path / "out")
    assert result.exit_code == 0, result.stdout + result.stderr
    issue = entities(read_output(tmp_path / "out"), "example_issue")[0]
    assert (issue["listedAs"], issue["name"]) == ("summary", "Issue 1")


def test_a_fourth_level_sees_every_ancestor(etl, api, tmp_path):
    """A step below the issues sees the issue as parent, and the project and organisation."""

    def comments(data):
        data["steps"].append(
            {
                "id": "fetch-issue-again",
                "depends_on": ["fetch-issues"],
                "for_each": "example_issue",
                "request": {"path": "/issues/{{ parent.issueId }}"},
                "records": "[issue]",
                "entities": [
                    {
                        "resource": "Lineage",
                        "type": "example_lineage",
                        "class": "Record",
                        "key": "lineage:{{ parent.issueId }}",
                        "properties": {
                            "name": "{{ ancestors.example_org.orgId }}/{{ ancestors.example_project.projectId }}"
                            "/{{ ancestors.example_issue.issueId }}",
                        },
                    }
                ],
            }
        )

    result = run(etl, example(tmp_path, comments), api, tmp_path / "out")
    assert result.exit_code == 0, result.stdout + result.stderr
    names = [e["name"] for e in entities(read_output(tmp_path / "out"), "example_lineage")]
    assert names == ["o1/p1/I-1", "o1/p1/I-2", "o1/p2/I-3", "o2/p4/I-4", "o2/p4/I-5", "o2/p4/I-6"]


def test_preview_shows_the_detail_requests(etl, api, tmp_path):
    result = run(etl, EXAMPLE, api, tmp_path, "--limit", "2", command="preview")
    assert result.exit_code == 0, result.stdout + result.stderr
    issues = result.stdout.split("== step fetch-issues")[1]
    assert "/orgs/o1/projects/p1/issues -> 200, 2 record(s) (for example_project:o1/p1)" in issues
    assert "/issues/I-1 -> 200 (detail of " in issues
    assert "'severity': 'high'" in issues or '"severity": "high"' in issues


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: issue_step(d)["entities"][0]["properties"].update(x="{{ ancestors.example_issue.id }}"),
            "steps[2].entities[0].properties.x: unknown ancestor type 'example_issue'",
        ),
        (
            lambda d: d["steps"][0]["entities"][0]["properties"].update(x="{{ ancestors.example_org }}"),
            "'ancestors' is not available here",
        ),
        (
            lambda d: d["steps"][0]["entities"][0]["properties"].update(x="{{ account }}"),
            "'account' is not available here",
        ),
        (
            lambda d: d["steps"][0].update(detail={"request": {"path": "/x/{{ paging.page }}"}}),
            "steps[0].detail.request.path: 'paging' is not available here",
        ),
        (
            lambda d: issue_step(d)["detail"].update(record="issue["),
            "steps[2].detail.record",
        ),
    ],
)
def test_mistakes_are_mapping_errors_with_their_place(etl, tmp_path, change, message):
    def changed(data):
        change(data)

    mapping = example(tmp_path, changed)
    result = etl("validate", mapping)
    assert result.exit_code == 3, result.stdout + result.stderr
    assert message in result.stderr, result.stderr


def test_a_detail_needs_the_steps_request(etl, tmp_path):
    def no_request(data):
        step = copy.deepcopy(data["steps"][0])
        del step["request"]
        step["records"] = "@"
        step["detail"] = {"request": {"path": "/issues/{{ record.id }}"}}
        data["steps"][0] = step

    result = etl("validate", example(tmp_path, no_request))
    assert result.exit_code == 3 and "detail needs the step's request" in result.stderr, result.stderr


def test_a_step_switched_off_before_the_fan_outs_changes_nothing(etl, api, tmp_path):
    """The parents a fan-out needs are kept until its step has run, whichever steps before it
    are switched off by their `when`."""

    def switched_off_first(data):
        off = {"id": "never", "when": "`false`", "request": {"path": "/orgs"}, "records": "orgs"}
        data["steps"].insert(0, off)

    result = run(etl, example(tmp_path, switched_off_first), api, tmp_path / "out")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert [i["issueId"] for i in entities(read_output(tmp_path / "out"), "example_issue")] == ISSUES


def test_a_detail_redirected_to_another_origin_carries_no_token(etl, api, tmp_path):
    """A detail request the API redirects elsewhere is refused (the source does not allow that
    origin): the other server never sees the token, and the other issues are kept."""
    with LocalApi() as elsewhere:
        elsewhere.route("GET", "/stolen", lambda request: Response(200, {"issue": {"id": "I-2"}}))
        api.fail_next("/issues/I-2", Response(302, headers={"Location": f"{elsewhere.url}/stolen"}))
        result = run(etl, EXAMPLE, api, tmp_path / "out")
        assert [r.headers.get("authorization") for r in elsewhere.log] == []
    assert result.exit_code == 1, result.stdout + result.stderr
    assert [i["issueId"] for i in entities(read_output(tmp_path / "out"), "example_issue")] == ["I-1", *ISSUES[2:]]
    assert "allowed_origins" in result.stdout + result.stderr and TOKEN not in result.stdout + result.stderr
