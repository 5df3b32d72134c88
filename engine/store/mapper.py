"""The mapper: resolve every current mapped relationship against the current entities of all
instances, and keep the result as the reserved instance ``system-mapper``.

For each mapped relationship (a relationship with ``_mapping``) and each usable group of its
``targetFilterKeys`` (an OR of AND-groups, :mod:`engine.store.targets`), the entities that match
every key of the group are its targets: ``_class`` by membership in the entity's class list,
any other key by JSON equality. Each target gets one relationship in the mapping's
direction (FORWARD: source -> target, REVERSE: target -> source), keyed
``<from>|<class, lower case>|<to>`` and carrying the mapped relationship's ``_type``, ``_class``
and properties. With no match, ``skipTargetCreation: false`` creates a placeholder entity
(the ``targetEntity`` properties, keyed by :func:`~engine.store.targets.placeholder_key`) and
relates to it; ``skipTargetCreation: true`` creates nothing. Placeholders never match.

The mapper runs inside every load that changed something, after the instance's changes, and
its output is merged like a load of ``system-mapper`` (history included): a relationship or
placeholder no longer produced is ended - so a placeholder retires once a real entity matches.

Finding candidates is set-based: the target values of a chunk of mapped relationships are
looked up in batches through an index - ``_key`` and ``_type`` columns, or an expression index
on the property (:func:`ensure_filter_indexes` adds one per property used as a filter key) - and
each candidate is then checked in Python with the exact rules above.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..jsonio import decode_json
from . import schema
from .connect import Store
from .jsontext import canonical, dumps
from .sql import has_class, json_path, one_of, property_text, stage_table
from .stage import Row, copy_rows, insert_sqlite, object_row, row_object
from .targets import matches, placeholder_key, usable_groups
from .url import POSTGRESQL

CHUNK = 20000  # mapped relationships resolved at a time
LOOKUP_BATCH = 5000  # values per candidate query (SQLite allows 32766 parameters)
META_FILTER_KEYS = "mapper_filter_key_indexes"

Driver = tuple[str, str]  # ("_key" | "_type" | "_class" | "property", property name or "")
JSON_COLUMNS = ("_class", "properties", "_mapping")


def _raw(column: Any) -> Any:
    """A JSON column read as it comes from the driver (text on SQLite: parsed once, by :func:`_json`)."""
    return sa.type_coerce(column, sa.Text).label(column.name)


def _json(value: Any) -> Any:
    return decode_json(value) if isinstance(value, str) else value


@dataclass
class MapperResult:
    mapped: int = 0  # current mapped relationships
    resolved: int = 0  # relationships to existing entities
    placeholders: int = 0  # placeholder entities (targets created)
    to_placeholders: int = 0  # relationships to placeholders
    skipped: int = 0  # no match and skipTargetCreation (or a target without _type/_class): nothing created
    created: int = 0  # mapper rows written (new versions)
    ended: int = 0  # mapper rows ended (a placeholder retired, a relationship gone)
    seconds: float = 0.0

    def format(self) -> str:
        return (
            f"mapper: {self.mapped} mapped relationships -> {self.resolved} to existing entities, "
            f"{self.to_placeholders} to {self.placeholders} placeholders, {self.skipped} without a target; "
            f"{self.created} new versions, {self.ended} ended ({self.seconds:.2f} s)"
        )


@dataclass
class MappedRow:
    instance_id: int
    key: str
    type: str
    classes: Any
    properties: dict
    mapping: dict


# -- reading mapped relationships --------------------------------------------------------------


def mapped_rows(conn: Connection, instance_ids: Iterable[int] | None, exclude: int | None) -> Iterator[list[MappedRow]]:
    """The current mapped relationships (of ``instance_ids``, or of every instance but
    ``exclude``), in chunks, by id (keyset pagination: the same SQL for every chunk)."""
    t = schema.relationships
    last = 0
    while True:
        query = (
            sa.select(t.c.id, t.c.instance_id, t.c._key, t.c._type, *(_raw(t.c[c]) for c in JSON_COLUMNS))
            .where(t.c._endOn.is_(None), t.c._mapping.is_not(None), t.c.id > sa.bindparam("last"))
            .order_by(t.c.id)
            .limit(CHUNK)
        )
        if instance_ids is not None:
            query = query.where(t.c.instance_id.in_(sorted(instance_ids)))
        elif exclude is not None:
            query = query.where(t.c.instance_id != exclude)
        rows = conn.execute(query, {"last": last}).all()
        if not rows:
            return
        last = rows[-1][0]
        chunk = []
        for _, instance_id, key, graph_type, classes, properties, mapping in rows:
            mapping = _json(mapping)
            if isinstance(mapping, dict):
                chunk.append(MappedRow(instance_id, key, graph_type, _json(classes), _props(properties), mapping))
        yield chunk


# -- resolving ------------------------------------------------------------------------------------


def _driver(group: tuple[str, ...], target: dict, dialect: str) -> tuple[Driver, Any] | None:
    """How to look up candidates of a group: the most selective key with a string value."""
    if "_key" in group and isinstance(target["_key"], str):
        return ("_key", ""), target["_key"]
    for name in group:
        indexable = dialect == POSTGRESQL or json_path(name) is not None
        if name not in ("_class", "_type", "_key") and isinstance(target[name], str) and indexable:
            return ("property", name), target[name]
    if "_type" in group and isinstance(target["_type"], str):
        return ("_type", ""), target["_type"]
    if "_class" in group:
        classes = sorted(c for c in _classes(target["_class"]))
        if classes:
            return ("_class", ""), classes[0]
    return None  # e.g. a group of one numeric property: matched by scanning every entity


def _classes(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else ([] if value is None else [str(value)])


class Resolver:
    """Resolves mapped relationships against the current entities of every instance but the
    mapper's; remembers what it produced, so each relationship and placeholder comes once."""

    def __init__(self, conn: Connection, dialect: str, mapper_id: int | None):
        self.conn = conn
        self.dialect = dialect
        self.mapper_id = mapper_id
        self.result = MapperResult()
        self.seen_relationships: set[str] = set()
        self.seen_placeholders: set[str] = set()
        self._scan: list[dict] | None = None

    def _entities(self, condition: Any) -> Iterator[dict]:
        e = schema.entities
        query = sa.select(e.c._key, e.c._type, _raw(e.c._class), _raw(e.c.properties))
        query = query.where(e.c._endOn.is_(None), condition)
        if self.mapper_id is not None:
            query = query.where(e.c.instance_id != self.mapper_id)
        for key, graph_type, classes, properties in self.conn.execute(query).all():
            yield row_object(key, graph_type, _json(classes), _props(properties))

    def candidates(self, driver: Driver, values: set[Any]) -> dict[tuple[Driver, str], list[dict]]:
        """Entities per (driver, canonical value) for a set of looked-up values: a few queries of
        ``<driver column> IN (...)`` (:func:`~engine.store.sql.one_of`), each a search of the
        driver's index (``_key``, ``_type`` or the property's expression index)."""
        kind, name = driver
        found: dict[tuple[Driver, str], list[dict]] = defaultdict(list)
        e = schema.entities
        if kind == "_class":
            for value in sorted(values):
                for entity in self._entities(has_class(e.c._class, value, self.dialect)):
                    found[(driver, canonical(value))].append(entity)
            return found
        column: Any = property_text(e.c.properties, name, self.dialect) if kind == "property" else e.c[kind]
        field = kind if kind != "property" else name
        ordered = sorted(values)
        for start in range(0, len(ordered), LOOKUP_BATCH):
            for entity in self._entities(one_of(column, ordered[start : start + LOOKUP_BATCH], self.dialect)):
                found[(driver, canonical(entity.get(field)))].append(entity)
        return found

    def scan(self) -> list[dict]:
        """Every current entity (for groups no index can drive); read once per resolver."""
        if self._scan is None:
            self._scan = list(self._entities(sa.true()))
        return self._scan

    def resolve(self, chunk: list[MappedRow]) -> Iterator[tuple[str, dict]]:
        """``(collection, object)`` for the relationships and placeholders of a chunk."""
        plans: list[tuple[MappedRow, list[tuple[tuple[str, ...], tuple[Driver, Any] | None]]]] = []
        wanted: dict[Driver, set[Any]] = defaultdict(set)
        for row in chunk:
            groups = [(g, _driver(g, row.mapping["targetEntity"], self.dialect)) for g in usable_groups(row.mapping)]
            for _, driver in groups:
                if driver is not None:
                    wanted[driver[0]].add(driver[1])
            plans.append((row, groups))
        candidates: dict[tuple[Driver, str], list[dict]] = {}
        for kind, values in wanted.items():
            candidates.update(self.candidates(kind, values))
        for row, groups in plans:
            self.result.mapped += 1
            found = row.mapping.get("targetEntity")
            target: dict = found if isinstance(found, dict) else {}
            targets: dict[str, dict] = {}
            for group, driver in groups:
                pool = candidates.get((driver[0], canonical(driver[1])), []) if driver else self.scan()
                for entity in pool:
                    if matches(group, target, entity):
                        targets.setdefault(entity["_key"], entity)
            if targets:
                for key in sorted(targets):
                    yield from self._relationship(row, key, placeholder=False)
            elif row.mapping.get("skipTargetCreation") is True or not groups or not _creatable(target):
                self.result.skipped += 1
            else:
                key = placeholder_key(row.mapping)
                if key not in self.seen_placeholders:
                    self.seen_placeholders.add(key)
                    self.result.placeholders += 1
                    yield "entities", {**target, "_key": key}
                yield from self._relationship(row, key, placeholder=True)

    def _relationship(self, row: MappedRow, target_key: str, *, placeholder: bool) -> Iterator[tuple[str, dict]]:
        source = row.mapping.get("sourceEntityKey")
        if not isinstance(source, str):
            self.result.skipped += 1
            return
        reverse = str(row.mapping.get("relationshipDirection", "FORWARD")).upper() == "REVERSE"
        start, end = (target_key, source) if reverse else (source, target_key)
        classes = _classes(row.properties.get("_class", row.classes))
        verb = (classes[0] if classes else row.type).lower()
        key = f"{start}|{verb}|{end}"
        if placeholder:
            self.result.to_placeholders += 1
        else:
            self.result.resolved += 1
        if key in self.seen_relationships:
            return
        self.seen_relationships.add(key)
        obj = row_object(key, row.type, row.classes, row.properties, start, end)
        yield "relationships", obj


def _creatable(target: Any) -> bool:
    return isinstance(target, dict) and isinstance(target.get("_type"), str) and bool(_classes(target.get("_class")))


def _props(value: Any) -> dict:
    if isinstance(value, str):  # JSON text, should a driver hand it back unparsed
        value = decode_json(value)
    return value if isinstance(value, dict) else {}


# -- running the mapper inside a load -------------------------------------------------------------


def mapper_instance(conn: Connection) -> int:
    """The id of the mapper's instance row (created on first use)."""
    i = schema.instances
    found = conn.execute(sa.select(i.c.id).where(i.c.name == schema.MAPPER_INSTANCE)).scalar()
    if found is not None:
        return int(found)
    values = {"name": schema.MAPPER_INSTANCE, "integration": schema.MAPPER_INSTANCE}
    created = conn.execute(sa.insert(i).values(**values)).inserted_primary_key
    assert created is not None
    return int(created[0])


def run_mapper(store: Store, conn: Connection, now: int) -> MapperResult:
    """Re-resolve every mapped relationship and merge the result into the mapper's instance."""
    from .load import TABLES, has_rows, merge, unique_stage_keys

    started = time.perf_counter()
    store.lock_mapper(conn)
    mapper_id = mapper_instance(conn)
    resolver = Resolver(conn, store.dialect, mapper_id)
    stages = {c: stage_table(f"etl_mapper_{c}", store.dialect) for c in TABLES}
    for table in stages.values():
        if store.dialect != POSTGRESQL:
            table.drop(conn, checkfirst=True)
        table.create(conn)
    for chunk in mapped_rows(conn, None, mapper_id):
        rows: dict[str, list[Row]] = {c: [] for c in TABLES}
        for collection, obj in resolver.resolve(chunk):
            rows[collection].append(object_row(obj))
        for collection, batch in rows.items():
            insert_rows(conn, stages[collection], batch, store.dialect)
    result = resolver.result
    fresh = not has_rows(conn, mapper_id)
    for collection, table in TABLES.items():
        unique_stage_keys(conn, stages[collection], f"mapper: two {collection} have the _key")
        counts = merge(conn, table, stages[collection], mapper_id, now, frozenset(), fresh)
        result.created += counts.created
        result.ended += counts.ended
    if result.created or result.ended:
        values = {"last_load_on": now, "partial_types": []}
        conn.execute(sa.update(schema.instances).where(schema.instances.c.id == mapper_id).values(**values))
    if store.dialect != POSTGRESQL:
        for table in stages.values():
            table.drop(conn)
    result.seconds = time.perf_counter() - started
    return result


def insert_rows(conn: Connection, table: sa.Table, rows: list[Row], dialect: str) -> None:
    """Bulk-insert staging rows: COPY on PostgreSQL, executemany on SQLite."""
    if not rows:
        return
    raw = conn.connection.driver_connection
    assert raw is not None
    if dialect == POSTGRESQL:
        with raw.cursor() as cursor:
            copy_rows(cursor, table.name, iter([rows]))
        return
    cursor = raw.cursor()
    try:
        insert_sqlite(cursor, table.name, rows)
    finally:
        cursor.close()


# -- the mapper's indexes ------------------------------------------------------------------------


def index_name(name: str) -> str:
    return "ix_etl_entities_prop_" + hashlib.sha1(name.encode()).hexdigest()[:12]


def _indexed(conn: Connection) -> set[str]:
    m = schema.meta
    known = conn.execute(sa.select(m.c.value).where(m.c.name == META_FILTER_KEYS)).scalar()
    return set(decode_json(known)) if known else set()


def ensure_filter_indexes(store: Store, names: set[str]) -> list[str]:
    """Create an expression index for each property in ``names`` (the filter keys of a load's
    mapped relationships) that has none yet - in its own transaction, after the load: building one
    waits for other writers, which must not wait for this one. Returns the properties indexed now."""
    if not names:
        return []
    with store.read() as conn:
        indexed = _indexed(conn)
    column = schema.entities.c.properties
    if not {n for n in names - indexed if property_text(column, n, store.dialect) is not None}:
        return []
    with store.write() as conn:
        store.lock(conn, "etl:filter-key-indexes")
        indexed = _indexed(conn)  # again, under the lock
        missing = sorted(n for n in names - indexed if property_text(column, n, store.dialect) is not None)
        for name in missing:
            expression = property_text(sa.column("properties"), name, store.dialect)
            assert expression is not None
            sql = expression.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
            # PostgreSQL keeps statistics of an expression index only when it is not partial (without
            # them it takes IN (5,000 names) for most of the table); SQLite's plans need none
            where = ' WHERE "_endOn" IS NULL' if store.dialect != POSTGRESQL else ""
            conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {index_name(name)} ON etl_entities (({sql})){where}")
        if missing and store.dialect == POSTGRESQL:
            conn.execute(sa.text("ANALYZE etl_entities"))  # the new indexes' statistics, for this load's mapper
        m = schema.meta
        conn.execute(sa.delete(m).where(m.c.name == META_FILTER_KEYS))
        conn.execute(sa.insert(m).values(name=META_FILTER_KEYS, value=dumps(sorted(indexed | set(missing)))))
    return missing


def resolve_all(conn: Connection, dialect: str, instance_ids: Iterable[int] | None) -> Iterator[tuple[str, dict]]:
    """Resolve (read-only) the mapped relationships of ``instance_ids`` (None: every instance):
    what the mapper would store for them (the export's "mapped relationships resolved")."""
    mapper_id = conn.execute(
        sa.select(schema.instances.c.id).where(schema.instances.c.name == schema.MAPPER_INSTANCE)
    ).scalar()
    resolver = Resolver(conn, dialect, mapper_id)
    ids = None if instance_ids is None else list(instance_ids)
    for chunk in mapped_rows(conn, ids, mapper_id):
        yield from resolver.resolve(chunk)
