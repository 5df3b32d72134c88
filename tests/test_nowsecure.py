"""NowSecure end to end: both findings modes against snapshots, the entities built from config,
fan-out at any concurrency, the employee mapping, and the failure paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.pipeline.compile import compile_file
from tests.conftest import CASSETTES, MAPPINGS, SNAPSHOTS, UPDATE_SNAPSHOTS
from tests.fakes import nowsecure
from tests.fakes.server import LocalApi, Response
from tests.graphtools import compare_snapshot, conformance_problems, read_output, snapshot_of

MAPPING = MAPPINGS / "nowsecure.yaml"
PLAN = compile_file(MAPPING)
INSTANCE = "5e1f6c2a-0d3b-4e8f-9a71-2b4c6d8e0f13"
REPLAY_CONFIG = (
    "--config",
    "accountName=Example Org",
    "--config",
    "tagAccountName=true",
    "--config",
    f"instanceId={INSTANCE}",
    "--as-of",
    nowsecure.AS_OF,
)
ANDROID, IOS = nowsecure.APP_ANDROID["ref"], nowsecure.APP_IOS["ref"]


def replay(etl, cassette: str, out: Path, *extra):
    return etl(
        "run",
        MAPPING,
        "--cassette",
        CASSETTES / "nowsecure" / f"{cassette}.yaml",
        "--output",
        out,
        *REPLAY_CONFIG,
        *extra,
    )


def by_key(objects):
    return {o["_key"]: o for o in objects}


@pytest.fixture(scope="module")
def window_graph(tmp_path_factory):
    from click.testing import CliRunner

    from engine.cli import main

    out = tmp_path_factory.mktemp("nowsecure") / "out"
    result = CliRunner().invoke(main, ["run", str(MAPPING), "--offline", "--output", str(out)])
    assert result.exit_code == 0, result.output
    return read_output(out)


def test_window_mode_matches_snapshot(window_graph):
    compare_snapshot(snapshot_of(window_graph), SNAPSHOTS / "nowsecure" / "full-run.json", UPDATE_SNAPSHOTS)
    # The latest-report step is switched off in this mode, so its types are not expected.
    assert conformance_problems(PLAN, window_graph) == []


def test_latest_report_mode_matches_snapshot(etl, tmp_path):
    result = replay(etl, "latest-report", tmp_path / "out", "--config", "findingsMode=latest")
    assert result.exit_code == 0, result.stdout + result.stderr
    output = read_output(tmp_path / "out")
    compare_snapshot(snapshot_of(output), SNAPSHOTS / "nowsecure" / "latest-report.json", UPDATE_SNAPSHOTS)
    assert conformance_problems(PLAN, output) == []
    statuses = {s["id"]: s["status"] for s in output["summary"]["integrationStepResults"]}
    assert statuses["fetch-findings"] == "disabled" and statuses["fetch-latest-findings"] == "success"
    findings = {e["_key"]: e for e in output["entities"] if e["_type"] == "nowsecure_finding"}
    assert sorted(findings) == sorted(
        [
            f"nowsecure-finding:{ANDROID}:918273645:insecure_network_communication",
            f"nowsecure-finding:{ANDROID}:918273647:debug_flag_enabled",  # the unaffected check is not a finding
            f"nowsecure-finding:{IOS}:918273700:hardcoded_credentials",
            f"nowsecure-finding:{nowsecure.APP_NO_TITLE['ref']}:918273800:clipboard_exposure",
        ]
    )
    critical = findings[f"nowsecure-finding:{IOS}:918273700:hardcoded_credentials"]
    assert critical["severity"] == "critical" and critical["category"] == "secrets" and critical["open"] is True
    assert critical["lastSeenOn"] == 1795338000000 and critical["lastSeenInAppVersion"] == "3.6.1"
    has = [r for r in output["relationships"] if r["_type"] == "mobile_app_has_nowsecure_finding"]
    assert len(has) == 4


def test_account_and_service_come_from_config(window_graph):
    entities = by_key(window_graph["entities"])
    account = entities[f"nowsecure:account:{INSTANCE}"]
    assert account == {
        "_key": f"nowsecure:account:{INSTANCE}",
        "_type": "nowsecure_account",
        "_class": ["Account"],
        "name": "Example Org",
        "displayName": "Example Org",
        "tag.AccountName": "Example Org",
    }
    service = entities[f"nowsecure:service:{INSTANCE}:mast"]
    assert service["name"] == service["displayName"] == "NowSecure MAST"
    assert service["description"] == "Mobile Application Security Testing (MAST)"
    assert service["category"] == ["software"] and service["function"] == ["MAST"]
    relationships = by_key(window_graph["relationships"])
    assert f"nowsecure:account:{INSTANCE}|provides|nowsecure:service:{INSTANCE}:mast" in relationships


def test_users(window_graph):
    entities = by_key(window_graph["entities"])
    alice = {k: v for k, v in entities["nowsecure-user:113"].items() if k != "_rawData"}
    assert alice == {
        "_key": "nowsecure-user:113",
        "_type": "nowsecure_user",
        "_class": ["User"],
        "id": "113",
        "name": "Alice Example",
        "displayName": "Alice Example",
        "username": "Alice@Example.com",
        "email": "Alice@Example.com",
        "active": True,
        "createdOn": 1673359402512,
        "updatedOn": 1714637469004,
        "roles": ["Organization Admin"],
        "tag.AccountName": "Example Org",
    }
    mapped = by_key(window_graph["relationships"])[
        "nowsecure-user:113|is|FORWARD:_class=Person:email=alice@example.com"
    ]
    assert mapped["_type"] == "nowsecure_user_is_employee"
    assert mapped["_mapping"] == {
        "relationshipDirection": "FORWARD",
        "sourceEntityKey": "nowsecure-user:113",
        "targetFilterKeys": [["_class", "email"]],
        "targetEntity": {"_type": "employee", "_class": "Person", "email": "alice@example.com"},
        "skipTargetCreation": True,
    }


def test_apps(window_graph):
    entities = by_key(window_graph["entities"])
    apps = {k: v for k, v in entities.items() if v["_type"] == "mobile_app"}
    assert sorted(apps) == [
        "app:mobile:android:com.example.mobile",
        "app:mobile:android:com.example.notitle",
        "app:mobile:ios:com.example.empty",
        "app:mobile:ios:com.example.mobile",
    ]
    android = apps["app:mobile:android:com.example.mobile"]
    assert (android["name"], android["platform"], android["package"], android["ref"]) == (
        "Example Mobile",
        "android",
        "com.example.mobile",
        ANDROID,
    )
    assert android["webLink"] == f"https://lab.nowsecure.com/app/{ANDROID}"
    assert android["createdOn"] == 1707337755769
    assert apps["app:mobile:android:com.example.notitle"]["name"] == "com.example.notitle"  # no title
    relationships = window_graph["relationships"]
    for rel_type in ("nowsecure_account_has_mobile_app", "nowsecure_service_scans_mobile_app"):
        assert sorted(r["_toEntityKey"] for r in relationships if r["_type"] == rel_type) == sorted(apps)


def test_findings_in_the_window(window_graph):
    findings = {e["_key"]: e for e in window_graph["entities"] if e["_type"] == "nowsecure_finding"}
    assert sorted(findings) == sorted(
        [
            f"nowsecure-finding:{ANDROID}:918273645:insecure_network_communication",  # once, though repeated
            f"nowsecure-finding:{ANDROID}:918273646:weak_crypto_hash",
            f"nowsecure-finding:{ANDROID}:918273647:debug_flag_enabled",
            f"nowsecure-finding:{IOS}:918273700:hardcoded_credentials",
            f"nowsecure-finding:{IOS}:918273701:ats_disabled",
            f"nowsecure-finding:{nowsecure.APP_NO_TITLE['ref']}:918273800:clipboard_exposure",
        ]
    )  # old_sdk_version was last seen 75 days ago: outside the 30-day window
    high = findings[f"nowsecure-finding:{ANDROID}:918273645:insecure_network_communication"]
    assert (high["severity"], high["numericSeverity"], high["score"], high["open"]) == ("high", 7.4, 7.4, True)
    assert high["webLink"] == (
        f"https://lab.nowsecure.com/app/{ANDROID}/assessment#finding-insecure_network_communication"
    )
    assert high["openedInAppVersion"] == "3.4.0" and high["lastSeenInAppVersion"] == "3.6.1"
    closed = findings[f"nowsecure-finding:{ANDROID}:918273646:weak_crypto_hash"]
    assert closed["open"] is False and closed["closedOn"] == closed["lastSeenOn"]
    assert closed["closedInAppVersion"] == "3.6.1" and closed["severity"] == "medium"
    zero = findings[f"nowsecure-finding:{ANDROID}:918273647:debug_flag_enabled"]
    assert zero["severity"] == "info" and zero["numericSeverity"] == 0
    assert zero["name"] == "debug_flag_enabled"  # no title: named by the finding id
    assert findings[f"nowsecure-finding:{IOS}:918273700:hardcoded_credentials"]["severity"] == "critical"
    assert (
        findings[f"nowsecure-finding:{nowsecure.APP_NO_TITLE['ref']}:918273800:clipboard_exposure"]["severity"] == "low"
    )
    has = [r for r in window_graph["relationships"] if r["_type"] == "mobile_app_has_nowsecure_finding"]
    assert sorted(r["_toEntityKey"] for r in has) == sorted(findings)


def test_window_is_configurable(etl, tmp_path):
    result = etl("run", MAPPING, "--offline", "--output", tmp_path / "out", "--config", "findingsWindowDays=100")
    assert result.exit_code == 0, result.stderr
    keys = {e["_key"] for e in read_output(tmp_path / "out")["entities"]}
    assert f"nowsecure-finding:{ANDROID}:918273648:old_sdk_version" in keys


def serve(lab: LocalApi, platform: LocalApi) -> None:
    nowsecure.install_lab(lab)
    nowsecure.install_graphql(platform)


def run_local(etl, lab, platform, out, *extra):
    return etl(
        "run",
        MAPPING,
        "--base-url",
        f"lab={lab.url}",
        "--base-url",
        f"platform={platform.url}",
        "--output",
        out,
        *REPLAY_CONFIG,
        *extra,
        env={"NOWSECURE_API_TOKEN": nowsecure.API_TOKEN},
    )


def test_same_graph_at_any_concurrency(etl, tmp_path):
    outputs = {}
    for concurrency in (1, 16):
        with LocalApi() as lab, LocalApi() as platform:
            serve(lab, platform)
            # Make the first app's findings the slowest, so completion order differs from request order.
            lab.fail_next(
                f"/resource/app/{ANDROID}/vulnerability/", Response(200, nowsecure.VULNERABILITIES[ANDROID], delay=0.3)
            )
            result = run_local(etl, lab, platform, tmp_path / str(concurrency), "--concurrency", concurrency)
        assert result.exit_code == 0, result.stdout + result.stderr
        outputs[concurrency] = tmp_path / str(concurrency)
    files = {
        c: sorted(p.relative_to(o) for p in o.rglob("*.json") if p.name != "summary.json") for c, o in outputs.items()
    }
    assert files[1] == files[16]
    for relative in files[1]:
        assert (outputs[1] / relative).read_bytes() == (outputs[16] / relative).read_bytes()
    compare_snapshot(snapshot_of(read_output(outputs[16])), SNAPSHOTS / "nowsecure" / "full-run.json", False)


def test_failing_child_request_names_its_parent_and_spares_siblings(etl, tmp_path):
    with LocalApi() as lab, LocalApi() as platform:
        serve(lab, platform)
        lab.fail_next(f"/resource/app/{IOS}/vulnerability/", *[Response(500, {"error": "boom"})] * 6)
        result = run_local(etl, lab, platform, tmp_path / "out")
    assert result.exit_code == 1
    assert (
        f"for mobile_app app:mobile:ios:com.example.mobile: GET {lab.url}/resource/app/{IOS}/vulnerability/ "
        f"failed: HTTP 500 Internal Server Error: boom (after 6 attempts)"
    ) in result.stdout
    output = read_output(tmp_path / "out")
    keys = {e["_key"] for e in output["entities"]}
    assert f"nowsecure-finding:{ANDROID}:918273645:insecure_network_communication" in keys
    assert not any(k.startswith(f"nowsecure-finding:{IOS}") for k in keys)
    assert output["summary"]["metadata"]["partialDatasets"]["types"] == [
        "mobile_app_has_nowsecure_finding",
        "nowsecure_finding",
    ]


def test_rate_limit_with_retry_after_gives_the_same_graph(etl, tmp_path, sleeps):
    result = replay(etl, "rate-limited", tmp_path / "out")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert sleeps == [1.0]  # the Retry-After the API sent
    compare_snapshot(snapshot_of(read_output(tmp_path / "out")), SNAPSHOTS / "nowsecure" / "full-run.json", False)


def test_bad_token_is_fatal_and_named(etl, tmp_path):
    result = replay(etl, "bad-token", tmp_path / "out", "--config", "apiToken=not-a-valid-nowsecure-token")
    assert result.exit_code == 5
    assert (
        "authentication failed: GET https://lab-api.nowsecure.com/account/user/ failed: HTTP 401 "
        "Unauthorized: Unauthorized" in result.stderr
    )
    assert "not-a-valid-nowsecure-token" not in result.stdout + result.stderr
    assert not (tmp_path / "out").exists()


def test_graphql_errors_with_http_200_fail_the_step(etl, tmp_path):
    with LocalApi() as lab, LocalApi() as platform:
        serve(lab, platform)
        platform.fail_next("/graphql", Response(200, {"data": None, "errors": [{"message": "Internal error"}]}))
        result = run_local(etl, lab, platform, tmp_path / "out", "--config", "findingsMode=latest")
    assert result.exit_code == 1
    assert f"POST {platform.url}/graphql: GraphQL error: Internal error" in result.stdout


def test_findings_mode_must_be_a_known_choice(etl, tmp_path):
    result = etl("run", MAPPING, "--offline", "--output", tmp_path / "out", "--config", "findingsMode=recent")
    assert result.exit_code == 4
    assert (
        "config field 'findingsMode' must be one of window, latest; --config findingsMode gives 'recent'"
        in result.stderr
    )


def test_cassettes_hold_no_secret():
    for path in (CASSETTES / "nowsecure").glob("*.yaml"):
        text = path.read_text()
        assert nowsecure.API_TOKEN not in text and "not-a-valid-nowsecure-token" not in text, path
        assert "127.0.0.1" not in text, path
        for block in text.split("Authorization:")[1:]:
            assert block.lstrip().startswith("- '[REDACTED]'"), path


def test_parent_without_the_field_its_request_needs(etl, tmp_path):
    with LocalApi() as lab, LocalApi() as platform:
        data = nowsecure.install_lab(lab)
        nowsecure.install_graphql(platform)
        del data.apps[2]["ref"]  # the app without a title also lost its ref
        result = run_local(etl, lab, platform, tmp_path / "out")
    assert result.exit_code == 1
    assert (
        "for mobile_app app:mobile:android:com.example.notitle: cannot build the request "
        "(/resource/app/{{ parent.ref }}/vulnerability/): 'dict object' has no attribute 'ref'"
    ) in result.stdout
    keys = {e["_key"] for e in read_output(tmp_path / "out")["entities"]}
    assert f"nowsecure-finding:{IOS}:918273700:hardcoded_credentials" in keys
