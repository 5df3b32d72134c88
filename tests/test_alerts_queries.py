"""Query alert rules (JupiterOne's shape: named J1QL queries and a condition on their totals),
evaluated against the store; the shipped rules on the bundled runs; rules files mixing both
kinds; and the warning for a diff rule whose `where` names a property its type never has."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.errors import RulesError
from engine.store.connect import open_store
from engine.store.url import parse_store_url
from engine.tools.alerts import evaluate_query_rules, format_query_alerts, load_rules, parse_rules
from tests.conftest import ROOT
from tests.storetools import entity, write_run
from tests.test_query_helpers import bundled_runs, bundled_store  # noqa: F401 - the fixtures

RULES = ROOT / "rules"
DEC_1 = "2026-12-01T00:00:00Z"


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def alerts(etl, *args) -> tuple[int, list[dict], str]:
    result = etl("alerts", *args, "--format", "json")
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else [], result.stderr


def test_the_shipped_digicert_rules(etl, bundled_store):  # noqa: F811
    code, found, stderr = alerts(
        etl, RULES / "digicert-queries.yaml", "--store", bundled_store, "--as-of", "2027-01-20"
    )
    assert code == 1 and stderr == ""
    assert [a["rule"] for a in found] == ["certificate-expires-within-30-days", "certificate-expired-but-active"]
    expiring = found[0]["queries"]["expiring"]
    assert expiring["total"] == 1 and expiring["data"][0]["cert.displayName"] == "shop.example.com"
    assert [e["_key"] for e in found[1]["queries"]["expired"]["data"]] == [
        "digicert_certificate:100001",
        "digicert_certificate:100003",
    ]
    # the administrators were first seen by this load: "new" a day later no more
    code, found, _ = alerts(etl, RULES / "digicert-queries.yaml", "--store", bundled_store)
    assert "new-admin-user" in [a["rule"] for a in found]
    new_admins = next(a for a in found if a["rule"] == "new-admin-user")["queries"]["admins"]["data"]
    assert {e["email"] for e in new_admins} == {"alice.admin@example.com", "carol.manager@example.com"}


def test_the_shipped_nowsecure_rules(etl, bundled_store):  # noqa: F811
    code, found, _ = alerts(etl, RULES / "nowsecure-queries.yaml", "--store", bundled_store, "--as-of", "2030-01-01")
    assert code == 1
    by_rule = {a["rule"]: a for a in found}
    assert set(by_rule) == {"critical-open-findings", "users-not-employees"}  # nobody is new in 2030
    assert by_rule["critical-open-findings"]["queries"]["query0"]["data"] == [
        {
            "app.displayName": "Example Mobile",
            "app.platform": "ios",
            "finding.displayName": "Hardcoded Credentials",
            "finding.numericSeverity": 9.8,
        }
    ]
    assert by_rule["users-not-employees"]["queries"]["unlinked"]["data"] == [
        {"user.displayName": "Carol Viewer", "user.email": "carol@example.com", "user.active": False}
    ]
    text = etl("alerts", RULES / "nowsecure-queries.yaml", "--store", bundled_store, "--as-of", "2030-01-01").stdout
    assert "  [users-not-employees] query: queries.unlinked.total > 0 (unlinked: 1)\n" in text
    assert 'unlinked: user.displayName="Carol Viewer", user.email="carol@example.com", user.active=false' in text
    assert text.endswith("2 alerts.\n")


def test_every_shipped_rules_file_is_valid():
    for path in sorted(RULES.glob("*.yaml")):
        assert load_rules(path).rules, path
    kinds = {p.name: {r.on for r in load_rules(p).rules} for p in RULES.glob("*-queries.yaml")}
    assert kinds == {"digicert-queries.yaml": {"query"}, "nowsecure-queries.yaml": {"query"}}


JUPITERONE_SHAPE = """\
rules:
  - name: not-employees
    description: Users that are not people
    specVersion: 1
    pollingInterval: ONE_DAY
    question:
      queries:
        - name: users
          query: FIND nowsecure_user THAT !IS Person
          version: v1
        - name: people
          query: FIND Person
    operations:
      - when:
          type: FILTER
          specVersion: 1
          condition: [AND, [queries.users.total, ">", 0], [queries.people.total, ">=", 7]]
        actions:
          - type: SET_PROPERTY
            targetProperty: alertLevel
            targetValue: HIGH
"""


def test_jupiterones_rule_shape_and_the_compact_one(etl, bundled_store, tmp_path):  # noqa: F811
    code, found, _ = alerts(etl, write(tmp_path, JUPITERONE_SHAPE), "--store", bundled_store)
    assert code == 1 and found[0]["condition"] == "queries.users.total > 0 AND queries.people.total >= 7"
    assert {name: q["total"] for name, q in found[0]["queries"].items()} == {"users": 1, "people": 7}
    stricter = JUPITERONE_SHAPE.replace('">=", 7', '">", 7')
    assert alerts(etl, write(tmp_path, stricter), "--store", bundled_store)[:2] == (0, [])
    compact = """\
rules:
  - name: either
    queries:
      - FIND Team WITH name = 'Nobody'
      - {name: admins, query: "FIND User WITH admin = true"}
    condition: queries.query0.total > 0 OR (queries.admins.total === 2 AND queries.query0.total == 0)
  - name: default-condition
    queries: [FIND Team WITH name = 'Nobody']
"""
    code, found, _ = alerts(etl, write(tmp_path, compact), "--store", bundled_store)
    assert code == 1 and [a["rule"] for a in found] == ["either"]


def test_a_rules_problems_are_located_in_the_file(tmp_path):
    text = """\
rules:
  - name: broken-query
    queries:
      - name: q
        query: >-
          FIND User
            WITH = 1
  - name: bad-condition
    queries: [FIND User]
    condition: queries.nope.total > 0
  - name: mixed
    queries: [FIND User]
    on: added
  - name: bad-list
    queries: [FIND User]
    operations: [{when: {condition: [XOR, 1]}}]
  - name: no-queries
    queries: []
"""
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "r.yaml")
    assert str(caught.value).splitlines() == [
        "r.yaml:7:18: rules[0].queries[0].query: expected a property name, found '='",
        "r.yaml:10:16: rules[1].condition: no query is named 'nope' (queries: query0)",
        "r.yaml:13:5: rules[2].on: unknown field 'on'; a query rule has queries and a condition, not on/type/where",
        "r.yaml:16:37: rules[3].operations[0].when.condition: expected [queries.<name>.total, op, number] or "
        "[AND|OR, ...], not ['XOR', 1]",
        "r.yaml:18:14: rules[4].queries: must be a list of queries: - {name: query0, query: FIND ...}",
    ]


def test_which_rules_need_which_inputs(etl, bundled_store, tmp_path):  # noqa: F811
    queries = RULES / "nowsecure-queries.yaml"
    diffs = RULES / "nowsecure.yaml"
    result = etl("alerts", queries, env={"ETL_STORE": ""})
    assert result.exit_code == 2 and "has query rules (critical-open-findings" in result.stderr
    assert "give --store URL (or set ETL_STORE)" in result.stderr
    result = etl("alerts", diffs, "--store", bundled_store)
    assert result.exit_code == 2 and "give --old and --new" in result.stderr
    old = write_run(tmp_path / "old", [entity("u1", "acme_user", ("User",), admin=False)])
    result = etl("alerts", queries, "--old", old, "--new", old, "--store", bundled_store)
    assert result.exit_code == 2 and "--old and --new are not used" in result.stderr
    result = etl("alerts", diffs, "--old", old)
    assert result.exit_code == 2 and "give both --old and --new" in result.stderr


def test_a_file_with_both_kinds(etl, bundled_store, tmp_path):  # noqa: F811
    old = write_run(tmp_path / "old", [entity("u1", "acme_user", ("User",), admin=False)])
    new = write_run(tmp_path / "new", [entity("u1", "acme_user", ("User",), admin=True)])
    rules = write(
        tmp_path,
        """\
rules:
  - name: became-admin
    on: changed
    type: acme_user
    where: admin && !(_old.admin)
  - name: unlinked
    queries: [FIND nowsecure_user THAT !IS Person]
""",
    )
    code, found, _ = alerts(etl, rules, "--old", old, "--new", new, "--store", bundled_store)
    assert code == 1 and [(a["rule"], a["on"]) for a in found] == [("became-admin", "changed"), ("unlinked", "query")]
    text = etl("alerts", rules, "--old", old, "--new", new, "--store", bundled_store).stdout
    assert "[became-admin] changed acme_user u1" in text and "[unlinked] query:" in text


def test_a_where_naming_a_property_no_entity_has_is_warned_of(etl, tmp_path):
    old = write_run(tmp_path / "old", [entity("u1", "acme_user", ("User",), admin=False, roles=["a"])])
    new = write_run(tmp_path / "new", [entity("u1", "acme_user", ("User",), admin=True, roles=["a"])])
    rules = write(
        tmp_path,
        """\
rules:
  - name: typo
    on: changed
    type: acme_user
    where: adminn && !(_old.admin) && contains(roles, 'a') && roles[?starts_with(@, 'x')] && length(_old.rolez) > `0`
""",
    )
    result = etl("alerts", rules, "--old", old, "--new", new)
    assert result.stderr.splitlines() == [
        f"etl: warning: {rules}: rules[0] (typo): where names the property 'adminn', which no acme_user has in OLD "
        "or NEW (did you mean 'admin'?)",
        f"etl: warning: {rules}: rules[0] (typo): where names the property 'rolez', which no acme_user has in OLD "
        "or NEW (did you mean 'roles'?)",
    ]


def test_the_api_the_scheduler_calls(bundled_store):  # noqa: F811
    rules = load_rules(RULES / "nowsecure-queries.yaml")
    store = open_store(parse_store_url(bundled_store), create=False)
    try:
        report = evaluate_query_rules(rules, store, now=1893456000000)  # 2030-01-01
    finally:
        store.close()
    assert [a.rule for a in report.alerts] == ["critical-open-findings", "users-not-employees"]
    assert report.exit_code == 1 and report.to_json()[1]["queries"]["unlinked"]["total"] == 1
    assert format_query_alerts(report).splitlines()[0].endswith("as of 2030-01-01T00:00:00Z")


def test_a_run_with_a_store_asks_the_query_rules_after_each_load(etl, tmp_path):
    """etl run --store --alerts RULES: the J1QL rules are asked of the store once the run is in it;
    the run's exit code stays the run's. Rules on changes still need --keep; query rules --store."""
    from tests.conftest import MAPPINGS

    store = f"sqlite:///{tmp_path / 'graph.db'}"
    rules = ROOT / "rules" / "digicert-queries.yaml"
    args = ("run", MAPPINGS / "digicert.yaml", "--offline", "--output", tmp_path / "out", "--store", store)
    result = etl(*args, "--alerts", rules, "--as-of", "2027-01-20T00:00:00Z")
    assert result.exit_code == 0, result.stderr
    assert f"{rules}: store" in result.stdout and "certificate-expires-within-30-days" in result.stdout
    refused = etl("run", MAPPINGS / "digicert.yaml", "--offline", "--output", tmp_path / "o2", "--alerts", rules)
    assert refused.exit_code == 2 and "--alerts needs --store URL" in refused.stderr
    diff_rules = etl(*args, "--alerts", ROOT / "rules" / "digicert.yaml")
    assert diff_rules.exit_code == 2 and "--alerts needs --keep N" in diff_rules.stderr
