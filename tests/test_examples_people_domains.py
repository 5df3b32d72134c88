"""The example mappings of mappings/examples/: a people directory and a DNS zone list, the
sources of the Person and Domain entities that NowSecure's and DigiCert's mapped
relationships point at.

Each mapping validates, replays its bundled cassette to the committed snapshot (and the
local look-alike gives the same graph), and conforms to JupiterOne's rules. And the data
lines up with the vendor cassettes: resolving the DigiCert and NowSecure offline runs'
mapped relationships against these graphs finds the Domains and Persons chosen to be
found, and not the ones chosen to be missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.pipeline.compile import compile_file
from tests.conftest import CASSETTES, MAPPINGS, ROOT, SNAPSHOTS, UPDATE_SNAPSHOTS
from tests.fakes import domains, people
from tests.fakes.server import LocalApi
from tests.graphtools import compare_snapshot, conformance_problems, read_output, snapshot_of

EXAMPLES = MAPPINGS / "examples"
PEOPLE = EXAMPLES / "people.yaml"
DOMAINS = EXAMPLES / "domains.yaml"
SCHEMA = ROOT / "engine" / "schema" / "mapping.schema.json"

EXAMPLE_ENV = (
    "PEOPLE_API_TOKEN",
    "PEOPLE_BASE_URL",
    "PEOPLE_PAGE_SIZE",
    "DNS_API_KEY",
    "DNS_BASE_URL",
    "DNS_PAGE_SIZE",
)

# What each offline run prints, and how its look-alike is served and configured live.
RUNS = {
    "people": (
        PEOPLE,
        "Graph: 11 entities, 13 relationships",
        people.install,
        people.ROOT,
        ("--config", f"apiToken={people.API_TOKEN}", "--config", "pageSize=3"),
    ),
    "domains": (
        DOMAINS,
        "Graph: 37 entities, 47 relationships",
        domains.install,
        domains.ROOT,
        ("--config", f"apiKey={domains.API_KEY}", "--config", "pageSize=2"),
    ),
}

# The lining up, chosen in tests/fakes/people.py and tests/fakes/domains.py.
PERSONS_FOUND = {"alice@example.com", "bob@example.com"}
PERSONS_NOT_FOUND = {"carol@example.com"}  # NowSecure's inactive user, no longer in the directory
DOMAINS_FOUND = {"www.example.com", "example.com", "example.org", "api.example.org", "shop.example.com"}
DOMAINS_NOT_FOUND = {"pending.example.com", "checkout.example.com", "old.example.net"}


@pytest.fixture(autouse=True)
def no_example_env(monkeypatch):
    """A value in the developer's shell must not change what the tests replay."""
    for name in EXAMPLE_ENV:
        monkeypatch.delenv(name, raising=False)


def run_offline(etl, mapping: Path, out: Path) -> dict:
    result = etl("run", mapping, "--offline", "--output", out)
    assert result.exit_code == 0, result.stdout + result.stderr
    return read_output(out)


# -- each mapping on its own ------------------------------------------------------------------


def test_both_mappings_validate(etl):
    result = etl("validate", PEOPLE, DOMAINS)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert f"{PEOPLE}: ok (2 steps, 2 entity types, 2 relationship types)" in result.stdout
    assert f"{DOMAINS}: ok (3 steps, 4 entity types, 4 relationship types)" in result.stdout


@pytest.mark.parametrize("name", RUNS)
def test_offline_run_matches_snapshot(etl, tmp_path, name):
    mapping, totals, *_ = RUNS[name]
    result = etl("run", mapping, "--offline", "--output", tmp_path / "out")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert totals in result.stdout
    assert "Partial datasets: none" in result.stdout
    assert "note:" not in result.stdout  # no refused object, no duplicate key
    output = read_output(tmp_path / "out")
    compare_snapshot(snapshot_of(output), SNAPSHOTS / "examples" / name / "full-run.json", UPDATE_SNAPSHOTS)
    assert conformance_problems(compile_file(mapping), output) == []


@pytest.mark.parametrize("name", RUNS)
def test_the_local_look_alike_gives_the_cassettes_graph(etl, tmp_path, name):
    """The cassette is a recording of tests/fakes: re-recording would not change the graph."""
    mapping, _, install, root, config = RUNS[name]
    with LocalApi() as api:
        install(api)
        result = etl("run", mapping, "--base-url", api.url + root, *config, "--output", tmp_path / "live")
    assert result.exit_code == 0, result.stdout + result.stderr
    offline = run_offline(etl, mapping, tmp_path / "offline")
    assert snapshot_of(read_output(tmp_path / "live")) == snapshot_of(offline)


@pytest.mark.parametrize(
    "name, field, message",
    [("people", "apiToken", "invalid or expired API token"), ("domains", "apiKey", "invalid API key")],
    ids=["people", "domains"],
)
def test_a_wrong_credential_stops_the_run_with_the_apis_message(etl, tmp_path, name, field, message):
    mapping, _, install, root, _ = RUNS[name]
    with LocalApi() as api:
        install(api)
        result = etl("run", mapping, "--base-url", api.url + root, "--config", f"{field}=wrong", "--output", tmp_path)
    assert result.exit_code == 5
    assert f"HTTP 401 Unauthorized: {message} - check the API credentials in the config" in result.stderr


@pytest.mark.parametrize(
    "name, secret", [("people", people.API_TOKEN), ("domains", domains.API_KEY)], ids=["people", "domains"]
)
def test_cassettes_hold_no_secret_and_the_example_hosts(name, secret):
    text = (CASSETTES / "examples" / name / "full-run.yaml").read_text(encoding="utf-8")
    assert secret not in text
    assert "127.0.0.1" not in text
    host = {"people": "https://people.example.com/v1/", "domains": "https://dns.example.com/v1/"}[name]
    uris = [line.split("uri: ", 1)[1] for line in text.splitlines() if line.strip().startswith("uri: ")]
    assert uris and all(uri.startswith(host) for uri in uris)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_mapping_has_the_schema_modeline(path):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    prefix = "# yaml-language-server: $schema="
    assert first.startswith(prefix)
    assert (path.parent / first[len(prefix) :]).resolve() == SCHEMA


def test_people_graph(etl, tmp_path):
    output = run_offline(etl, PEOPLE, tmp_path / "out")
    entities = {e["_key"]: e for e in output["entities"]}
    bob = entities["hr_employee:E1002"]
    assert bob["_class"] == ["Person"]
    assert bob["email"] == "bob@example.com"  # HR typed Bob@Example.com
    assert (bob["firstName"], bob["lastName"], bob["name"]) == ("Bob", "Analyst", "Bob Analyst")
    assert bob["emailDomain"] == ["example.com"] and bob["managerEmail"] == "alice@example.com"
    assert "phone" not in bob  # no work phone
    assert entities["hr_employee:E1006"]["active"] is False
    assert entities["hr_employee:E1005"]["employeeType"] == "contractor"
    edges = {(r["_fromEntityKey"], r["_class"], r["_toEntityKey"]) for r in output["relationships"]}
    assert ("hr_employee:E1001", "MANAGES", "hr_employee:E1002") in edges
    assert ("hr_department:D-10", "HAS", "hr_employee:E1002") in edges
    # The CEO has no manager; every other person has exactly one.
    managed = sorted(to for _, cls, to in edges if cls == "MANAGES")
    assert managed == sorted(k for k in entities if k.startswith("hr_employee:") and k != "hr_employee:E1000")


def test_domains_graph(etl, tmp_path):
    output = run_offline(etl, DOMAINS, tmp_path / "out")
    entities = {e["_key"]: e for e in output["entities"]}
    zone = entities["dns_zone:z-7d1f0a"]
    assert zone["_class"] == ["Domain", "DomainZone"] and zone["domainName"] == "example.com"
    assert zone["recordsCount"] == 11
    # One Domain per host name, however many records it has (shop has an A and an AAAA).
    shop = entities["dns_subdomain:shop.example.com"]
    assert shop["_class"] == ["Domain"] and shop["domainName"] == "shop.example.com" and shop["parent"] == "example.com"
    subdomains = sorted(e["domainName"] for e in output["entities"] if e["_type"] == "dns_subdomain")
    assert subdomains == [
        "api.example.org",
        "mail.example.com",
        "ns1.dns.example.net",
        "ns2.dns.example.net",
        "shop.example.com",
        "status.example.net",
        "vpn.corp.example",
        "wiki.corp.example",
        "www.example.com",
    ]  # not the apexes, not _dmarc.example.com, not *.example.org
    record = entities["dns_record:r-1009"]
    assert record["_class"] == ["DomainRecord"]
    assert (record["type"], record["value"], record["TTL"], record["displayName"]) == (
        "AAAA",
        "2001:db8::20",
        300,
        "shop.example.com AAAA",
    )
    edges = {(r["_fromEntityKey"], r["_toEntityKey"]) for r in output["relationships"]}
    assert ("dns_subdomain:shop.example.com", "dns_record:r-1009") in edges
    assert ("dns_zone:z-7d1f0a", "dns_record:r-1009") in edges
    assert ("dns_zone:z-7d1f0a", "dns_subdomain:shop.example.com") in edges
    assert not any(frm.startswith("dns_subdomain:") and to == "dns_record:r-1011" for frm, to in edges)  # _dmarc


# -- the lining up with the vendor cassettes ---------------------------------------------------


def mapped_relationships(output: dict, relationship_type: str) -> list[dict]:
    found = [r["_mapping"] for r in output["relationships"] if r["_type"] == relationship_type and "_mapping" in r]
    assert found, f"no {relationship_type} in the run"
    return found


def matches(entity: dict, mapping: dict) -> bool:
    """The mapper's rule: any AND-group of filter keys whose every key matches; `_class`
    matches when the entity's class list holds it, a property by equality."""
    target = mapping["targetEntity"]

    def key_matches(name: str) -> bool:
        if name == "_class":
            return target["_class"] in entity["_class"]
        return name in entity and entity[name] == target[name]

    return any(all(key_matches(name) for name in group) for group in mapping["targetFilterKeys"])


def resolve(mappings: list[dict], entities: list[dict], prop: str) -> tuple[dict[str, list[str]], set[str]]:
    """Target value -> the keys of the entities it resolves to; and the values that resolve to none."""
    found: dict[str, list[str]] = {}
    missing: set[str] = set()
    for mapping in mappings:
        value = mapping["targetEntity"][prop]
        hits = sorted(e["_key"] for e in entities if matches(e, mapping))
        if hits:
            found[value] = hits
        else:
            missing.add(value)
    return found, missing


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    from click.testing import CliRunner

    from engine.cli import main

    root = tmp_path_factory.mktemp("lining-up")
    runs = {}
    for name, mapping in (
        ("digicert", MAPPINGS / "digicert.yaml"),
        ("nowsecure", MAPPINGS / "nowsecure.yaml"),
        ("people", PEOPLE),
        ("domains", DOMAINS),
    ):
        result = CliRunner().invoke(main, ["run", str(mapping), "--offline", "--output", str(root / name)])
        assert result.exit_code == 0, result.output
        runs[name] = read_output(root / name)
    return runs


def test_nowsecure_users_find_their_person(outputs):
    mappings = mapped_relationships(outputs["nowsecure"], "nowsecure_user_is_employee")
    found, missing = resolve(mappings, outputs["people"]["entities"], "email")
    assert set(found) == PERSONS_FOUND
    assert missing == PERSONS_NOT_FOUND
    # Exactly one Person each: the mapper links one employee, not several.
    assert found == {"alice@example.com": ["hr_employee:E1001"], "bob@example.com": ["hr_employee:E1002"]}


def test_digicert_certificates_find_their_domains(outputs):
    mappings = mapped_relationships(outputs["digicert"], "domain_has_digicert_certificate")
    found, missing = resolve(mappings, outputs["domains"]["entities"], "domainName")
    assert set(found) == DOMAINS_FOUND
    assert missing == DOMAINS_NOT_FOUND
    assert found["example.com"] == ["dns_zone:z-7d1f0a"]  # a zone is a Domain too
    assert found["www.example.com"] == ["dns_subdomain:www.example.com"]
    assert all(len(keys) == 1 for keys in found.values())
    # Both kinds are covered on both sides: common names the mapper would otherwise create,
    # and SANs it links only when they exist.
    skip = {m["targetEntity"]["domainName"]: m["skipTargetCreation"] for m in mappings}
    assert {skip[name] for name in DOMAINS_FOUND} == {True, False}
    assert {skip[name] for name in DOMAINS_NOT_FOUND} == {True, False}


def test_the_two_sources_resolve_nothing_of_each_other(outputs):
    """People are not Domains and zones are not Persons: each mapping's targets come from one source."""
    people_mappings = mapped_relationships(outputs["nowsecure"], "nowsecure_user_is_employee")
    domain_mappings = mapped_relationships(outputs["digicert"], "domain_has_digicert_certificate")
    assert resolve(people_mappings, outputs["domains"]["entities"], "email")[0] == {}
    assert resolve(domain_mappings, outputs["people"]["entities"], "domainName")[0] == {}
