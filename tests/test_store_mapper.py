"""The store's mapper, on both backends: matches (OR of AND-groups, class membership, equality),
directions, placeholders and skipTargetCreation, late resolution and placeholder retirement."""

from __future__ import annotations

from engine.store.load import load_run
from engine.store.targets import filter_key_groups
from engine.tools.visualize import identities as visualize_identities
from tests.conftest import MAPPINGS
from tests.storetools import current_keys, entity, mapped, props, rows, store, store_url, write_run

__all__ = ["store", "store_url"]  # fixtures

DOMAIN = {"_type": "domain", "_class": "Domain", "domainName": "example.com", "displayName": "example.com"}
BY_NAME = [["_class", "domainName"]]


def mapper_rows(store, table: str) -> list[dict]:
    return rows(store, table, "system-mapper", current=True)


def test_visualize_uses_the_same_filter_key_rules():
    assert visualize_identities.filter_key_groups is filter_key_groups
    assert filter_key_groups({}) == [("_type", "_key")]
    assert filter_key_groups({"targetFilterKeys": ["a", ["b", "c"]]}) == [("a",), ("b", "c")]


def test_no_match_creates_a_placeholder_unless_skipTargetCreation(store, tmp_path):
    run = write_run(
        tmp_path / "certs",
        [entity("cert1", "acme_cert", ["Certificate"]), entity("cert2", "acme_cert", ["Certificate"])],
        [
            mapped("cert1", DOMAIN, BY_NAME, direction="REVERSE"),
            mapped("cert2", DOMAIN, BY_NAME, direction="REVERSE"),  # the same target: one placeholder
            mapped("cert2", {**DOMAIN, "domainName": "skip.example.com"}, BY_NAME, skip=True),
        ],
    )
    result = load_run(store, run, integration="acme")
    assert result.mapper.mapped == 3 and result.mapper.skipped == 1
    (placeholder,) = mapper_rows(store, "etl_entities")
    assert placeholder["_key"] == "placeholder:domain:_class=Domain:domainName=example.com"
    assert placeholder["_type"] == "domain"
    assert props(placeholder)["domainName"] == "example.com"
    edges = mapper_rows(store, "etl_relationships")
    assert [(r["_fromEntityKey"], r["_toEntityKey"], r["_type"]) for r in edges] == [
        (placeholder["_key"], "cert1", "acme_host_has_domain"),
        (placeholder["_key"], "cert2", "acme_host_has_domain"),
    ]  # REVERSE: target -> source
    assert [r["_key"] for r in edges] == [f"{placeholder['_key']}|has|cert1", f"{placeholder['_key']}|has|cert2"]
    assert all("_mapping" not in props(r) for r in edges)


def test_a_domain_loaded_later_by_another_integration_is_found_and_the_placeholder_retires(store, tmp_path):
    certs = write_run(
        tmp_path / "certs",
        [entity("cert1", "acme_cert", ["Certificate"])],
        [mapped("cert1", DOMAIN, BY_NAME, direction="REVERSE")],
    )
    load_run(store, certs, integration="acme")
    (placeholder,) = mapper_rows(store, "etl_entities")
    # a DNS integration brings the real Domain (its class a list, more properties)
    real = entity("dns:example.com", "dns_domain", ["Domain", "Site"], domainName="example.com")
    other = entity("dns:other.com", "dns_domain", ["Domain"], domainName="other.com")
    result = load_run(store, write_run(tmp_path / "dns", [real, other]), integration="dns")
    assert result.mapper.resolved == 1 and result.mapper.placeholders == 0
    assert mapper_rows(store, "etl_entities") == []  # retired ...
    (retired,) = rows(store, "etl_entities", "system-mapper")
    assert retired["_key"] == placeholder["_key"] and retired["_endOn"] == result.loaded_on  # ... and kept
    (edge,) = mapper_rows(store, "etl_relationships")
    assert (edge["_fromEntityKey"], edge["_toEntityKey"]) == ("dns:example.com", "cert1")
    # the domain goes away: the placeholder is back (a new version of it)
    load_run(store, write_run(tmp_path / "dns", [other]), integration="dns")
    (again,) = mapper_rows(store, "etl_entities")
    assert (again["_key"], again["_version"]) == (placeholder["_key"], 2)


def test_every_match_of_any_group_gets_a_relationship_forward(store, tmp_path):
    people = [
        entity("p1", "hr_employee", ["Person"], email="alice@example.com", username="alice"),
        entity("p2", "hr_employee", ["Person"], email="other@example.com", username="alice2"),
        entity("p3", "hr_employee", ["Person", "User"], email="x@example.com", username="al"),
        entity("u9", "hr_account", ["User"], email="alice@example.com"),  # not a Person
    ]
    load_run(store, write_run(tmp_path / "hr", people), integration="hr")
    target = {"_type": "employee", "_class": "Person", "email": "alice@example.com", "username": "al"}
    keys = [["_class", "email"], ["_class", "username"]]  # OR of two ANDs
    users = write_run(
        tmp_path / "ns",
        [entity("user1", "ns_user", ["User"])],
        [mapped("user1", target, keys, skip=True, graph_type="ns_user_is_employee", cls="IS")],
    )
    result = load_run(store, users, integration="ns")
    assert result.mapper.resolved == 2 and result.mapper.placeholders == 0
    edges = mapper_rows(store, "etl_relationships")
    assert [(r["_key"], r["_fromEntityKey"], r["_toEntityKey"]) for r in edges] == [
        ("user1|is|p1", "user1", "p1"),
        ("user1|is|p3", "user1", "p3"),
    ]


def test_properties_match_by_json_equality(store, tmp_path):
    hosts = [
        entity("a", "h", ["Host"], tags=["x", "y"], port=443, flag=True),
        entity("b", "h", ["Host"], tags=["x"], port="443", flag=1),
    ]
    load_run(store, write_run(tmp_path / "hosts", hosts), integration="hosts")
    wanted = [
        ({"_type": "h", "_class": "Host", "tags": ["x", "y"]}, [["tags"]], ["a"]),  # an equal array only
        ({"_type": "h", "_class": "Host", "tags": "x"}, [["tags"]], []),  # not an element of an array
        ({"_type": "h", "_class": "Host", "port": 443}, [["_class", "port"]], ["a"]),  # 443 is not "443"
        ({"_type": "h", "_class": "Host", "flag": True}, [["flag"]], ["a"]),  # true is not 1
        ({"_type": "h", "_class": "Host", "_key": "b"}, None, ["b"]),  # the default: _type and _key
    ]
    relationships = [
        mapped(f"src{n}", target, keys, skip=True, graph_type=f"t{n}") for n, (target, keys, _) in enumerate(wanted)
    ]
    load_run(store, write_run(tmp_path / "src", [entity("src")], relationships), integration="src")
    found = {r["_type"]: r["_toEntityKey"] for r in mapper_rows(store, "etl_relationships")}
    for number, (_, _, expected) in enumerate(wanted):
        got = [found[f"t{number}"]] if f"t{number}" in found else []
        assert got == expected, number


def test_mapper_output_has_history_and_other_instances_are_untouched(store, tmp_path):
    certs = write_run(tmp_path / "certs", [entity("c1")], [mapped("c1", DOMAIN, BY_NAME)])
    load_run(store, certs, integration="acme")
    acme = rows(store, "etl_relationships", "acme")
    load_run(store, write_run(tmp_path / "certs", [entity("c1")], []), integration="acme")  # the mapping is gone
    assert mapper_rows(store, "etl_relationships") == [] and mapper_rows(store, "etl_entities") == []
    assert len(rows(store, "etl_relationships", "system-mapper")) == 1  # ended, kept
    assert [r["_key"] for r in rows(store, "etl_relationships", "acme")] == [acme[0]["_key"]]
    assert current_keys(store, "etl_entities", "acme") == ["c1"]


def test_digicert_certificates_link_to_domains_loaded_from_elsewhere(etl, store_url, tmp_path):
    out = tmp_path / "digicert"
    assert etl("run", MAPPINGS / "digicert.yaml", "--offline", "--output", out).exit_code == 0
    domains = [
        entity(f"zone:{name}", "dns_domain", ["Domain"], domainName=name, displayName=name)
        for name in ("example.com", "www.example.com", "shop.example.com")
    ]
    assert (
        etl("load", write_run(tmp_path / "zones", domains), "--store", store_url, "--integration", "dns").exit_code == 0
    )
    loaded = etl("load", out, "--store", store_url, "--integration", "digicert")
    assert loaded.exit_code == 0, loaded.output
    from engine.store.connect import open_store
    from engine.store.url import parse_store_url

    store = open_store(parse_store_url(store_url))
    try:
        edges = {(r["_fromEntityKey"], r["_toEntityKey"]) for r in mapper_rows(store, "etl_relationships")}
        assert ("zone:www.example.com", "digicert_certificate:100001") in edges
        assert ("zone:example.com", "digicert_certificate:100001") in edges
        placeholders = [r["_key"] for r in mapper_rows(store, "etl_entities")]
        assert "placeholder:domain:_class=Domain:domainName=example.com" not in placeholders
    finally:
        store.close()
