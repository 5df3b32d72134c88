"""The graph store's persister semantics and history, on a SQLite file and on a real PostgreSQL:
new, changed, unchanged and missing objects; partial types; other instances; the unchanged
reload; versions and the point-in-time diff."""

from __future__ import annotations

import json

import pytest

from engine.errors import StoreError, UsageError
from engine.output import OutputDir
from engine.store.load import load_run, run_identity
from engine.store.stage import object_row, row_object
from tests.conftest import MAPPINGS
from tests.storetools import current_keys, entity, mapped, props, relationship, rows, store, store_url, write_run

__all__ = ["store", "store_url"]  # fixtures


def test_a_load_stores_every_object_with_its_json_types(store, tmp_path):
    host = entity("h1", ipAddress=["10.0.0.1", "10.0.0.2"], active=True, ports=[22, 443], meta={"a": 1}, n=None)
    run = write_run(tmp_path / "run", [host, entity("h2")], [relationship("h1", "h2")])
    result = load_run(store, run, integration="acme")
    assert (result.instance, result.integration) == ("acme", "acme")
    assert result.counts["entities"].to_json() == {"staged": 2, "created": 2, "ended": 0}
    assert result.counts["relationships"].to_json() == {"staged": 1, "created": 1, "ended": 0}
    (h1,) = [r for r in rows(store, "etl_entities") if r["_key"] == "h1"]
    stored = props(h1)
    assert stored["ipAddress"] == ["10.0.0.1", "10.0.0.2"]  # arrays stay arrays
    assert stored["ports"] == [22, 443] and stored["active"] is True and stored["meta"] == {"a": 1}
    assert "n" in stored and stored["n"] is None
    assert (h1["_version"], h1["_endOn"]) == (1, None)
    assert h1["_createdOn"] == h1["_beginOn"] == result.loaded_on
    (rel,) = rows(store, "etl_relationships")
    assert (rel["_fromEntityKey"], rel["_toEntityKey"]) == ("h1", "h2")


def test_rows_read_back_as_the_objects_that_were_loaded():
    for obj in (
        entity("h1", ports=[1, 2]),
        relationship("a", "b", weight=1.5),
        {"_key": "k", "_type": "t", "_class": "Host", "x": {"y": [1, None]}},
        {"_key": "k", "_type": "t"},
    ):
        key, graph_type, classes, properties, source, target, mapping = object_row(obj)
        back = row_object(
            key,
            graph_type,
            json.loads(classes),
            json.loads(properties),
            source,
            target,
            mapping and json.loads(mapping),
        )
        expected = {**obj, "_class": obj.get("_class", [])}
        assert back == expected


def test_reloading_an_unchanged_run_writes_nothing(store, tmp_path):
    run = write_run(tmp_path / "run", [entity("h1"), entity("h2")], [relationship("h1", "h2")])
    load_run(store, run, integration="acme")
    before = rows(store, "etl_entities") + rows(store, "etl_relationships")
    again = load_run(store, run, integration="acme")
    assert again.unchanged_run
    assert rows(store, "etl_entities") + rows(store, "etl_relationships") == before
    # the same objects in other files (the digest differs): compared row by row, still nothing written
    write_run(tmp_path / "run", [entity("h2"), entity("h1")], [relationship("h1", "h2")], per_file=1)
    third = load_run(store, run, integration="acme")
    assert not third.unchanged_run
    assert third.counts["entities"].to_json() == {"staged": 2, "created": 0, "ended": 0}
    assert third.mapper is None  # nothing changed: the mapper did not run
    assert rows(store, "etl_entities") + rows(store, "etl_relationships") == before


def test_a_changed_object_gets_a_new_version_and_keeps_the_old_one(store, tmp_path):
    run = tmp_path / "run"
    first = load_run(store, write_run(run, [entity("h1", os="linux"), entity("h2"), entity("h3")]), integration="acme")
    second = load_run(store, write_run(run, [entity("h1", os="windows"), entity("h2")]), integration="acme")
    assert second.counts["entities"].to_json() == {"staged": 2, "created": 1, "ended": 2}
    h1 = [r for r in rows(store, "etl_entities") if r["_key"] == "h1"]
    assert [(r["_version"], props(r)["os"]) for r in h1] == [(1, "linux"), (2, "windows")]
    assert h1[0]["_endOn"] == second.loaded_on == h1[1]["_beginOn"]
    assert h1[1]["_endOn"] is None
    assert h1[0]["_createdOn"] == h1[1]["_createdOn"] == first.loaded_on
    h2 = [r for r in rows(store, "etl_entities") if r["_key"] == "h2"]
    assert [(r["_version"], r["_endOn"]) for r in h2] == [(1, None)]  # unchanged: not rewritten
    h3 = [r for r in rows(store, "etl_entities") if r["_key"] == "h3"]
    assert [(r["_version"], r["_endOn"]) for r in h3] == [(1, second.loaded_on)]  # gone: ended, kept
    # h3 comes back: version 2, first seen when it was first seen
    third = load_run(
        store, write_run(run, [entity("h1", os="windows"), entity("h2"), entity("h3")]), integration="acme"
    )
    h3 = [r for r in rows(store, "etl_entities") if r["_key"] == "h3"]
    assert [(r["_version"], r["_beginOn"], r["_endOn"]) for r in h3] == [
        (1, first.loaded_on, second.loaded_on),
        (2, third.loaded_on, None),
    ]
    assert h3[1]["_createdOn"] == first.loaded_on
    assert current_keys(store, "etl_entities") == ["h1", "h2", "h3"]


def test_partial_types_are_only_upserted_never_ended(store, tmp_path):
    run = tmp_path / "run"
    hosts = [entity("h1"), entity("h2")]
    users = [entity("u1", "acme_user", ["User"]), entity("u2", "acme_user", ["User"], admin=False)]
    load_run(store, write_run(run, hosts + users), integration="acme")
    # acme_user is partial: u1 is missing (kept), u2 changed (new version), u3 new; h2 missing (ended)
    changed = [entity("u2", "acme_user", ["User"], admin=True), entity("u3", "acme_user", ["User"])]
    result = load_run(store, write_run(run, [entity("h1"), *changed], partial=("acme_user",)), integration="acme")
    assert result.partial_types == ("acme_user",)
    assert current_keys(store, "etl_entities") == ["h1", "u1", "u2", "u3"]
    u2 = [r for r in rows(store, "etl_entities") if r["_key"] == "u2"]
    assert [(r["_version"], props(r)["admin"]) for r in u2] == [(1, False), (2, True)]
    assert [r["_key"] for r in rows(store, "etl_entities", current=False)] == ["h2", "u2"]
    # the next complete run ends the partial type's absentees too
    load_run(store, write_run(run, [entity("h1"), *changed]), integration="acme")
    assert current_keys(store, "etl_entities") == ["h1", "u2", "u3"]


def test_another_instance_is_never_touched(store, tmp_path):
    load_run(store, write_run(tmp_path / "a", [entity("a1"), entity("shared")]), integration="acme", instance="east")
    load_run(store, write_run(tmp_path / "b", [entity("b1"), entity("shared")]), integration="acme", instance="west")
    west = rows(store, "etl_entities", "west")
    result = load_run(store, write_run(tmp_path / "a", []), integration="acme", instance="east")
    assert result.counts["entities"].ended == 2
    assert current_keys(store, "etl_entities", "east") == []
    assert rows(store, "etl_entities", "west") == west
    with pytest.raises(StoreError, match="holds integration 'acme'"):
        load_run(store, write_run(tmp_path / "c", [entity("c1")]), integration="other", instance="west")


def test_the_instance_and_integration_come_from_the_summary_or_the_options(tmp_path):
    bare = OutputDir.open(write_run(tmp_path / "bare", []))
    assert run_identity(bare, "acme", None) == ("acme", "acme")
    assert run_identity(bare, "acme", "prod") == ("acme", "prod")
    with pytest.raises(UsageError, match="pass --integration"):
        run_identity(bare, None, None)
    named = OutputDir.open(write_run(tmp_path / "named", [], integration={"id": "acme", "instance": "eu"}))
    assert run_identity(named, None, None) == ("acme", "eu")
    assert run_identity(named, None, "us") == ("acme", "us")
    with pytest.raises(UsageError, match="says the run is integration 'acme'"):
        run_identity(named, "other", None)
    with pytest.raises(UsageError, match="reserved"):
        run_identity(bare, "acme", "system-mapper")


def test_a_run_records_its_instance_from_the_mapping(etl, tmp_path):
    """integration.instance (a template over config) names the instance in summary.json; without
    it the instance is the integration id."""
    import json

    from tests.conftest import MAPPINGS

    assert etl("run", MAPPINGS / "nowsecure.yaml", "--offline", "--output", tmp_path / "ns").exit_code == 0
    summary = json.loads((tmp_path / "ns" / "summary.json").read_text())
    assert summary["metadata"]["integration"] == {"id": "nowsecure", "instance": "5e1f6c2a-0d3b-4e8f-9a71-2b4c6d8e0f13"}
    assert etl("run", MAPPINGS / "digicert.yaml", "--offline", "--output", tmp_path / "dc").exit_code == 0
    summary = json.loads((tmp_path / "dc" / "summary.json").read_text())
    assert summary["metadata"]["integration"] == {"id": "digicert", "instance": "digicert"}


def test_a_duplicate_key_in_a_run_is_refused_and_changes_nothing(store, tmp_path):
    load_run(store, write_run(tmp_path / "run", [entity("h1")]), integration="acme")
    before = rows(store, "etl_entities")
    from engine.errors import OutputDirError

    with pytest.raises(OutputDirError, match="two entities have the _key 'h2'"):
        load_run(store, write_run(tmp_path / "run", [entity("h2"), entity("h2")]), integration="acme")
    assert rows(store, "etl_entities") == before


def test_the_store_diff_of_two_points_is_the_directory_diff(etl, store_url, tmp_path):
    old = write_run(tmp_path / "old", [entity("h1", os="linux"), entity("h2")], [relationship("h1", "h2")])
    new = write_run(tmp_path / "new", [entity("h1", os="windows"), entity("h3")], [relationship("h1", "h3")])
    for run in (old, new):
        assert etl("load", run, "--store", store_url, "--integration", "acme", "-q").exit_code == 0
    from engine.store.connect import open_store
    from engine.store.history import format_time
    from engine.store.url import parse_store_url

    store = open_store(parse_store_url(store_url))
    first, second = sorted({r["_beginOn"] for r in rows(store, "etl_entities")})
    store.close()
    directory = etl("diff", old, new, "--format", "json")
    stored = etl(
        "diff", "--store", store_url, "--instance", "acme", "--since", format_time(first), "--until", format_time(second),
        "--format", "json",
    )  # fmt: skip
    assert (stored.exit_code, directory.exit_code) == (1, 1)
    assert json.loads(stored.stdout) == json.loads(directory.stdout)
    text = etl("diff", "--store", store_url, "--instance", "acme", "--since", format_time(first))
    assert text.stdout.splitlines()[2:] == etl("diff", old, new).stdout.splitlines()[2:]
    assert text.stdout.startswith("--- ")
    same = etl("diff", "--store", store_url, "--instance", "acme", "--since", format_time(second))
    assert same.exit_code == 0 and "No differences." in same.stdout
    before_anything = etl("diff", "--store", store_url, "--instance", "acme", "--since", "1d", "--format", "json")
    assert json.loads(before_anything.stdout)["entities"]["added"] == ["h1", "h3"]


def test_digicert_offline_loads_and_reloads(etl, store_url, tmp_path):
    out = tmp_path / "digicert"
    result = etl("run", MAPPINGS / "digicert.yaml", "--offline", "--output", out, "--store", store_url)
    assert result.exit_code == 0, result.output
    assert "(instance digicert, integration digicert)" in result.stdout
    assert "entities: 11 in the run, 11 new versions" in result.stdout
    again = etl("load", out, "--store", store_url, "--integration", "digicert")
    assert again.exit_code == 0 and "unchanged since the last load" in again.stdout


def test_a_failed_run_loads_nothing(etl, tmp_path):
    url = f"sqlite:///{tmp_path / 'graph.db'}"
    result = etl("run", MAPPINGS / "digicert.yaml", "--output", tmp_path / "out", "--store", url)
    assert result.exit_code == 4  # no API key: the run fails before writing anything
    assert "graph.db" not in result.stdout
    from engine.store.connect import open_store
    from engine.store.url import parse_store_url

    store = open_store(parse_store_url(url))
    assert rows(store, "etl_entities") == []
    store.close()


@pytest.mark.parametrize("parallel", [False, True])
def test_every_column_is_staged_whichever_are_null(store, tmp_path, parallel):
    """Staging leaves NULL columns out of its INSERTs (sqlite3 binds None slowly): each row keeps
    its values in their columns, in a worker process as in-process."""
    odd = {"_key": "odd", "_type": "acme_odd", "_class": "ODD", "_fromEntityKey": "h1", "_toEntityKey": 7}
    domain = mapped("h1", {"_type": "acme_domain", "_class": "Domain", "name": "a.example"}, [["_class", "name"]])
    run = write_run(tmp_path / "run", [entity("h1"), entity("h2")], [relationship("h1", "h2"), odd, domain])
    load_run(store, run, integration="acme", parallel=parallel)
    columns = ("_key", "_fromEntityKey", "_toEntityKey")
    got = {r["_key"]: r for r in rows(store, "etl_relationships", "acme")}
    assert [tuple(got["h1|connects|h2"][c] for c in columns), got["h1|connects|h2"]["_mapping"]] == [
        ("h1|connects|h2", "h1", "h2"),
        None,
    ]
    assert (got["odd"]["_fromEntityKey"], got["odd"]["_toEntityKey"], props(got["odd"])["_toEntityKey"]) == (
        "h1",
        None,
        7,
    )
    mapping = got[domain["_key"]]["_mapping"]
    assert (json.loads(mapping) if isinstance(mapping, str) else mapping) == domain["_mapping"]
    assert got[domain["_key"]]["_fromEntityKey"] is None
    assert [r["_key"] for r in rows(store, "etl_entities", "acme")] == ["h1", "h2"]


INDEX_SQL = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"


def _index_sql(path) -> dict[str, str]:
    import sqlite3

    db = sqlite3.connect(path)
    try:
        return dict(db.execute(INDEX_SQL).fetchall())
    finally:
        db.close()


def test_a_load_into_an_empty_sqlite_store_builds_some_indexes_after_and_keeps_them(tmp_path, monkeypatch):
    """SQLite, empty tables: the merge drops the indexes its rows would fill out of order and builds
    them again in the same transaction - identical after a load, untouched by a failed one."""
    import engine.store.load
    import engine.store.mapper
    from engine.store.connect import open_store
    from engine.store.url import parse_store_url

    path = tmp_path / "graph.db"
    domain = mapped("h1", {"_type": "acme_host", "_class": "Host", "hostname": "h2.example"}, [["_class", "hostname"]])
    run = write_run(tmp_path / "run", [entity("h1"), entity("h2", hostname="h2.example")], [domain])
    deferred: list[str] = []
    out_of_order = engine.store.load._out_of_order_indexes

    def spy(conn, table):
        found = out_of_order(conn, table)
        deferred.extend(name for name, _ in found)
        return found

    run_mapper = engine.store.mapper.run_mapper
    inside: list[dict] = []

    def failing_mapper(store, conn, now):
        inside.append(dict(conn.exec_driver_sql(INDEX_SQL).all()))
        raise ZeroDivisionError

    monkeypatch.setattr(engine.store.load, "_out_of_order_indexes", spy)
    monkeypatch.setattr(engine.store.mapper, "run_mapper", failing_mapper)
    opened = open_store(parse_store_url(f"sqlite:///{path}"))
    try:
        with pytest.raises(ZeroDivisionError):
            load_run(opened, run, integration="acme")
        before = _index_sql(path)  # with the mapper's index on hostname, built before the load's transaction
        properties = {name for name in before if name.startswith("ix_etl_entities_prop_")}
        assert len(properties) == 3  # name and displayName (the query's), hostname (the mapper's)
        assert set(deferred) == properties | {"ix_etl_relationships_to"}
        assert inside == [before]  # built again, the same, inside the transaction
        assert rows(opened, "etl_entities") == rows(opened, "etl_relationships") == []
        assert _index_sql(path) == before  # the failed load rolled the drops back with the rest
        monkeypatch.setattr(engine.store.mapper, "run_mapper", run_mapper)
        deferred.clear()
        assert load_run(opened, run, integration="acme").mapper.resolved == 1
        assert _index_sql(path) == before and set(deferred) == properties | {"ix_etl_relationships_to"}
        deferred.clear()
        load_run(opened, write_run(tmp_path / "run", [entity("h1")]), integration="acme")
        assert deferred == []  # the tables hold rows: every index is kept
    finally:
        opened.close()


def test_a_new_sqlite_store_has_16_kib_pages_and_an_older_store_keeps_its_own(tmp_path):
    import sqlite3

    from engine.store.connect import SQLITE_PAGE_SIZE, open_store
    from engine.store.url import parse_store_url

    old = tmp_path / "old.db"
    db = sqlite3.connect(old)
    db.execute("PRAGMA page_size=4096")
    db.execute("PRAGMA journal_mode=WAL")
    db.close()
    run = write_run(tmp_path / "run", [entity("h1"), entity("h2")], [relationship("h1", "h2")])
    for path, size in ((tmp_path / "new.db", SQLITE_PAGE_SIZE), (old, 4096)):
        opened = open_store(parse_store_url(f"sqlite:///{path}"))
        try:
            assert load_run(opened, run, integration="acme").counts["relationships"].created == 1
            assert current_keys(opened, "etl_entities") == ["h1", "h2"]
        finally:
            opened.close()
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA page_size").fetchone() == (size,)
        db.close()
    assert SQLITE_PAGE_SIZE == 16384
