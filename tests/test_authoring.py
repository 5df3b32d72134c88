"""Mapping authors' tools on both vendor mappings, against their cassettes: preview, coverage, explain."""

from __future__ import annotations

from tests.conftest import MAPPINGS
from tests.fakes import nowsecure

DIGICERT = MAPPINGS / "digicert.yaml"
NOWSECURE = MAPPINGS / "nowsecure.yaml"
ANDROID = nowsecure.APP_ANDROID["ref"]


def test_preview_shows_requests_records_and_what_was_built(etl, tmp_path):
    result = etl("preview", DIGICERT, "--offline", "--step", "fetch-users", "--limit", "2")
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert "== step fetch-account: Fetch Account Details" in text and "== step fetch-orders" not in text
    assert "GET https://www.digicert.com/services/v2/user?offset=0&limit=2 -> 200, 2 record(s)" in text
    assert "offset=2" not in text  # the sample stops after --limit records
    assert '"username": "alice.admin@example.com"' in text
    assert '"_key": "digicert_user:1234567:2000002"' in text
    assert '"_key": "digicert_account:1234567|has|digicert_user:1234567:2000001"' in text
    assert not (tmp_path / ".j1-integration").exists()  # a preview writes nothing


def test_preview_of_a_fan_out_step_names_the_parent(etl):
    result = etl("preview", NOWSECURE, "--offline", "--step", "fetch-findings", "--limit", "2")
    assert result.exit_code == 0, result.stderr
    assert (
        f"GET https://lab-api.nowsecure.com/resource/app/{ANDROID}/vulnerability/ -> 200, 5 record(s) "
        f"(for app:mobile:android:com.example.mobile)"
    ) in result.stdout


def test_coverage_lists_unread_fields_and_empty_properties(etl, tmp_path):
    mapping = tmp_path / "digicert.yaml"
    text = DIGICERT.read_text().replace("phone: telephone", "phone: telephon")
    mapping.write_text(text.replace("cassette: ../cassettes", f"cassette: {MAPPINGS.parent}/cassettes"))
    result = etl("coverage", mapping, "--offline")
    assert result.exit_code == 0, result.stderr
    users = result.stdout.split("== step fetch-users")[1].split("== step")[0]
    assert "  telephone  (1/5 records)" in users  # now read by nothing...
    assert "  entities[0].properties.phone: telephon  (0/5)" in users  # ...and the typo stays empty
    assert "  container.public_id  (5/5 records)" in users
    assert "  first_name" not in users and "access_roles" not in users  # read by the mapping
    orders = result.stdout.split("== step fetch-orders")[1]
    assert "custom_fields" not in orders and "certificate.dns_names" not in orders
    assert "  organization.name  (5/5 records)" in orders


def test_run_with_coverage(etl, tmp_path):
    result = etl("run", NOWSECURE, "--offline", "--output", tmp_path / "out", "--coverage")
    assert result.exit_code == 0, result.stderr
    assert "Graph: 15 entities" in result.stdout
    findings = result.stdout.split("== step fetch-findings")[1]
    assert "  closed_in_assessment_id" in findings  # a field the mapping could still use
    assert "last_seen_cvss" not in findings


def test_explain_an_entity(etl):
    key = "digicert_certificate:100003"
    result = etl("explain", DIGICERT, "--offline", "--key", key)
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert "an entity of type digicert_certificate, built by step fetch-orders (Fetch Orders)" in text
    assert (
        "from fetch-orders: page 2 (https://www.digicert.com/services/v2/order/certificate?offset=2&limit=2) record 0"
    ) in text
    assert f"by the rule at {DIGICERT}:" in text
    assert 'name = "*.example.org"  <- certificate.common_name  (' in text
    assert "tag.Cost center = 1042  <- tags_from: from_entries(custom_fields, 'label', 'value')" in text
    assert '"common_name": "*.example.org"' in text  # the record itself


def test_explain_a_relationship_and_a_missing_key(etl):
    key = f"app:mobile:android:com.example.mobile|has|nowsecure-finding:{ANDROID}:918273646:weak_crypto_hash"
    result = etl("explain", NOWSECURE, "--offline", "--key", key)
    assert result.exit_code == 0, result.stderr
    assert "a relationship of type mobile_app_has_nowsecure_finding, built by step fetch-findings" in result.stdout
    assert '_fromEntityKey = "app:mobile:android:com.example.mobile"  <- {{ parent._key }}' in result.stdout
    missing = etl("explain", NOWSECURE, "--offline", "--key", "nowsecure-user:999")
    assert missing.exit_code == 1
    assert "nowsecure-user:999: not built in this run" in missing.stdout


def test_explain_says_when_an_entity_was_refused(etl, tmp_path):
    mapping = tmp_path / "digicert.yaml"
    text = DIGICERT.read_text().replace("name: certificate.common_name\n", "name: certificate.no_such_field\n")
    text = text.replace("displayName: certificate.common_name\n", "displayName: certificate.no_such_field\n")
    mapping.write_text(text.replace("cassette: ../cassettes", f"cassette: {MAPPINGS.parent}/cassettes"))
    result = etl("explain", mapping, "--offline", "--key", "digicert_certificate:100001")
    assert "NOT WRITTEN: the graph checks refused it: missing required property 'name'" in result.stdout
