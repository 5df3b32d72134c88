"""Load a run into the store with JupiterOne's persister semantics.

A load replaces what one *integration instance* said last time, in one transaction:

* an object of the run whose content differs from its current version gets a new version
  (``_version`` + 1, ``_beginOn`` now, ``_createdOn`` kept); the old version is ended
  (``_endOn`` now) and kept;
* a new object gets version 1 (an object that comes back after being ended continues its
  numbering and keeps its first ``_createdOn``);
* a current object of the instance that the run does not have is ended - unless its type is
  partial in the run's ``summary.json`` (``metadata.partialDatasets.types``): those are only
  upserted, never ended;
* an unchanged object is not written at all; a run whose files are byte-for-byte the ones
  loaded last time (:func:`~engine.store.stage.run_digest`) is not even staged.

Other instances' rows are never touched. After the instance's changes the mapper
(:mod:`engine.store.mapper`) re-resolves every mapped relationship in the same transaction.

The work is set-based: the run is staged (:mod:`engine.store.stage`), then two statements per
collection - one UPDATE that ends versions, one INSERT ... SELECT that adds them - do the merge,
whatever the number of objects. Loads of one instance serialise on its lock; on SQLite every
write serialises on the database lock (with a busy timeout, so the second load waits).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import OutputDirError, StoreError, UsageError
from ..output import COLLECTIONS, OutputDir
from . import schema
from .connect import Store
from .sql import stage_table
from .stage import (
    SCRATCH_TABLE,
    StageInfo,
    collection_rows,
    copy_rows,
    run_bytes,
    run_digest,
    stage_to_file,
    without_cycle_collector,
)
from .url import SQLITE

PARALLEL_BYTES = 32 * 1024 * 1024  # a run this large is staged by two worker processes (SQLite)
PG_WORK_MEM = "64MB"
ANALYZE_ROWS = 10000  # PostgreSQL: a load writing this many rows refreshes the planner's statistics
TABLES = {"entities": schema.entities, "relationships": schema.relationships}
KEY_ORDERED = ("id", "instance_id", "_key", "_type", "_fromEntityKey")  # columns merged in (about) their order


@dataclass
class Counts:
    """One collection of a load: objects in the run, versions written, versions ended."""

    staged: int = 0
    created: int = 0
    ended: int = 0

    @property
    def unchanged(self) -> int:
        return self.staged - self.created

    def to_json(self) -> dict:
        return {"staged": self.staged, "created": self.created, "ended": self.ended}


@dataclass
class LoadResult:
    store: str
    integration: str
    instance: str
    directory: Path
    unchanged_run: bool = False  # the same run as last time: nothing was staged or written
    loaded_on: int | None = None
    counts: dict[str, Counts] = field(default_factory=lambda: {c: Counts() for c in COLLECTIONS})
    partial_types: tuple[str, ...] = ()
    mapper: Any = None  # a MapperResult when the mapper ran

    def format(self) -> str:
        head = f"{self.directory} -> {self.store} (instance {self.instance}, integration {self.integration})"
        if self.unchanged_run:
            return f"{head}\n  unchanged since the last load of this instance: nothing written"
        lines = [head]
        for collection, c in self.counts.items():
            lines.append(
                f"  {collection}: {c.staged} in the run, {c.created} new versions, {c.ended} ended, "
                f"{c.unchanged} unchanged"
            )
        if self.partial_types:
            lines.append(f"  partial types (upserted, never ended): {', '.join(self.partial_types)}")
        if self.mapper is not None:
            lines.append(f"  {self.mapper.format()}")
        return "\n".join(lines)


# -- who the run belongs to -------------------------------------------------------------------


def run_identity(output: OutputDir, integration: str | None, instance: str | None) -> tuple[str, str]:
    """(integration id, instance name) of a run: ``summary.json``'s ``metadata.integration``
    (``{"id": ..., "instance": ...}``) where present, else the options; ``--instance`` wins over
    the summary's, and defaults to the integration id."""
    recorded = output.summary.get("metadata", {}).get("integration") if output.summary else None
    recorded = recorded if isinstance(recorded, dict) else {}
    recorded_id = recorded.get("id") if isinstance(recorded.get("id"), str) else None
    recorded_instance = recorded.get("instance") if isinstance(recorded.get("instance"), str) else None
    if integration and recorded_id and integration != recorded_id:
        raise UsageError(
            f"--integration {integration}: {output.path}/summary.json says the run is integration "
            f"{recorded_id!r}; leave --integration out or give the same id"
        )
    integration = integration or recorded_id
    if not integration:
        raise UsageError(
            f"{output.path}/summary.json does not name its integration (metadata.integration); "
            "pass --integration ID (the mapping's integration id)"
        )
    name = instance or recorded_instance or integration
    if name == schema.MAPPER_INSTANCE:
        raise UsageError(f"--instance: {name!r} is reserved for the store's mapper; choose another name")
    return integration, name


# -- loading -----------------------------------------------------------------------------------


def load_run(
    store: Store,
    directory: Path,
    *,
    integration: str | None = None,
    instance: str | None = None,
    parallel: bool | None = None,
) -> LoadResult:
    """Load the output directory ``directory`` as ``instance``; raises EtlError (nothing changed).
    ``parallel`` forces (or forbids) SQLite's two staging processes; by default large runs use them."""
    output = OutputDir.open(directory)
    integration, instance = run_identity(output, integration, instance)
    partial = tuple(sorted(output.partial_types))
    result = LoadResult(store.label, integration, instance, directory, partial_types=partial)
    with store.read() as conn:
        row = instance_row(conn, instance)
    digest = None
    if row is not None:
        check_integration(row, integration, instance)
        if row.run_digest is not None:
            digest = run_digest(output, integration, output.partial_types)
            if row.run_digest == digest:
                result.unchanged_run = True
                return result
    with without_cycle_collector():
        if store.dialect == SQLITE:
            _load_sqlite(store, output, result, digest, parallel)
        else:
            _load_postgresql(store, output, result, digest)
            if sum(c.created + c.ended for c in result.counts.values()) >= ANALYZE_ROWS:
                _analyze(store)
    return result


def _analyze(store: Store) -> None:
    """PostgreSQL: refresh the planner's statistics after a large load (autovacuum would, later;
    until then the next load's plans - the mapper's lookups among them - think the table small)."""
    try:
        with store.write() as conn:
            for table in TABLES.values():
                conn.execute(sa.text(f"ANALYZE {table.name}"))
    except StoreError:
        pass  # the load is committed; only the next plans are at stake


def _index_filter_keys(store: Store, infos: dict[str, StageInfo]) -> None:
    """Before the write transaction: the expression indexes the mapper will look targets up by
    (their own transaction: building one waits for other writers, which must not wait for us)."""
    from .mapper import ensure_filter_indexes

    ensure_filter_indexes(store, set().union(*(info.filter_keys for info in infos.values())))


def _load_sqlite(
    store: Store, output: OutputDir, result: LoadResult, digest: str | None, parallel: bool | None
) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="etl-load-"))
    try:
        files = {c: scratch / f"{c}.db" for c in COLLECTIONS}
        if parallel is None:
            parallel = run_bytes(output) >= PARALLEL_BYTES
        if parallel:
            try:
                with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
                    futures = {c: pool.submit(stage_to_file, str(output.path), c, str(files[c])) for c in COLLECTIONS}
                    infos = {c: f.result() for c, f in futures.items()}
            except BrokenProcessPool:
                raise StoreError(f"a process staging {output.path} died (out of memory?); nothing was loaded") from None
        else:
            infos = {c: stage_to_file(str(output.path), c, str(files[c])) for c in COLLECTIONS}
        _index_filter_keys(store, infos)
        with store.connection() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            attached = []
            try:
                for collection in COLLECTIONS:
                    raw.execute(f"ATTACH DATABASE ? AS etl_stage_{collection}", (str(files[collection]),))
                    attached.append(collection)
                stages = {c: stage_table(SCRATCH_TABLE, SQLITE, schema=f"etl_stage_{c}") for c in COLLECTIONS}
                conn.execution_options(etl_write=True)
                with conn.begin():
                    _apply(store, conn, output, stages, infos, result, digest)
            finally:
                for collection in attached:
                    raw.execute(f"DETACH DATABASE etl_stage_{collection}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _load_postgresql(store: Store, output: OutputDir, result: LoadResult, digest: str | None) -> None:
    """Stage with COPY into temporary tables of the session, then merge in one transaction."""
    with store.connection() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        stages = {c: stage_table(f"etl_stage_{c}", store.dialect, transaction=False) for c in COLLECTIONS}
        infos = {c: StageInfo() for c in COLLECTIONS}
        try:
            with conn.begin():
                conn.execute(sa.text(f"SET LOCAL work_mem = '{PG_WORK_MEM}'"))
                for collection, table in stages.items():
                    table.create(conn)
                    with raw.cursor() as cursor:
                        copy_rows(cursor, table.name, collection_rows(output, collection, infos[collection]))
                    unique_stage_keys(conn, table, f"{output.path}: two {collection} have the _key")
                    conn.execute(sa.text(f"ANALYZE {table.name}"))
            _index_filter_keys(store, infos)
            with conn.begin():
                conn.execute(sa.text(f"SET LOCAL work_mem = '{PG_WORK_MEM}'"))  # sorts and hash joins in memory
                _apply(store, conn, output, stages, infos, result, digest)
        finally:
            try:
                with conn.begin():
                    for table in stages.values():
                        table.drop(conn, checkfirst=True)
            except sa.exc.SQLAlchemyError:
                pass  # a broken session: its temporary tables are gone with it


def unique_stage_keys(conn: Connection, table: sa.Table, message: str) -> None:
    """Index a staging table on _key; a duplicate key is an OutputDirError (``message`` + key)."""
    index = sa.Index(f"{table.name}_key", table.c._key, unique=True)
    try:
        with conn.begin_nested():
            index.create(conn)
    except sa.exc.IntegrityError:
        duplicate = sa.select(table.c._key).group_by(table.c._key).having(sa.func.count() > 1).order_by(table.c._key)
        raise OutputDirError(f"{message} {conn.execute(duplicate.limit(1)).scalar()!r}") from None


def _apply(
    store: Store,
    conn: Connection,
    output: OutputDir,
    stages: dict[str, sa.Table],
    infos: dict[str, StageInfo],
    result: LoadResult,
    digest: str | None,
) -> None:
    """The write transaction of a load: lock, merge both collections, record, run the mapper."""
    if digest is None:
        files = [f for c in COLLECTIONS for f in infos[c].files]
        digest = run_digest(output, result.integration, output.partial_types, files)
    store.lock_instance(conn, result.instance)
    row = instance_row(conn, result.instance)
    if row is None:
        created = conn.execute(
            sa.insert(schema.instances).values(name=result.instance, integration=result.integration)
        ).inserted_primary_key
        assert created is not None
        instance_id, last = int(created[0]), None
    else:
        check_integration(row, result.integration, result.instance)
        instance_id, last = row.id, row.last_load_on
    now = max(int(time.time() * 1000), (last or 0) + 1)
    fresh = row is None or not has_rows(conn, instance_id)
    for collection in COLLECTIONS:
        counts = merge(conn, TABLES[collection], stages[collection], instance_id, now, output.partial_types, fresh)
        counts.staged = infos[collection].count
        result.counts[collection] = counts
    changed = any(c.created or c.ended for c in result.counts.values())
    values: dict[str, Any] = {"run_digest": digest}
    if changed:
        result.loaded_on = now
        values.update(last_load_on=now, partial_types=sorted(output.partial_types))
        conn.execute(
            sa.insert(schema.loads).values(
                instance_id=instance_id,
                loaded_on=now,
                partial_types=sorted(output.partial_types),
                counts={c: n.to_json() for c, n in result.counts.items()},
            )
        )
    conn.execute(sa.update(schema.instances).where(schema.instances.c.id == instance_id).values(**values))
    if changed:
        from .mapper import run_mapper

        result.mapper = run_mapper(store, conn, now)


def instance_row(conn: Connection, name: str) -> Any:
    return conn.execute(sa.select(schema.instances).where(schema.instances.c.name == name)).first()


def check_integration(row: Any, integration: str, instance: str) -> None:
    if row.integration != integration:
        raise StoreError(
            f"instance {instance!r} holds integration {row.integration!r}'s data, not {integration!r}'s; "
            "load it under another --instance"
        )


def has_rows(conn: Connection, instance_id: int) -> bool:
    """Has the instance any row (current or ended) in either table?"""
    return any(
        conn.execute(sa.select(t.c.id).where(t.c.instance_id == instance_id).limit(1)).first() is not None
        for t in TABLES.values()
    )


def _content_columns(table: sa.Table) -> list[str]:
    return [c for c in ("_type", "_class", "properties", "_fromEntityKey", "_toEntityKey", "_mapping") if c in table.c]


def merge(
    conn: Connection,
    table: sa.Table,
    stage: sa.Table,
    instance_id: int,
    now: int,
    partial_types: frozenset[str],
    fresh: bool,
) -> Counts:
    """Make ``stage`` the current content of the instance in ``table``: end what changed or went
    away (except partial types' absentees), insert new versions. Two statements."""
    counts = Counts()
    content = _content_columns(table)
    if not fresh:
        unchanged = sa.exists().where(
            stage.c._key == table.c._key,
            *(
                sa.type_coerce(stage.c[c], sa.Text).is_not_distinct_from(sa.type_coerce(table.c[c], sa.Text))
                for c in content
            ),
        )
        conditions = [table.c.instance_id == instance_id, table.c._endOn.is_(None), ~unchanged]
        if partial_types:
            present = sa.exists().where(stage.c._key == table.c._key)
            conditions.append(sa.or_(table.c._type.not_in(sorted(partial_types)), present))
        counts.ended = conn.execute(sa.update(table).where(*conditions).values(_endOn=now)).rowcount
    columns = ["instance_id", "_key", *content, "_version", "_createdOn", "_beginOn"]
    staged = [stage.c._key, *(stage.c[c] for c in content)]
    instance = sa.literal(instance_id, sa.Integer)
    at = sa.literal(now, sa.BigInteger)
    if fresh:
        select = sa.select(instance, *staged, sa.literal(1, sa.Integer), at, at)
    else:
        previous = table.alias("previous")
        later = table.alias("later")
        latest = (
            sa.select(sa.func.max(later.c._version))
            .where(later.c.instance_id == instance_id, later.c._key == stage.c._key)
            .scalar_subquery()
        )
        select = (
            sa.select(
                instance,
                *staged,
                sa.func.coalesce(previous.c._version, 0) + 1,
                sa.func.coalesce(previous.c._createdOn, at),
                at,
            )
            .select_from(
                stage.outerjoin(
                    previous,
                    sa.and_(
                        previous.c.instance_id == instance_id,
                        previous.c._key == stage.c._key,
                        previous.c._version == latest,
                    ),
                )
            )
            .where(sa.or_(previous.c.id.is_(None), previous.c._endOn.is_not(None)))
        )
    insert = sa.insert(table).from_select(columns, select.order_by(stage.c._key))
    deferred = _out_of_order_indexes(conn, table) if fresh else []
    for name, _ in deferred:
        conn.exec_driver_sql(f"DROP INDEX {name}")
    counts.created = conn.execute(insert.execution_options(preserve_rowcount=True)).rowcount
    for _, create in deferred:
        conn.exec_driver_sql(create)
    return counts


def _out_of_order_indexes(conn: Connection, table: sa.Table) -> list[tuple[str, str]]:
    """SQLite, a merge into an empty table: ``(name, CREATE INDEX statement)`` of its indexes whose
    entries do not arrive in the order the merge inserts rows (``_key``'s) - those on
    ``_toEntityKey`` or on a property - which the merge drops and builds again after inserting.

    Building an index from the inserted rows (one sort) costs a third of inserting a million
    entries at random places of it. Safe: on SQLite the drop and the build are part of the load's
    transaction (a crash or an error rolls them back with it; readers see the indexes of the last
    commit), and the write lock already keeps every other writer out. The indexes following
    ``_key`` - the identity, ``_key``'s, ``_type``'s (few values, each appended to), the
    endpoint ``_fromEntityKey`` (a relationship's key begins with it), the rowid - stay: they are
    filled by appending, cheaper than a build that reads the table again. PostgreSQL is never
    changed so: a DROP INDEX would lock the table against other instances' loads and readers."""
    if conn.dialect.name != SQLITE or conn.execute(sa.select(table.c.id).limit(1)).first() is not None:
        return []
    deferred = []
    for _, name, unique, *_ in conn.exec_driver_sql(f"PRAGMA index_list({table.name})").all():
        leading = conn.exec_driver_sql(f"PRAGMA index_info({name})").first()
        if not unique and leading is not None and leading[2] not in KEY_ORDERED:
            create = conn.execute(
                sa.text("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name"), {"name": name}
            ).scalar()
            if create:
                deferred.append((name, str(create)))
    return deferred
