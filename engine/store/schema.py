"""The store's tables, its schema version, and the migrations that build and upgrade it.

Every object version is one row; the current version of an object has ``_endOn`` NULL::

    etl_meta           name -> value: schema_version, the filter keys indexed for the mapper
    etl_instances      one row per integration instance: name (unique), integration id, last load
    etl_entities       instance_id, _key, _type, _class (JSON list), properties (JSON), history
    etl_relationships  the same, plus _fromEntityKey, _toEntityKey, _mapping (JSON, mapped ones)
    etl_loads          one row per load that changed something (schema 2): when, counts, partial types
    etl_state          incremental state (schema 4): per instance and step, the saved high-water mark

History columns: ``_version`` (1, 2, ... per instance and _key), ``_createdOn`` (first seen),
``_beginOn`` (this version), ``_endOn`` (when it stopped being current). Times are epoch ms.
``properties`` holds every property of the object except ``_key``, ``_type`` and the columns
above, with its JSON type (arrays stay arrays); ``_class`` is also kept there when the object
gave it as a string (so an object reads back exactly as it was loaded). ``_rawData`` is not
stored. JSON columns are JSON (text) on SQLite and JSONB on PostgreSQL.

Query-friendly by design (a J1QL compiler will target these tables): current rows are
``"_endOn" IS NULL`` and have partial indexes on ``_type`` (entities also on ``_key``, across
instances); class membership is
``EXISTS (SELECT 1 FROM json_each("_class") WHERE value = 'Host')`` on SQLite and
``"_class" @> '"Host"'`` on PostgreSQL (:func:`engine.store.sql.has_class`); a property is
``json_extract(properties, '$."name"')`` / ``properties ->> 'name'``, and the mapper
adds an expression index for each property used as a filter key.

Migrations: :data:`MIGRATIONS` ``[n]`` turns a schema ``n - 1`` store into a schema ``n`` one; a
new store runs them all. Opening a store (:func:`engine.store.connect.open_store`) applies the
missing ones with :func:`migrate` in one transaction, under a lock (two processes opening a new
store do not race), and refuses a store newer than the code (:func:`check_version`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateIndex, CreateTable

from ..errors import StoreError, StoreVersionError

SCHEMA_VERSION = 4
MAPPER_INSTANCE = "system-mapper"  # the reserved instance owning the mapper's relationships and placeholders

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: INTEGER PRIMARY KEY is the rowid
JSON_TYPE = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
TIME = sa.BigInteger()

metadata = sa.MetaData()

meta = sa.Table(
    "etl_meta",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

instances = sa.Table(
    "etl_instances",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(400), nullable=False, unique=True),
    sa.Column("integration", sa.String(400), nullable=False),
    sa.Column("last_load_on", TIME),  # epoch ms of the last load that changed the store
    sa.Column("partial_types", JSON_TYPE),  # the last load's partial types
    sa.Column("run_digest", sa.String(64)),  # the last load's run, for the unchanged-reload check
)


def _graph_table(name: str, *extra: sa.Column) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("instance_id", sa.Integer, sa.ForeignKey("etl_instances.id"), nullable=False),
        sa.Column("_key", sa.Text, nullable=False),
        sa.Column("_type", sa.Text, nullable=False),
        sa.Column("_class", JSON_TYPE, nullable=False),
        sa.Column("properties", JSON_TYPE, nullable=False),
        *extra,
        sa.Column("_version", sa.Integer, nullable=False),
        sa.Column("_createdOn", TIME, nullable=False),
        sa.Column("_beginOn", TIME, nullable=False),
        sa.Column("_endOn", TIME),
    )


entities = _graph_table("etl_entities")
relationships = _graph_table(
    "etl_relationships",
    sa.Column("_fromEntityKey", sa.Text),
    sa.Column("_toEntityKey", sa.Text),
    sa.Column("_mapping", JSON_TYPE),
)

loads = sa.Table(
    "etl_loads",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("instance_id", sa.Integer, sa.ForeignKey("etl_instances.id"), nullable=False),
    sa.Column("loaded_on", TIME, nullable=False),
    sa.Column("partial_types", JSON_TYPE, nullable=False),
    sa.Column("counts", JSON_TYPE, nullable=False),  # {"entities": {"created": n, "ended": n}, ...}
)


def _current(table: sa.Table) -> dict:
    """The keyword arguments of a partial index over the current rows."""
    where = table.c._endOn.is_(None)
    return {"sqlite_where": where, "postgresql_where": where}


def _mapped(table: sa.Table) -> dict:
    where = sa.and_(table.c._endOn.is_(None), table.c._mapping.is_not(None))
    return {"sqlite_where": where, "postgresql_where": where}


INDEXES_V1 = [
    sa.Index(f"ix_{t.name}_identity", t.c.instance_id, t.c._key, t.c._version, unique=True)
    for t in (entities, relationships)
] + [
    sa.Index("ix_etl_entities_type", entities.c._type, **_current(entities)),
    sa.Index("ix_etl_entities_key", entities.c._key, **_current(entities)),
    sa.Index("ix_etl_relationships_type", relationships.c._type, **_current(relationships)),
]
# Relationship endpoints are indexed by schema 3 (INDEXES_V3), for the query language.
INDEXES_V2 = [
    sa.Index("ix_etl_relationships_mapped", relationships.c.id, **_mapped(relationships)),
    sa.Index("ix_etl_loads_instance", loads.c.instance_id, loads.c.loaded_on),
]


def _v1(conn: Connection) -> None:
    """The first schema: meta, instances, entities and relationships with their core indexes."""
    for table in (meta, instances, entities, relationships):
        conn.execute(CreateTable(table))
    for index in INDEXES_V1:
        conn.execute(CreateIndex(index))


def _v2(conn: Connection) -> None:
    """Schema 2: the load log (etl_loads) and the index of current mapped relationships."""
    conn.execute(CreateTable(loads))
    for index in INDEXES_V2:
        conn.execute(CreateIndex(index))


# Schema 3: what the query language (engine/query/) needs. Traversals look relationships up by
# either endpoint; filters on the commonest properties use an expression index (on SQLite the
# mapper's own form, so the mapper reuses it; on PostgreSQL the jsonb value, whose order keeps
# arrays together - see engine/query/dialect.py).
INDEXES_V3 = [
    sa.Index("ix_etl_relationships_from", relationships.c._fromEntityKey, **_current(relationships)),
    sa.Index("ix_etl_relationships_to", relationships.c._toEntityKey, **_current(relationships)),
]
QUERY_INDEXED_PROPERTIES = ("name", "displayName")


def property_index_name(name: str, dialect: str) -> str:
    """The name of the query index on property ``name`` (SQLite: the mapper's name for it)."""
    prefix = "ix_etl_entities_json_" if dialect == "postgresql" else "ix_etl_entities_prop_"
    return prefix + hashlib.sha1(name.encode()).hexdigest()[:12]


def property_index_sql(name: str, dialect: str) -> str | None:
    """``CREATE INDEX IF NOT EXISTS`` of the query index on property ``name`` (None: a name SQLite's
    JSON paths cannot quote). SQLite: ``json_extract`` over the current rows, as the mapper builds
    it; PostgreSQL: the jsonb value ``properties -> 'name'`` over every row (statistics need it)."""
    index = property_index_name(name, dialect)
    if dialect == "postgresql":
        literal = "'" + name.replace("'", "''") + "'"
        return f"CREATE INDEX IF NOT EXISTS {index} ON etl_entities ((properties -> {literal}))"
    if '"' in name or "\\" in name:
        return None
    path = "'$.\"" + name.replace("'", "''") + "\"'"
    expression = f"json_extract(properties, {path})"
    return f'CREATE INDEX IF NOT EXISTS {index} ON etl_entities (({expression})) WHERE "_endOn" IS NULL'


def _v3(conn: Connection) -> None:
    """Schema 3: relationship endpoint indexes (current rows) and the query's property indexes."""
    for index in INDEXES_V3:
        conn.execute(CreateIndex(index, if_not_exists=True))
    for name in QUERY_INDEXED_PROPERTIES:
        sql = property_index_sql(name, conn.dialect.name)
        if sql is not None:
            conn.exec_driver_sql(sql)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ANALYZE etl_entities")  # the expression indexes' statistics


state = sa.Table(
    "etl_state",
    metadata,
    sa.Column("instance_id", sa.Integer, sa.ForeignKey("etl_instances.id"), primary_key=True),
    sa.Column("step", sa.String(400), primary_key=True),
    sa.Column("state", JSON_TYPE, nullable=False),  # {"since", "lastRun", "mark", "compare"}
    sa.Column("saved_on", TIME, nullable=False),
)


def _v4(conn: Connection) -> None:
    """Schema 4: incremental state (``etl run --store``: engine/store/state.py)."""
    conn.execute(CreateTable(state, if_not_exists=True))


MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _v1, 2: _v2, 3: _v3, 4: _v4}
assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))


def read_version(conn: Connection) -> int:
    """The schema version of the store (0: an empty database, not yet an etl store)."""
    if not sa.inspect(conn).has_table(meta.name):
        return 0
    value = conn.execute(sa.select(meta.c.value).where(meta.c.name == "schema_version")).scalar()
    try:
        return int(value) if value is not None else 0
    except ValueError:
        raise StoreError(f"the store's schema_version is {value!r}, not a number; is it an etl store?") from None


def check_version(version: int, label: str) -> None:
    if version > SCHEMA_VERSION:
        raise StoreVersionError(
            f"{label} has schema version {version}, newer than this etl's ({SCHEMA_VERSION}); it was written "
            f"by a newer etl - upgrade etl to use it (nothing was changed)"
        )


def migrate(conn: Connection, version: int, target: int = SCHEMA_VERSION) -> None:
    """Apply the migrations after ``version`` up to ``target``, in the caller's transaction."""
    for step in range(version + 1, target + 1):
        MIGRATIONS[step](conn)
    if target == version:
        return
    if version == 0:
        conn.execute(sa.insert(meta).values(name="schema_version", value=str(target)))
    else:
        conn.execute(sa.update(meta).where(meta.c.name == "schema_version").values(value=str(target)))
