"""DigiCert end to end: cassette replays against a committed snapshot, a live local look-alike,
JupiterOne conformance, the properties graph-digicert 3.1.1 produced, and the CLI's error paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.pipeline.compile import compile_file
from tests.conftest import CASSETTES, MAPPINGS, SNAPSHOTS, UPDATE_SNAPSHOTS
from tests.fakes import digicert
from tests.fakes.server import LocalApi, Response
from tests.graphtools import compare_snapshot, conformance_problems, read_output, snapshot_of

MAPPING = MAPPINGS / "digicert.yaml"
PLAN = compile_file(MAPPING)
REPLAY_CONFIG = ("--config", "pageSize=2", "--config", "accountName=Example Corp", "--config", "tagAccountName=true")


def replay(etl, cassette: str, out: Path, *extra):
    return etl(
        "run",
        MAPPING,
        "--cassette",
        CASSETTES / "digicert" / f"{cassette}.yaml",
        "--output",
        out,
        *REPLAY_CONFIG,
        *extra,
    )


def by_key(objects: list[dict]) -> dict[str, dict]:
    return {o["_key"]: o for o in objects}


# -- replay against the committed snapshot ------------------------------------------------


def test_offline_run_matches_snapshot(etl, tmp_path):
    result = etl("run", MAPPING, "--offline", "--output", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert "Graph: 11 entities, 19 relationships" in result.stdout
    output = read_output(tmp_path / "out")
    compare_snapshot(snapshot_of(output), SNAPSHOTS / "digicert" / "full-run.json", UPDATE_SNAPSHOTS)
    assert conformance_problems(PLAN, output) == []


def test_replay_with_explicit_cassette_equals_offline_run(etl, tmp_path):
    assert replay(etl, "full-run", tmp_path / "a").exit_code == 0
    assert etl("run", MAPPING, "--offline", "--output", tmp_path / "b").exit_code == 0
    assert snapshot_of(read_output(tmp_path / "a")) == snapshot_of(read_output(tmp_path / "b"))


def test_output_tree_is_identical_between_runs(etl, tmp_path):
    for name in ("a", "b"):
        assert etl("run", MAPPING, "--offline", "--output", tmp_path / name).exit_code == 0
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "graph").rglob("*.json"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b" / "graph").rglob("*.json"))
    assert files_a == files_b
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


# -- the graph graph-digicert 3.1.1 produced -------------------------------------------------


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    from click.testing import CliRunner

    from engine.cli import main

    out = tmp_path_factory.mktemp("digicert") / "out"
    result = CliRunner().invoke(main, ["run", str(MAPPING), "--offline", "--output", str(out)])
    assert result.exit_code == 0, result.output
    output = read_output(out)
    return by_key(output["entities"]), by_key(output["relationships"]), output


def test_account_entity(graph):
    entities, _, _ = graph
    account = entities["digicert_account:1234567"]
    assert account["_class"] == ["Account"]
    assert account["id"] == "1234567" and account["name"] == "1234567"
    assert account["accountId"] == 1234567
    assert account["displayName"] == "DigiCert:1234567"
    assert account["adminEmail"] == ["alice.admin@example.com", "security@example.com"]
    assert account["tag.AccountName"] == "Example Corp"
    assert account["_rawData"] == [{"name": "default", "rawData": digicert.ACCOUNT}]


def test_user_entities(graph):
    entities, _, _ = graph
    alice = entities["digicert_user:1234567:2000001"]
    assert {k: v for k, v in alice.items() if k != "_rawData"} == {
        "_key": "digicert_user:1234567:2000001",
        "_type": "digicert_user",
        "_class": ["User"],
        "id": "1234567:2000001",
        "accountId": 1234567,
        "userId": 2000001,
        "firstName": "Alice",
        "lastName": "Admin",
        "name": "Alice Admin",
        "displayName": "alice.admin@example.com",
        "email": "alice.admin@example.com",
        "username": "alice.admin@example.com",
        "status": "active",
        "active": True,
        "phone": "+15555550100",
        "jobTitle": "Security Engineer",
        "type": "standard",
        "roles": ["Administrator"],
        "admin": True,
        "lastLoginOn": 1697210113000,
        "tag.AccountName": "Example Corp",
    }
    bob = entities["digicert_user:1234567:2000002"]
    assert "phone" not in bob and "jobTitle" not in bob  # omitted by the API when empty
    assert bob["admin"] is False and bob["roles"] == ["Finance Manager"]
    assert bob["lastLoginOn"] == 1588348046000  # "2020-05-01 15:47:26", read as UTC
    dan = entities["digicert_user:1234567:2000004"]
    assert dan["active"] is False and dan["status"] == "inactive"
    assert entities["digicert_user:1234567:2000003"]["admin"] is True  # Administrator among other roles


def test_certificate_entities(graph):
    entities, _, _ = graph
    issued = entities["digicert_certificate:100001"]
    assert issued["orderId"] == 100001 and issued["certificateId"] == 500001 and issued["id"] == "100001"
    assert issued["name"] == issued["displayName"] == issued["domainName"] == "www.example.com"
    assert issued["dnsNames"] == issued["alternativeNames"] == ["www.example.com", "example.com"]
    assert issued["active"] is True
    assert issued["issuedOn"] == issued["createdOn"] == 1718904596000
    assert issued["expiresOn"] == 1751241600000  # 2025-06-30T00:00:00Z
    assert issued["renewalNotification"] is True and issued["renewed"] is False
    assert (issued["type"], issued["productName"], issued["productId"]) == (
        "ssl_certificate",
        "Standard SSL",
        "ssl_plus",
    )
    assert issued["tag.Cost center"] == "CC-42"
    assert issued["tag.Auto renew"] is True and issued["tags"] == ["Auto renew"]

    pending = entities["digicert_certificate:100002"]
    assert pending["active"] is False  # no days_remaining on a pending order
    assert "issuedOn" not in pending and "expiresOn" not in pending

    expired = entities["digicert_certificate:100004"]
    assert expired["active"] is False and expired["renewalNotification"] is False

    assert entities["digicert_certificate:100003"]["tag.Cost center"] == 1042  # numeric strings become numbers
    assert entities["digicert_certificate:100003"]["signatureHash"] == "sha384"


def test_direct_relationships(graph):
    entities, relationships, _ = graph
    key = "digicert_account:1234567|has|digicert_user:1234567:2000001"
    assert relationships[key] == {
        "_key": key,
        "_type": "digicert_account_has_user",
        "_class": "HAS",
        "_fromEntityKey": "digicert_account:1234567",
        "_toEntityKey": "digicert_user:1234567:2000001",
        "displayName": "HAS",
    }
    has_cert = [r for r in relationships.values() if r["_type"] == "digicert_account_has_certificate"]
    assert sorted(r["_toEntityKey"] for r in has_cert) == sorted(
        k for k in entities if k.startswith("digicert_certificate:")
    )


def test_domain_has_certificate_mapped_relationships(graph):
    _, relationships, _ = graph
    mapped = [r for r in relationships.values() if "_mapping" in r]
    assert {r["_type"] for r in mapped} == {"domain_has_digicert_certificate"}
    common_name = relationships["digicert_certificate:100003|has|REVERSE:_class=Domain:domainName=example.org"]
    assert common_name["_mapping"] == {
        "relationshipDirection": "REVERSE",
        "sourceEntityKey": "digicert_certificate:100003",
        "targetFilterKeys": [["_class", "domainName"]],
        "targetEntity": {
            "_type": "domain",
            "_class": "Domain",
            "domainName": "example.org",
            "name": "example.org",
            "displayName": "example.org",
        },
        "skipTargetCreation": False,
    }
    # Every certificate maps its common name; SANs map only to existing domains; "*.x" is "x".
    by_source: dict[str, list] = {}
    for r in mapped:
        by_source.setdefault(r["_mapping"]["sourceEntityKey"], []).append(r["_mapping"])
    assert len(by_source) == 5
    wildcard = by_source["digicert_certificate:100003"]
    assert [(m["targetEntity"]["domainName"], m["skipTargetCreation"]) for m in wildcard] == [
        ("example.org", False),
        ("api.example.org", True),
    ]


# -- a live local server that behaves like DigiCert -------------------------------------------


def test_run_against_local_api_matches_snapshot(etl, tmp_path):
    with LocalApi() as api:
        digicert.install(api)
        result = etl(
            "run",
            MAPPING,
            "--base-url",
            f"{api.url}/services/v2",
            "--output",
            tmp_path / "out",
            *REPLAY_CONFIG,
            env={"DIGICERT_API_KEY": digicert.API_KEY},
        )
        paths = [r.path + "?" + "&".join(f"{k}={v}" for k, v in r.query.items()) for r in api.log]
    assert result.exit_code == 0, result.stderr
    assert paths == [
        "/services/v2/account?",
        "/services/v2/account?",
        "/services/v2/user?offset=0&limit=2",
        "/services/v2/user?offset=2&limit=2",
        "/services/v2/user?offset=4&limit=2",
        "/services/v2/order/certificate?offset=0&limit=2",
        "/services/v2/order/certificate?offset=2&limit=2",
        "/services/v2/order/certificate?offset=4&limit=2",
    ]
    compare_snapshot(snapshot_of(read_output(tmp_path / "out")), SNAPSHOTS / "digicert" / "full-run.json", False)


def test_default_page_size_is_1000_and_key_comes_from_dotenv(etl, tmp_path):
    (tmp_path / ".env").write_text(f"# DigiCert\nexport DIGICERT_API_KEY='{digicert.API_KEY}'\n")
    with LocalApi() as api:
        data = digicert.install(api)
        data.users = [dict(digicert.USERS[0], id=3000000 + i) for i in range(2345)]
        result = etl("run", MAPPING, "--base-url", f"{api.url}/services/v2", "--output", tmp_path / "out")
        user_pages = [r.query for r in api.log if r.path.endswith("/user")]
    assert result.exit_code == 0, result.stderr
    assert user_pages == [
        {"offset": "0", "limit": "1000"},
        {"offset": "1000", "limit": "1000"},
        {"offset": "2000", "limit": "1000"},
    ]
    output = read_output(tmp_path / "out")
    users = [e for e in output["entities"] if e["_type"] == "digicert_user"]
    assert len(users) == 2345
    user_files = [f for f in output["files"] if f[2][0]["_type"] == "digicert_user"]
    assert sorted(len(objects) for _, _, objects in user_files) == [345, 500, 500, 500, 500]
    assert conformance_problems(PLAN, output) == []


def test_empty_list_without_its_key_is_an_empty_page(etl, tmp_path):
    result = replay(etl, "empty-orders", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    output = read_output(tmp_path / "out")
    types = {o["_type"] for o in output["entities"] + output["relationships"]}
    assert "digicert_certificate" not in types and "digicert_user" in types
    account = by_key(output["entities"])["digicert_account:1234567"]
    assert "adminEmail" not in account


def test_transient_429_and_503_are_retried_to_the_same_graph(etl, tmp_path, sleeps):
    result = replay(etl, "rate-limited", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert len(sleeps) == 2 and all(0 < s <= 60 for s in sleeps)
    compare_snapshot(snapshot_of(read_output(tmp_path / "out")), SNAPSHOTS / "digicert" / "full-run.json", False)


def test_step_option_runs_a_step_and_its_dependencies(etl, tmp_path):
    result = etl("run", MAPPING, "--offline", "--output", tmp_path / "out", "--step", "fetch-users")
    # The cassette still holds the unplayed order requests; only these two steps ran.
    assert result.exit_code == 0, result.stderr
    summary = read_output(tmp_path / "out")["summary"]
    assert [s["id"] for s in summary["integrationStepResults"]] == ["fetch-account", "fetch-users"]


# -- failures ----------------------------------------------------------------------------------


def test_forbidden_list_keeps_other_steps_and_marks_types_partial(etl, tmp_path):
    result = replay(etl, "forbidden-users", tmp_path / "out")
    assert result.exit_code == 1
    assert (
        "1 warning(s); first: GET https://www.digicert.com/services/v2/user?offset=0&limit=2 failed: "
        "HTTP 403 Forbidden: access_denied|missing_permission: Access denied due to missing_permission. "
        "- no data from this request; the step's types are marked partial"
    ) in result.stdout
    output = read_output(tmp_path / "out")
    types = {o["_type"] for o in output["entities"] + output["relationships"]}
    assert {"digicert_account", "digicert_certificate", "digicert_account_has_certificate"} <= types
    assert output["summary"]["metadata"]["partialDatasets"]["types"] == ["digicert_account_has_user", "digicert_user"]
    statuses = {s["id"]: s["status"] for s in output["summary"]["integrationStepResults"]}
    # A missing permission is a warning, not a failed step (on_status 403: partial in the mapping).
    assert statuses == {"fetch-account": "success", "fetch-users": "success", "fetch-orders": "success"}


def test_bad_key_is_an_authentication_error_and_keeps_previous_output(etl, tmp_path):
    out = tmp_path / "out"
    assert etl("run", MAPPING, "--offline", "--output", out).exit_code == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = replay(etl, "bad-key", out, "--config", "apiKey=not-a-valid-digicert-key")
    assert result.exit_code == 5
    assert "authentication failed" in result.stderr
    assert "access_denied|access_denied_invalid_key" in result.stderr
    assert "not-a-valid-digicert-key" not in result.stderr + result.stdout
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging directory left behind


def test_missing_api_key_names_the_env_var_and_the_option(etl, tmp_path):
    result = etl("run", MAPPING, "--output", tmp_path / "out")
    assert result.exit_code == 4
    assert "DIGICERT_API_KEY" in result.stderr
    assert "--config apiKey=..." in result.stderr
    assert not (tmp_path / "out").exists()


def test_config_option_beats_environment(etl, tmp_path):
    with LocalApi() as api:
        digicert.install(api)
        result = etl(
            "run",
            MAPPING,
            "--base-url",
            f"{api.url}/services/v2",
            "--output",
            tmp_path / "out",
            "--config",
            f"apiKey={digicert.API_KEY}",
            env={"DIGICERT_API_KEY": "wrong-key-from-env"},
        )
    assert result.exit_code == 0, result.stderr


def test_non_json_response_names_the_url(etl, tmp_path):
    with LocalApi() as api:
        digicert.install(api)
        html = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
        api.fail_next("/services/v2/order/certificate", Response(200, html, headers={"Content-Type": "text/html"}))
        result = etl(
            "run",
            MAPPING,
            "--base-url",
            f"{api.url}/services/v2",
            "--output",
            tmp_path / "out",
            env={"DIGICERT_API_KEY": digicert.API_KEY},
        )
    assert result.exit_code == 1
    assert (
        f"GET {api.url}/services/v2/order/certificate?offset=0&limit=1000 returned HTTP 200 with a body "
        f"that is not JSON (text/html"
    ) in result.stdout
    assert "502 Bad Gateway" in result.stdout
    assert digicert.API_KEY not in result.stdout + result.stderr


def test_output_directory_that_is_not_ours_is_never_replaced(etl, tmp_path):
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    result = etl("run", MAPPING, "--offline", "--output", precious)
    assert result.exit_code == 5
    assert "refusing to replace it" in result.stderr
    assert (precious / "notes.txt").read_text() == "keep me"


def test_summary_has_jupiterone_shape(graph):
    _, _, output = graph
    summary = output["summary"]
    assert list(summary) == ["integrationStepResults", "metadata"]
    first = summary["integrationStepResults"][0]
    assert list(first) == [
        "id",
        "name",
        "dependsOn",
        "declaredTypes",
        "partialTypes",
        "encounteredTypes",
        "encounteredTypeCounts",
        "status",
        "startTime",
        "endTime",
        "duration",
    ]
    users = summary["integrationStepResults"][1]
    assert users["declaredTypes"] == ["digicert_user", "digicert_account_has_user"]
    assert users["encounteredTypeCounts"] == {"digicert_account_has_user": 5, "digicert_user": 5}
    # JupiterOne's partialDatasets, and who the run is (for etl load; JupiterOne ignores it)
    assert summary["metadata"] == {
        "partialDatasets": {"types": []},
        "integration": {"id": "digicert", "instance": "digicert"},
    }


def test_cassettes_hold_no_secret_and_look_like_the_real_api():
    for path in (CASSETTES / "digicert").glob("*.yaml"):
        text = path.read_text()
        assert digicert.API_KEY not in text and "not-a-valid-digicert-key" not in text, path
        assert "127.0.0.1" not in text, path
        assert "https://www.digicert.com/services/v2/" in text, path
        for block in text.split("X-DC-DEVKEY:")[1:]:
            assert block.lstrip().startswith("- '[REDACTED]'"), path
