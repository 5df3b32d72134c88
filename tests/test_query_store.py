"""Schema 3, what the query language needs from the store: relationship endpoint indexes and
property expression indexes - on a new store, on a store upgraded from schema 2 - and the SQL the
compiler writes uses them (the plans, on SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlalchemy as sa

from engine.query import compile_query
from engine.query.execute import index_names
from engine.store import schema
from engine.store.connect import open_store
from engine.store.mapper import index_name
from engine.store.url import parse_store_url
from tests.storetools import entity, relationship, store_url, write_run  # noqa: F401 - the fixture
from tests.test_query_helpers import ask, keys, load

V3_INDEXES = {"ix_etl_relationships_from", "ix_etl_relationships_to"}


def indexes(url: str, table: str) -> set[str]:
    store = open_store(parse_store_url(url), create=False)
    try:
        with store.read() as conn:
            if store.dialect == "sqlite":
                sql = f"SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = '{table}'"
            else:
                sql = f"SELECT indexname FROM pg_indexes WHERE tablename = '{table}' AND schemaname = current_schema()"
            return {row[0] for row in conn.exec_driver_sql(sql)}
    finally:
        store.close()


def property_indexes(dialect: str) -> set[str]:
    return {schema.property_index_name(p, dialect) for p in schema.QUERY_INDEXED_PROPERTIES}


def test_a_new_store_has_the_query_indexes(store_url, tmp_path):  # noqa: F811
    load(store_url, [(write_run(tmp_path / "run", [entity("h1")]), "acme")])
    dialect = parse_store_url(store_url).dialect
    assert indexes(store_url, "etl_relationships") >= V3_INDEXES
    assert property_indexes(dialect) <= indexes(store_url, "etl_entities")


def test_a_schema_2_store_is_upgraded(store_url, tmp_path):  # noqa: F811
    run = write_run(tmp_path / "run", [entity("h1"), entity("h2")], [relationship("h1", "h2")])
    load(store_url, [(run, "acme")])
    dialect = parse_store_url(store_url).dialect
    store = open_store(parse_store_url(store_url))
    with store.write() as conn:  # back to schema 2, as an etl before the query language left it
        for name in V3_INDEXES | property_indexes(dialect):
            conn.exec_driver_sql(f"DROP INDEX {name}")
        conn.execute(sa.update(schema.meta).where(schema.meta.c.name == "schema_version").values(value="2"))
    store.close()
    store = open_store(parse_store_url(store_url), create=False)  # a read-only command upgrades too
    with store.read() as conn:
        assert schema.read_version(conn) == schema.SCHEMA_VERSION >= 3
    store.close()
    assert indexes(store_url, "etl_relationships") >= V3_INDEXES
    assert property_indexes(dialect) <= indexes(store_url, "etl_entities")
    assert keys(ask(store_url, "FIND acme_host WITH name = 'h1' THAT CONNECTS acme_host")) == ["h1"]


def test_on_sqlite_the_property_index_is_the_mappers():
    """The mapper indexes a filter key with the same name and expression: one index, not two."""
    for name in ("name", "email", "tag.Owner"):
        assert schema.property_index_name(name, "sqlite") == index_name(name)


def plan_text(url: str, text: str) -> str:
    """The database's plan of a query's statement."""
    store = open_store(parse_store_url(url), create=False)
    try:
        with store.read() as conn:
            compiled, _ = compile_query(text).sql(store.dialect, index_names(conn, store.dialect))
            sql = compiled.statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
            if store.dialect == "sqlite":
                rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}").all()
                return "\n".join(str(row[-1]) for row in rows)
            conn.exec_driver_sql("ANALYZE etl_entities")  # as a large load does
            conn.exec_driver_sql("ANALYZE etl_relationships")
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # tiny tables: is an index usable at all?
            return "\n".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {sql}"))
    finally:
        store.close()


def test_the_plans_use_the_indexes(store_url, tmp_path):  # noqa: F811
    hosts = [entity(f"h{i}", name=f"host-{i}", tags=[f"t{i}"]) for i in range(50)]
    links = [relationship(f"h{i}", f"h{(i * 7 + 1) % 50}") for i in range(50)]
    load(store_url, [(write_run(tmp_path / "run", hosts, links), "acme")])
    dialect = parse_store_url(store_url).dialect
    name_index = schema.property_index_name("name", dialect)
    selective = plan_text(store_url, "FIND acme_host WITH name = 'host-7'")
    assert name_index in selective, selective
    both = plan_text(store_url, "FIND acme_host WITH name = 'host-7' THAT CONNECTS acme_host WITH name = 'host-2'")
    assert "ix_etl_relationships_from" in both and "ix_etl_relationships_to" in both, both
    hop = plan_text(store_url, "FIND acme_host WITH name = 'host-7' THAT CONNECTS acme_host")
    assert "ix_etl_relationships_from" in hop and "ix_etl_relationships_to" in hop, hop
    assert "ix_etl_entities_key" in hop, hop
    negated = plan_text(store_url, "FIND acme_host WITH name = 'host-7' THAT !CONNECTS acme_host")
    assert "ix_etl_relationships_from" in negated and "ix_etl_relationships_to" in negated, negated
