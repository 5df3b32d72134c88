"""`etl diff` and `etl alerts`: comparing two output directories, and alert rules over the
comparison - unit level on hand-made directories, and end to end: two runs of a vendor a
day apart (local look-alike APIs) give the exact diff and only the intended alerts."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from engine.output import OutputDir
from engine.tools.alerts import load_rules
from engine.tools.diff import Comparison, same
from tests.conftest import MAPPINGS, ROOT
from tests.fakes import digicert, nowsecure
from tests.fakes.server import LocalApi

RULES = ROOT / "rules"


# ----------------------------------------------------------------------------------------
# Hand-made output directories


def entity(key: str, graph_type: str = "acme_user", **props) -> dict:
    obj = {"_key": key, "_type": graph_type, "_class": ["User"], "name": key, "displayName": key}
    obj.update(props)
    return obj


def relationship(source: str, target: str, **props) -> dict:
    obj = {
        "_key": f"{source}|has|{target}",
        "_type": "acme_account_has_user",
        "_class": "HAS",
        "_fromEntityKey": source,
        "_toEntityKey": target,
        "displayName": "HAS",
    }
    obj.update(props)
    return obj


def write_output(path: Path, entities=(), relationships=(), *, partial=(), start: int = 1_700_000_000_000) -> Path:
    """A directory laid out as `etl run` writes it: one file per type and collection."""
    for collection, objects in (("entities", entities), ("relationships", relationships)):
        by_type: dict[str, list] = {}
        for obj in objects:
            by_type.setdefault(obj["_type"], []).append(obj)
        for number, (graph_type, batch) in enumerate(sorted(by_type.items())):
            directory = path / "graph" / "fetch-things" / collection
            directory.mkdir(parents=True, exist_ok=True)
            (directory / f"{graph_type}-{number}.json").write_text(json.dumps({collection: batch}))
    summary = {
        "integrationStepResults": [
            {
                "id": "fetch-things",
                "name": "Fetch things",
                "dependsOn": [],
                "declaredTypes": [],
                "partialTypes": [],
                "encounteredTypes": [],
                "encounteredTypeCounts": {},
                "status": "success",
                "startTime": start,
                "endTime": start + 1234,
                "duration": 1234,
            }
        ],
        "metadata": {"partialDatasets": {"types": sorted(partial)}},
    }
    path.mkdir(parents=True, exist_ok=True)
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def raw(value) -> list:
    return [{"name": "default", "rawData": value}]


ACCOUNT = "acme_account:1"
ALICE = entity("acme_user:alice", admin=True, roles=["Admin"], _rawData=raw({"id": "alice", "seen": 1}))
BOB = entity("acme_user:bob", admin=False, roles=["Viewer"], _rawData=raw({"id": "bob"}))
CAROL = entity("acme_user:carol", admin=False, roles=[], _rawData=raw({"id": "carol"}))


@pytest.fixture
def pair(tmp_path):
    """OLD: alice, bob, carol. NEW: alice (only raw data moved), bob became admin, carol
    gone, dave added."""
    old = write_output(
        tmp_path / "old",
        [entity(ACCOUNT, "acme_account", _class=["Account"]), ALICE, BOB, CAROL],
        [relationship(ACCOUNT, k["_key"]) for k in (ALICE, BOB, CAROL)],
    )
    alice = dict(ALICE, _rawData=raw({"id": "alice", "seen": 2}))
    bob = dict(BOB, admin=True, roles=["Viewer", "Admin"], title="Boss")
    dave = entity("acme_user:dave", admin=False, roles=["Viewer"])
    new = write_output(
        tmp_path / "new",
        [entity(ACCOUNT, "acme_account", _class=["Account"]), alice, bob, dave],
        [relationship(ACCOUNT, k["_key"]) for k in (alice, bob, dave)],
        start=1_700_086_400_000,
    )
    return old, new


# ----------------------------------------------------------------------------------------
# etl diff


PAIR_DIFF = {
    "entities": {
        "added": ["acme_user:dave"],
        "removed": ["acme_user:carol"],
        "changed": [
            {
                "_key": "acme_user:bob",
                "changes": {
                    "admin": {"old": False, "new": True},
                    "roles": {"old": ["Viewer"], "new": ["Viewer", "Admin"]},
                    "title": {"old": None, "new": "Boss"},
                },
            }
        ],
    },
    "relationships": {
        "added": ["acme_account:1|has|acme_user:dave"],
        "removed": ["acme_account:1|has|acme_user:carol"],
        "changed": [],
    },
}


def test_diff_json_lists_added_removed_and_changed_by_key(etl, pair):
    old, new = pair
    result = etl("diff", old, new, "--format", "json")
    assert result.exit_code == 1, result.stderr
    assert json.loads(result.stdout) == PAIR_DIFF
    # Exactly this shape and order: entities then relationships; added, removed, changed.
    assert list(json.loads(result.stdout)) == ["entities", "relationships"]
    assert list(json.loads(result.stdout)["entities"]) == ["added", "removed", "changed"]


def test_diff_text_output(etl, pair):
    old, new = pair
    result = etl("diff", old, new)
    assert result.exit_code == 1
    assert result.stdout == (
        f"--- {old}\n"
        f"+++ {new}\n"
        "Entities: 1 added, 1 removed, 1 changed\n"
        "  ~ acme_user:bob  (acme_user)\n"
        "      admin: false -> true\n"
        '      roles: ["Viewer"] -> ["Viewer", "Admin"]\n'
        '      title: null -> "Boss"\n'
        "  - acme_user:carol  (acme_user)\n"
        "  + acme_user:dave  (acme_user)\n"
        "Relationships: 1 added, 1 removed, 0 changed\n"
        "  - acme_account:1|has|acme_user:carol  (acme_account_has_user)\n"
        "  + acme_account:1|has|acme_user:dave  (acme_account_has_user)\n"
        "Partial types (never reported as removed): none\n"
        "Differences found.\n"
    )


def test_identical_runs_exit_0(etl, tmp_path):
    old = write_output(tmp_path / "old", [ALICE, BOB])
    new = write_output(tmp_path / "new", [BOB, dict(ALICE, _rawData=raw({"other": True}))], start=1)
    result = etl("diff", old, new, "--format", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        c: {"added": [], "removed": [], "changed": []} for c in ("entities", "relationships")
    }
    text = etl("diff", old, new)
    assert text.exit_code == 0 and text.stdout.endswith("No differences.\n")


def test_raw_data_is_ignored_and_never_loaded(pair):
    old, new = pair
    events = list(Comparison(OutputDir.open(old), OutputDir.open(new), unchanged=True))
    assert events and all("_rawData" not in (e.old or {}) and "_rawData" not in (e.new or {}) for e in events)
    alice = next(e for e in events if e.key == "acme_user:alice")
    assert alice.kind == "unchanged"  # its raw data moved, nothing else


def test_ignore_option_leaves_a_property_out(etl, pair):
    old, new = pair
    result = etl("diff", old, new, "--format", "json", "--ignore", "roles", "--ignore", "title")
    changed = json.loads(result.stdout)["entities"]["changed"]
    assert changed == [{"_key": "acme_user:bob", "changes": {"admin": {"old": False, "new": True}}}]
    assert (
        "Ignored properties: roles, title (and _rawData)"
        in etl("diff", old, new, "--ignore", "roles", "--ignore", "title").stdout
    )


def test_json_types_are_compared_strictly():
    assert not same(True, 1) and not same(0, False) and not same([1], [True])
    assert same(1, 1.0) and same({"a": [1, "x"]}, {"a": [1.0, "x"]}) and not same("1", 1)
    assert not same(None, False) and not same({"a": 1}, {"a": 1, "b": 2})


def test_type_change_and_class_change_are_property_changes(etl, tmp_path):
    old = write_output(tmp_path / "old", [entity("acme_thing:1", "acme_thing", flag=1)])
    new = write_output(tmp_path / "new", [entity("acme_thing:1", "acme_gadget", _class=["Device"], flag=True)])
    result = etl("diff", old, new, "--format", "json")
    assert json.loads(result.stdout)["entities"]["changed"] == [
        {
            "_key": "acme_thing:1",
            "changes": {
                "_class": {"old": ["User"], "new": ["Device"]},
                "_type": {"old": "acme_thing", "new": "acme_gadget"},
                "flag": {"old": 1, "new": True},
            },
        }
    ]


@pytest.mark.parametrize("side", ["old", "new"])
def test_partial_types_are_never_reported_as_removed(etl, tmp_path, side):
    old = write_output(
        tmp_path / "old",
        [ALICE, BOB, entity("acme_device:1", "acme_device")],
        [relationship(ACCOUNT, ALICE["_key"]), relationship(ACCOUNT, BOB["_key"])],
        partial=["acme_user", "acme_account_has_user"] if side == "old" else [],
    )
    # NEW lost bob (and his relationship) and the device; users are partial in one run.
    new = write_output(
        tmp_path / "new",
        [dict(ALICE, admin=False)],
        [relationship(ACCOUNT, ALICE["_key"])],
        partial=["acme_user", "acme_account_has_user"] if side == "new" else [],
    )
    result = etl("diff", old, new, "--format", "json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "entities": {
            "added": [],
            "removed": ["acme_device:1"],  # not partial: reported
            "changed": [
                {
                    "_key": "acme_user:alice",  # partial types still show changes
                    "changes": {"admin": {"old": True, "new": False}},
                }
            ],
        },
        "relationships": {"added": [], "removed": [], "changed": []},
    }
    text = etl("diff", old, new).stdout
    assert (
        "Partial types (never reported as removed): acme_account_has_user (1 in OLD only, not reported), "
        "acme_user (1 in OLD only, not reported)\n"
    ) in text
    assert "acme_user:bob" not in text


def test_partial_type_with_nothing_missing_is_still_named(etl, tmp_path):
    old = write_output(tmp_path / "old", [ALICE])
    new = write_output(tmp_path / "new", [ALICE], partial=["acme_user"])
    result = etl("diff", old, new)
    assert result.exit_code == 0
    assert "Partial types (never reported as removed): acme_user\n" in result.stdout


def test_an_empty_graph_is_an_output_directory(etl, tmp_path):
    old = write_output(tmp_path / "old", [])
    new = write_output(tmp_path / "new", [ALICE])
    assert json.loads(etl("diff", old, new, "--format", "json").stdout)["entities"]["added"] == ["acme_user:alice"]


def test_directory_that_is_not_an_output_directory(etl, tmp_path):
    good = write_output(tmp_path / "good", [ALICE])
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    (tmp_path / "file.json").write_text("{}")
    cases = {
        tmp_path / "missing": "NEW {} does not exist; give a directory written by `etl run MAPPING --output DIR`",
        tmp_path / "notes": "NEW {} is not an etl output directory: it has no summary.json",
        tmp_path / "file.json": "NEW {} is not a directory",
    }
    for path, message in cases.items():
        result = etl("diff", good, path)
        assert result.exit_code == 3, path
        assert result.stderr.startswith("etl: error: " + message.format(path)), result.stderr
        assert result.stdout == ""
    result = etl("diff", tmp_path / "missing", good)
    assert result.exit_code == 3 and result.stderr.startswith(f"etl: error: OLD {tmp_path / 'missing'} does not")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "summary.json").write_text("{nope"), "summary.json: cannot read it as JSON"),
        (lambda d: (d / "summary.json").write_text("[]"), "summary.json is not a run summary"),
        (
            lambda d: (d / "summary.json").write_text(
                json.dumps({"integrationStepResults": [], "metadata": {"partialDatasets": {"types": "acme_user"}}})
            ),
            "metadata.partialDatasets.types is not a list of type names",
        ),
        (lambda d: next((d / "graph").rglob("*.json")).write_text('{"things": []}'), "is not a graph file"),
        (
            lambda d: next((d / "graph").rglob("*.json")).write_text('{"entities": [{"_type": "x"}]}'),
            "entities[0] is not a graph object",
        ),
        (lambda d: next((d / "graph").rglob("*.json")).write_text("not json"), "cannot read it as JSON"),
        (
            lambda d: next((d / "graph").rglob("*.json")).write_text(json.dumps({"entities": [ALICE, ALICE]})),
            "two entities have the _key 'acme_user:alice'",
        ),
    ],
)
def test_malformed_output_directory_is_named(etl, tmp_path, damage, message):
    good = write_output(tmp_path / "good", [ALICE])
    bad = write_output(tmp_path / "bad", [ALICE])
    damage(bad)
    result = etl("diff", good, bad)
    assert result.exit_code == 3
    assert message in result.stderr and str(bad) in result.stderr


def test_bad_format_is_a_usage_error(etl, pair):
    old, new = pair
    assert etl("diff", old, new, "--format", "yaml").exit_code == 2
    assert etl("diff", old).exit_code == 2


def test_diff_help_documents_raw_data_partial_types_and_exit_codes(etl):
    text = etl("diff", "--help").stdout
    for expected in (
        "_rawData",
        "ignored",
        "never reported as removed",
        "0  no differences",
        "1  differences found",
        "3  OLD or NEW is not a readable etl output directory",
        "etl diff yesterday/ today/",
    ):
        assert expected in text


# ----------------------------------------------------------------------------------------
# etl alerts: rules files


def write_rules(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_rules_are_valid():
    for path in sorted(RULES.glob("*.yaml")):
        rules = load_rules(path)
        assert rules.rules, path
    assert {p.name for p in RULES.glob("*.yaml")} >= {"digicert.yaml", "nowsecure.yaml"}


def test_missing_rules_file(etl, pair, tmp_path):
    old, new = pair
    result = etl("alerts", tmp_path / "nope.yaml", "--old", old, "--new", new)
    assert result.exit_code == 4
    assert result.stderr == f"etl: error: cannot read rules file {tmp_path / 'nope.yaml'}: No such file or directory\n"


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "rules:\n  - name: a\n    on: added\n    type: acme_user\n    where: admin && (roles\n",
            "rules.yaml:5:27: rules[0].where: JMESPath syntax error: unexpected end of expression",
        ),
        (
            'rules:\n  - name: a\n    on: added\n    type: acme_user\n    where: "admin && nope(roles)"\n',
            "rules.yaml:5:22: rules[0].where: unknown JMESPath function 'nope()'",
        ),
        (
            "rules:\n  - name: a\n    on: added\n    type: acme_user\n    where: |\n      admin &&\n      @@ == `1`\n",
            "rules.yaml:7:8: rules[0].where: JMESPath syntax error: Unexpected token: @",
        ),
        (
            "rules:\n  - name: a\n    on: added\n    type: acme_user\n    where: config('x')\n",
            "rules.yaml:5:20: rules[0].where: unknown config field 'x'; none are declared",
        ),
        (
            "rules:\n  - name: a\n    on: create\n    type: acme_user\n",
            "rules.yaml:3:9: rules[0].on: must be one of added, removed, changed, became, not 'create'",
        ),
        (
            "rules:\n  - name: a\n    on: added\n    typ: acme_user\n",
            "rules.yaml:4:5: rules[0].typ: unknown field 'typ' (did you mean 'type'?)",
        ),
        ("rules:\n  - name: a\n    on: added\n", "rules.yaml:2:5: rules[0]: missing required field 'type'"),
        (
            "rules:\n  - name: a\n    on: became\n    type: acme_user\n",
            "rules.yaml:2:5: rules[0]: a rule 'on: became' needs a 'where' predicate",
        ),
        (
            "rules:\n  - {name: a, on: added, type: t}\n  - {name: a, on: removed, type: t}\n",
            "rules.yaml:3:12: rules[1].name: duplicate rule name 'a' (also rules[0])",
        ),
        (
            "rules:\n  - name: a\n    on: added\n    type: acme_user\n    where: 42\n",
            "rules.yaml:5:12: rules[0].where: must be a non-empty string, not an integer",
        ),
        ("rules:\n  - just a string\n", "rules.yaml:2:5: rules[0]: a rule must be a mapping, not a string"),
        ("rules: {name: a}\n", "rules.yaml:1:8: rules: must be a list of rules, not a mapping"),
        ("- name: a\n", "rules.yaml:1:1: a rules file must be a mapping with a 'rules' list at the top level"),
        ("rule:\n  - name: a\n", "rules.yaml:1:1: rule: unknown key 'rule' (did you mean 'rules'?)"),
        (
            "rules:\n  - name: a\n    name: b\n",
            "rules.yaml:3:5: rules[0].name: duplicate key 'name' (first defined on line 2)",
        ),
        ("rules: [\n", "rules.yaml:2:1: YAML syntax error"),
        ("", "rules.yaml:1:1: the rules file is empty"),
    ],
)
def test_invalid_rules_are_located(etl, pair, tmp_path, text, expected):
    old, new = pair
    rules = write_rules(tmp_path, text)
    result = etl("alerts", rules, "--old", old, "--new", new)
    assert result.exit_code == 4, result.stdout
    assert expected.replace("rules.yaml", str(rules)) in result.stderr, result.stderr
    assert result.stdout == ""


def test_every_problem_of_a_rules_file_is_reported(etl, pair, tmp_path):
    old, new = pair
    rules = write_rules(
        tmp_path, "rules:\n  - name: a\n    on: addded\n    type: t\n    where: a ||\n  - nmae: b\n    on: changed\n"
    )
    result = etl("alerts", rules, "--old", old, "--new", new)
    assert result.exit_code == 4
    assert result.stderr.splitlines() == [
        f"{rules}:3:9: rules[0].on: must be one of added, removed, changed, became, not 'addded' "
        f"(did you mean 'added'?)",
        f"{rules}:5:16: rules[0].where: JMESPath syntax error: unexpected end of expression",
        f"{rules}:6:5: rules[1].nmae: unknown field 'nmae' (did you mean 'name'?)",
        f"{rules}:6:5: rules[1]: missing required field 'type'",
    ]


# ----------------------------------------------------------------------------------------
# etl alerts: evaluation


PAIR_RULES = """\
rules:
  - name: new-user
    on: added
    type: acme_user
  - name: user-became-admin
    description: A user was given the Admin role
    on: changed
    type: acme_user
    where: admin && !(_old.admin)
  - name: roles-changed
    on: changed
    type: acme_user
    where: contains(_changed, 'roles') && length(roles) > length(_old.roles)
  - name: user-removed
    on: removed
    type: acme_user
  - name: admin-removed
    on: removed
    type: acme_user
    where: admin
  - name: never
    on: added
    type: acme_user
    where: admin
"""


def test_alerts_json(etl, pair, tmp_path):
    old, new = pair
    result = etl("alerts", write_rules(tmp_path, PAIR_RULES), "--old", old, "--new", new, "--format", "json")
    assert result.exit_code == 1, result.stderr
    bob_changes = PAIR_DIFF["entities"]["changed"][0]["changes"]
    assert json.loads(result.stdout) == [
        {
            "rule": "new-user",
            "on": "added",
            "_type": "acme_user",
            "_key": "acme_user:dave",
            "displayName": "acme_user:dave",
            "description": None,
        },
        {
            "rule": "user-became-admin",
            "on": "changed",
            "_type": "acme_user",
            "_key": "acme_user:bob",
            "displayName": "acme_user:bob",
            "description": "A user was given the Admin role",
            "changes": bob_changes,
        },
        {
            "rule": "roles-changed",
            "on": "changed",
            "_type": "acme_user",
            "_key": "acme_user:bob",
            "displayName": "acme_user:bob",
            "description": None,
            "changes": bob_changes,
        },
        {
            "rule": "user-removed",
            "on": "removed",
            "_type": "acme_user",
            "_key": "acme_user:carol",
            "displayName": "acme_user:carol",
            "description": None,
        },
    ]
    assert result.stderr == ""


def test_alerts_text(etl, pair, tmp_path):
    old, new = pair
    rules = write_rules(tmp_path, PAIR_RULES)
    result = etl("alerts", rules, "--old", old, "--new", new, "--as-of", "2026-11-24T09:00:00Z")
    assert result.exit_code == 1
    assert result.stdout == (
        f"{rules}: {old} -> {new}, as of 2026-11-24T09:00:00Z\n"
        '  [new-user] added acme_user acme_user:dave "acme_user:dave"\n'
        '  [user-became-admin] changed acme_user acme_user:bob "acme_user:bob"\n'
        "      A user was given the Admin role\n"
        "      admin: false -> true\n"
        '      roles: ["Viewer"] -> ["Viewer", "Admin"]\n'
        '      title: null -> "Boss"\n'
        '  [roles-changed] changed acme_user acme_user:bob "acme_user:bob"\n'
        "      admin: false -> true\n"
        '      roles: ["Viewer"] -> ["Viewer", "Admin"]\n'
        '      title: null -> "Boss"\n'
        '  [user-removed] removed acme_user acme_user:carol "acme_user:carol"\n'
        "4 alerts.\n"
    )


def test_no_alerts_exit_0(etl, pair, tmp_path):
    old, new = pair
    rules = write_rules(tmp_path, "rules:\n  - {name: a, on: added, type: acme_user, where: admin}\n")
    result = etl("alerts", rules, "--old", old, "--new", new)
    assert result.exit_code == 0 and result.stdout.endswith("No alerts.\n")
    assert json.loads(etl("alerts", rules, "--old", old, "--new", new, "--format", "json").stdout) == []


def test_removed_rules_never_fire_for_partial_types(etl, tmp_path):
    old = write_output(tmp_path / "old", [ALICE, BOB, entity("acme_device:1", "acme_device")])
    new = write_output(tmp_path / "new", [], partial=["acme_user"])
    rules = write_rules(
        tmp_path,
        "rules:\n  - {name: gone, on: removed, type: acme_user}\n"
        "  - {name: device-gone, on: removed, type: acme_device}\n",
    )
    result = etl("alerts", rules, "--old", old, "--new", new, "--format", "json")
    assert [(a["rule"], a["_key"]) for a in json.loads(result.stdout)] == [("device-gone", "acme_device:1")]
    text = etl("alerts", rules, "--old", old, "--new", new).stdout
    assert "Partial types (never reported as removed): acme_user\n" in text


BECAME_RULES = """\
rules:
  - name: expires-within-30-days
    on: became
    type: acme_certificate
    where: expiresOn > now_ms() && expiresOn <= days_ago_ms(`-30`)
"""
DAY = 86_400_000
DAY1 = 1_795_510_800_000  # 2026-11-24T09:00:00Z


def certificates(tmp_path: Path) -> tuple[Path, Path]:
    """cert 1 expires in 30.5 days as of DAY1 - 1 day; cert 2 is re-issued with a short
    validity; cert 3 already expired; cert 4 is new and expires soon."""

    def cert(number, expires, **extra):
        return entity(
            f"acme_certificate:{number}", "acme_certificate", _class=["Certificate"], expiresOn=expires, **extra
        )

    old = write_output(
        tmp_path / "old",
        [cert(1, DAY1 + 29 * DAY + DAY // 2), cert(2, DAY1 + 300 * DAY), cert(3, DAY1 - 10 * DAY)],
        start=DAY1 - DAY,
    )
    new = write_output(
        tmp_path / "new",
        [cert(1, DAY1 + 29 * DAY + DAY // 2), cert(2, DAY1 + 20 * DAY), cert(3, DAY1 - 10 * DAY), cert(4, DAY1 + DAY)],
        start=DAY1,
    )
    return old, new


def test_became_sees_time_passing_with_each_runs_clock(etl, tmp_path):
    old, new = certificates(tmp_path)
    rules = write_rules(tmp_path, BECAME_RULES)
    result = etl(
        "alerts",
        rules,
        "--old",
        old,
        "--new",
        new,
        "--format",
        "json",
        "--as-of",
        "2026-11-24T09:00:00Z",
        "--old-as-of",
        "2026-11-23T09:00:00Z",
    )
    alerts = json.loads(result.stdout)
    assert [(a["_key"], a["changes"]) for a in alerts] == [
        ("acme_certificate:1", {}),  # nothing changed but the clock
        ("acme_certificate:2", {"expiresOn": {"old": DAY1 + 300 * DAY, "new": DAY1 + 20 * DAY}}),
    ]  # 3 expired long ago; 4 is new (an `added` rule's business)
    assert result.exit_code == 1
    # OLD's clock defaults to --as-of moved back by the time between the runs' starts (one day).
    default = etl("alerts", rules, "--old", old, "--new", new, "--format", "json", "--as-of", "2026-11-24T09:00:00Z")
    assert json.loads(default.stdout) == alerts
    assert (
        "(OLD as of 2026-11-23T09:00:00Z)"
        in etl("alerts", rules, "--old", old, "--new", new, "--as-of", "2026-11-24T09:00:00Z").stdout
    )
    # With one clock for both sides only the re-issued certificate became due.
    same_clock = etl(
        "alerts",
        rules,
        "--old",
        old,
        "--new",
        new,
        "--format",
        "json",
        "--as-of",
        "2026-11-24T09:00:00Z",
        "--old-as-of",
        "2026-11-24T09:00:00Z",
    )
    assert [a["_key"] for a in json.loads(same_clock.stdout)] == ["acme_certificate:2"]


def test_as_of_makes_date_predicates_reproducible(etl, tmp_path):
    old, new = certificates(tmp_path)
    rules = write_rules(
        tmp_path,
        "rules:\n  - name: soon\n    on: added\n    type: acme_certificate\n"
        "    where: expiresOn <= days_ago_ms(`-2`)\n",
    )
    assert (
        json.loads(
            etl(
                "alerts", rules, "--old", old, "--new", new, "--format", "json", "--as-of", "2026-11-24T09:00:00Z"
            ).stdout
        )[0]["_key"]
        == "acme_certificate:4"
    )
    assert (
        json.loads(
            etl(
                "alerts", rules, "--old", old, "--new", new, "--format", "json", "--as-of", "2026-11-20T09:00:00Z"
            ).stdout
        )
        == []
    )
    bad = etl("alerts", rules, "--old", old, "--new", new, "--as-of", "next tuesday")
    assert bad.exit_code == 2 and "'next tuesday' is not an ISO-8601 time" in bad.stderr


def test_a_rule_that_fails_on_an_entity_is_named_and_the_rest_still_reported(etl, tmp_path):
    old = write_output(tmp_path / "old", [])
    new = write_output(
        tmp_path / "new", [entity("acme_user:a", lastLogin="2026-01-01"), entity("acme_user:b", lastLogin=True)]
    )
    rules = write_rules(
        tmp_path,
        "rules:\n  - name: logged-in\n    on: added\n    type: acme_user\n    where: to_epoch_ms(lastLogin) > `0`\n",
    )
    result = etl("alerts", rules, "--old", old, "--new", new, "--format", "json")
    assert result.exit_code == 5
    assert [a["_key"] for a in json.loads(result.stdout)] == ["acme_user:a"]
    assert result.stderr.startswith(
        f"etl: error: {rules}: rules[0] (logged-in): where 'to_epoch_ms(lastLogin) > `0`' failed on acme_user:b: "
    )


def test_a_rule_type_never_seen_is_a_warning(etl, pair, tmp_path):
    old, new = pair
    rules = write_rules(tmp_path, "rules:\n  - {name: a, on: added, type: acme_usr}\n")
    result = etl("alerts", rules, "--old", old, "--new", new)
    assert result.exit_code == 0
    assert result.stderr == (
        f"etl: warning: {rules}: rules[0] (a): no entity of type 'acme_usr' in OLD or NEW (did you mean 'acme_user'?)\n"
    )


def test_alerts_on_a_directory_that_is_not_an_output_directory(etl, pair, tmp_path):
    old, _ = pair
    rules = write_rules(tmp_path, PAIR_RULES)
    result = etl("alerts", rules, "--old", old, "--new", tmp_path / "nothing")
    assert result.exit_code == 3 and "NEW" in result.stderr and "does not exist" in result.stderr
    assert etl("alerts", rules, "--old", old).exit_code == 2  # --new is required


def test_alerts_help_documents_rules_and_exit_codes(etl):
    text = etl("alerts", "--help").stdout
    for expected in (
        "added | removed | changed | became",
        "_old",
        "--as-of",
        "0  no alert",
        "1  at least one alert",
        "4  the rules file is missing or invalid",
        "docs/monitoring.md",
    ):
        assert expected in text


# ----------------------------------------------------------------------------------------
# End to end: two runs of a vendor a day apart


DIGICERT = MAPPINGS / "digicert.yaml"
NOWSECURE = MAPPINGS / "nowsecure.yaml"
DAY_1, DAY_2 = "2026-11-23T09:00:00Z", "2026-11-24T09:00:00Z"


def run_digicert(etl, data: digicert.DigiCertData, out: Path):
    with LocalApi() as api:
        digicert.install(api, data)
        return etl(
            "run",
            DIGICERT,
            "--base-url",
            f"{api.url}/services/v2",
            "--output",
            out,
            env={"DIGICERT_API_KEY": digicert.API_KEY},
        )


def digicert_days() -> tuple[digicert.DigiCertData, digicert.DigiCertData]:
    """Day 1: the look-alike's data plus a certificate expiring 2026-12-24 (31 days after
    day 1). Day 2: a new administrator, a departed user removed, a user made
    administrator, another's role changed, www.example.com renewed (a new order; the old
    one flagged renewed), and that certificate one day closer to expiry (raw data only)."""
    day1 = digicert.DigiCertData()
    day1.orders.append(
        digicert._order(
            100006,
            500006,
            "mail.example.com",
            ["mail.example.com"],
            "issued",
            "2025-12-24T10:00:00+00:00",
            digicert.SSL_PLUS,
            certificate={"valid_till": "2026-12-24", "days_remaining": 31},
        )
    )
    day2 = copy.deepcopy(day1)
    day2.users = [u for u in day2.users if u["id"] != 2000004]  # Dan left
    bob = next(u for u in day2.users if u["id"] == 2000002)
    bob["access_roles"] = [{"id": 1, "name": "Administrator"}]
    erin = next(u for u in day2.users if u["id"] == 2000005)
    erin["access_roles"] = [{"id": 2, "name": "Manager"}]
    day2.users.append(
        digicert._user(
            2000006,
            "Frank",
            "Root",
            "frank.root@example.com",
            [(1, "Administrator")],
            last_login_date="2026-11-24T08:00:00+00:00",
        )
    )
    day2.orders[0]["is_renewed"] = True
    day2.orders.append(
        digicert._order(
            100007,
            500007,
            "www.example.com",
            ["www.example.com", "example.com"],
            "issued",
            "2026-11-23T20:00:00+00:00",
            digicert.SSL_PLUS,
            certificate={"valid_till": "2027-06-30", "days_remaining": 218},
        )
    )
    day2.orders[-2]["certificate"]["days_remaining"] = 30  # mail.example.com
    return day1, day2


DIGICERT_DIFF = {
    "entities": {
        "added": ["digicert_certificate:100007", "digicert_user:1234567:2000006"],
        "removed": ["digicert_user:1234567:2000004"],
        "changed": [
            {"_key": "digicert_certificate:100001", "changes": {"renewed": {"old": False, "new": True}}},
            {
                "_key": "digicert_user:1234567:2000002",
                "changes": {
                    "admin": {"old": False, "new": True},
                    "roles": {"old": ["Finance Manager"], "new": ["Administrator"]},
                },
            },
            {"_key": "digicert_user:1234567:2000005", "changes": {"roles": {"old": ["User"], "new": ["Manager"]}}},
        ],
    },
    "relationships": {
        "added": [
            "digicert_account:1234567|has|digicert_certificate:100007",
            "digicert_account:1234567|has|digicert_user:1234567:2000006",
            "digicert_certificate:100007|has|REVERSE:_class=Domain:domainName=example.com",
            "digicert_certificate:100007|has|REVERSE:_class=Domain:domainName=www.example.com",
        ],
        "removed": ["digicert_account:1234567|has|digicert_user:1234567:2000004"],
        "changed": [],
    },
}

DIGICERT_ALERTS = [
    {
        "rule": "new-admin-user",
        "on": "added",
        "_type": "digicert_user",
        "_key": "digicert_user:1234567:2000006",
        "displayName": "frank.root@example.com",
        "description": "A new DigiCert user has the Administrator role",
    },
    {
        "rule": "user-became-admin",
        "on": "changed",
        "_type": "digicert_user",
        "_key": "digicert_user:1234567:2000002",
        "displayName": "bob.finance@example.com",
        "description": "A DigiCert user was given the Administrator role",
        "changes": DIGICERT_DIFF["entities"]["changed"][1]["changes"],
    },
    {
        "rule": "certificate-expires-within-30-days",
        "on": "became",
        "_type": "digicert_certificate",
        "_key": "digicert_certificate:100006",
        "displayName": "mail.example.com",
        "description": "An active certificate now expires within 30 days",
        "changes": {},
    },
]


def test_digicert_two_days_give_the_exact_diff_and_only_the_intended_alerts(etl, tmp_path):
    day1, day2 = digicert_days()
    for data, out in ((day1, tmp_path / "day1"), (day2, tmp_path / "day2")):
        result = run_digicert(etl, data, out)
        assert result.exit_code == 0, result.stdout + result.stderr

    result = etl("diff", tmp_path / "day1", tmp_path / "day2", "--format", "json")
    assert result.exit_code == 1, result.stderr
    assert json.loads(result.stdout) == DIGICERT_DIFF

    result = etl(
        "alerts",
        RULES / "digicert.yaml",
        "--old",
        tmp_path / "day1",
        "--new",
        tmp_path / "day2",
        "--as-of",
        DAY_2,
        "--old-as-of",
        DAY_1,
        "--format",
        "json",
    )
    assert result.exit_code == 1, result.stderr
    assert json.loads(result.stdout) == DIGICERT_ALERTS
    assert result.stderr == ""

    # Each day against itself: nothing.
    same_day = etl("diff", tmp_path / "day2", tmp_path / "day2")
    assert same_day.exit_code == 0 and same_day.stdout.endswith("No differences.\n")
    quiet = etl(
        "alerts",
        RULES / "digicert.yaml",
        "--old",
        tmp_path / "day2",
        "--new",
        tmp_path / "day2",
        "--as-of",
        DAY_2,
        "--old-as-of",
        DAY_2,
    )
    assert quiet.exit_code == 0 and quiet.stdout.endswith("No alerts.\n")


def test_digicert_users_partial_on_day_2_are_not_reported_removed(etl, tmp_path):
    day1, day2 = digicert_days()
    day2.forbidden = {"/services/v2/user"}  # the key lost the permission to list users
    assert run_digicert(etl, day1, tmp_path / "day1").exit_code == 0
    assert run_digicert(etl, day2, tmp_path / "day2").exit_code == 1  # partial

    result = etl("diff", tmp_path / "day1", tmp_path / "day2", "--format", "json")
    assert result.exit_code == 1
    diff = json.loads(result.stdout)
    assert diff["entities"] == {
        "added": ["digicert_certificate:100007"],
        "removed": [],
        "changed": [DIGICERT_DIFF["entities"]["changed"][0]],
    }
    assert diff["relationships"]["removed"] == []
    text = etl("diff", tmp_path / "day1", tmp_path / "day2").stdout
    assert (
        "Partial types (never reported as removed): digicert_account_has_user (5 in OLD only, not reported), "
        "digicert_user (5 in OLD only, not reported)\n"
    ) in text
    assert "digicert_user:1234567:2000004" not in text

    alerts = etl(
        "alerts",
        RULES / "digicert.yaml",
        "--old",
        tmp_path / "day1",
        "--new",
        tmp_path / "day2",
        "--as-of",
        DAY_2,
        "--old-as-of",
        DAY_1,
        "--format",
        "json",
    )
    assert [a["rule"] for a in json.loads(alerts.stdout)] == ["certificate-expires-within-30-days"]
    # Alice, an administrator, is missing from day 2 only because users are partial.


NS_INSTANCE = "5e1f6c2a-0d3b-4e8f-9a71-2b4c6d8e0f13"
ANDROID, IOS = nowsecure.APP_ANDROID["ref"], nowsecure.APP_IOS["ref"]


def day2_ago(days: float) -> str:
    """An API timestamp ``days`` before day 2 (one day after the look-alike's clock)."""
    return nowsecure.ago(days - 1)


def nowsecure_days() -> tuple[nowsecure.NowSecureData, nowsecure.NowSecureData]:
    """Day 2: a new Organization Admin, a user removed, a user made admin, a new critical
    finding and a new medium one, a finding closed."""
    day1 = nowsecure.NowSecureData()
    day2 = copy.deepcopy(day1)
    day2.users = [u for u in day2.users if u["id"] != 115]  # Carol removed
    bob = next(u for u in day2.users if u["id"] == 114)
    bob["roles"].append({"id": 6, "name": "org_admin", "label": "Organization Admin"})
    bob["updated_at"] = day2_ago(0.2)
    day2.users.append(
        {
            "id": 116,
            "ref": "8c3a6d51-4f5e-4ead-8d6c-3f9b4e5dab44",
            "name": "Dave Admin",
            "email": "dave@example.com",
            "active": True,
            "organization_id": 105,
            "created_at": day2_ago(0.5),
            "updated_at": day2_ago(0.5),
            "deleted_at": None,
            "roles": [{"id": 6, "name": "org_admin", "label": "Organization Admin"}],
        }
    )
    android = day2.vulnerabilities[ANDROID]
    for vuln in android:  # the API lists this one twice
        if vuln["finding_id"] == "insecure_network_communication":
            vuln.update(
                last_seen_at=day2_ago(0.5),
                closed_at=day2_ago(0.5),
                closed_in_assessment_id="6f1d2c3b-3333-11ef-9a0b-000000000003",
                last_seen_in_app_version="3.7.0",
                closed_in_app_version="3.7.0",
            )
    android.append(
        nowsecure._vuln(
            918273649, "sql_injection", "SQL Injection", 9.1, day2_ago(1), day2_ago(0.5), versions=("3.7.0", "3.7.0")
        )
    )
    day2.vulnerabilities[IOS].append(
        nowsecure._vuln(
            918273702,
            "sensitive_logging",
            "Sensitive Data in Logs",
            5.0,
            day2_ago(1),
            day2_ago(1),
            versions=("2.1.0", "2.1.0"),
        )
    )
    return day1, day2


def run_nowsecure(etl, data: nowsecure.NowSecureData, out: Path, as_of: str):
    with LocalApi() as lab, LocalApi() as platform:
        nowsecure.install_lab(lab, data)
        nowsecure.install_graphql(platform, data)
        return etl(
            "run",
            NOWSECURE,
            "--base-url",
            f"lab={lab.url}",
            "--base-url",
            f"platform={platform.url}",
            "--output",
            out,
            "--config",
            f"instanceId={NS_INSTANCE}",
            "--as-of",
            as_of,
            env={"NOWSECURE_API_TOKEN": nowsecure.API_TOKEN},
        )


def ms(iso: str) -> int:
    from engine.lang.functions import to_epoch_ms

    return to_epoch_ms(iso)


INSECURE = f"nowsecure-finding:{ANDROID}:918273645:insecure_network_communication"
SQLI = f"nowsecure-finding:{ANDROID}:918273649:sql_injection"
LOGGING = f"nowsecure-finding:{IOS}:918273702:sensitive_logging"
ACCOUNT_KEY = f"nowsecure:account:{NS_INSTANCE}"


def nowsecure_expected_diff() -> dict:
    closed = day2_ago(0.5)
    return {
        "entities": {
            "added": sorted([SQLI, LOGGING, "nowsecure-user:116"]),
            "removed": ["nowsecure-user:115"],
            "changed": [
                {
                    "_key": INSECURE,
                    "changes": {
                        "closedInAppVersion": {"old": None, "new": "3.7.0"},
                        "closedOn": {"old": None, "new": ms(closed)},
                        "lastSeenInAppVersion": {"old": "3.6.1", "new": "3.7.0"},
                        "lastSeenOn": {"old": ms(nowsecure.ago(2)), "new": ms(closed)},
                        "open": {"old": True, "new": False},
                    },
                },
                {
                    "_key": "nowsecure-user:114",
                    "changes": {
                        "roles": {
                            "old": ["Analyst", "Developer"],
                            "new": ["Analyst", "Developer", "Organization Admin"],
                        },
                        "updatedOn": {"old": ms("2024-09-12T16:45:30.250Z"), "new": ms(day2_ago(0.2))},
                    },
                },
            ],
        },
        "relationships": {
            "added": sorted(
                [
                    f"app:mobile:android:com.example.mobile|has|{SQLI}",
                    f"app:mobile:ios:com.example.mobile|has|{LOGGING}",
                    f"{ACCOUNT_KEY}|has|nowsecure-user:116",
                    "nowsecure-user:116|is|FORWARD:_class=Person:email=dave@example.com",
                ]
            ),
            "removed": sorted(
                [
                    f"{ACCOUNT_KEY}|has|nowsecure-user:115",
                    "nowsecure-user:115|is|FORWARD:_class=Person:email=carol@example.com",
                ]
            ),
            "changed": [],
        },
    }


def test_nowsecure_two_days_give_the_exact_diff_and_only_the_intended_alerts(etl, tmp_path):
    day1, day2 = nowsecure_days()
    assert run_nowsecure(etl, day1, tmp_path / "day1", DAY_1).exit_code == 0
    result = run_nowsecure(etl, day2, tmp_path / "day2", DAY_2)
    assert result.exit_code == 0, result.stdout + result.stderr

    result = etl("diff", tmp_path / "day1", tmp_path / "day2", "--format", "json")
    assert result.exit_code == 1, result.stderr
    assert json.loads(result.stdout) == nowsecure_expected_diff()

    result = etl(
        "alerts",
        RULES / "nowsecure.yaml",
        "--old",
        tmp_path / "day1",
        "--new",
        tmp_path / "day2",
        "--as-of",
        DAY_2,
        "--format",
        "json",
    )
    assert result.exit_code == 1, result.stderr
    changed = {c["_key"]: c["changes"] for c in nowsecure_expected_diff()["entities"]["changed"]}
    assert json.loads(result.stdout) == [
        {
            "rule": "new-critical-finding",
            "on": "added",
            "_type": "nowsecure_finding",
            "_key": SQLI,
            "displayName": "SQL Injection",
            "description": "A new open critical finding (CVSS >= 9) in a mobile app",
        },
        {
            "rule": "finding-closed",
            "on": "changed",
            "_type": "nowsecure_finding",
            "_key": INSECURE,
            "displayName": "Insecure Network Communication",
            "description": "A finding was closed (fixed in a newer app version)",
            "changes": changed[INSECURE],
        },
        {
            "rule": "new-admin-user",
            "on": "added",
            "_type": "nowsecure_user",
            "_key": "nowsecure-user:116",
            "displayName": "Dave Admin",
            "description": "A new NowSecure user is an Organization Admin",
        },
        {
            "rule": "user-became-admin",
            "on": "changed",
            "_type": "nowsecure_user",
            "_key": "nowsecure-user:114",
            "displayName": "Bob Analyst",
            "description": "A NowSecure user was made Organization Admin",
            "changes": changed["nowsecure-user:114"],
        },
    ]
    assert result.stderr == ""

    text = etl(
        "alerts", RULES / "nowsecure.yaml", "--old", tmp_path / "day1", "--new", tmp_path / "day2", "--as-of", DAY_2
    )
    assert text.stdout.splitlines()[1:4] == [
        f'  [new-critical-finding] added nowsecure_finding {SQLI} "SQL Injection"',
        "      A new open critical finding (CVSS >= 9) in a mobile app",
        f'  [finding-closed] changed nowsecure_finding {INSECURE} "Insecure Network Communication"',
    ]
    assert text.stdout.endswith("4 alerts.\n")


def test_nowsecure_window_is_stable_with_as_of(etl, tmp_path):
    """The same data fetched on two days with --as-of each day: only the clock moved, and
    no finding is near the window's edge, so nothing differs."""
    day1, _ = nowsecure_days()
    assert run_nowsecure(etl, day1, tmp_path / "a", DAY_1).exit_code == 0
    assert run_nowsecure(etl, copy.deepcopy(day1), tmp_path / "b", DAY_2).exit_code == 0
    assert etl("diff", tmp_path / "a", tmp_path / "b").exit_code == 0


def test_negating_a_path_without_parentheses_is_reported(etl, pair, tmp_path):
    """JMESPath reads `!_old.admin` as `(!_old).admin`, always null: a rule that never fires."""
    old, new = pair
    rules = write_rules(
        tmp_path, "rules:\n  - name: a\n    on: changed\n    type: acme_user\n    where: admin && !_old.admin\n"
    )
    result = etl("alerts", rules, "--old", old, "--new", new)
    assert result.exit_code == 4
    assert result.stderr == (
        f"etl: error: {rules}:5:21: rules[0].where: '!_old.admin' reads as '(!_old).admin', "
        f"a field of a boolean (always null); write '!(_old.admin)'\n"
    )


def test_key_and_type_cannot_be_ignored(etl, pair):
    old, new = pair
    result = etl("diff", old, new, "--ignore", "_key")
    assert result.exit_code == 2 and "_key and _type cannot be ignored" in result.stderr
