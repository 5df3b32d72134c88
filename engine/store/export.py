"""Export the store's current graph: the whole store or one instance.

* ``j1``: the ``.j1-integration`` layout ``etl run`` writes (summary.json + graph/<step>/...),
  one step per instance, written with the run's own :class:`GraphWriter` into a
  :class:`StagedOutput` (the directory is replaced only when complete). It holds what the
  integrations said - mapped relationships with their ``_mapping``, as loaded - so ``etl sync``
  uploads it as a run and ``etl visualize`` resolves the mappings itself; the mapper's output is
  not in it. For one instance, ``metadata.integration`` names it, so ``etl load`` takes it back.
* ``ndjson``: ``entities.ndjson`` and ``relationships.ndjson``, one object per line, mapped
  relationships resolved (:func:`~engine.store.mapper.resolve_all`): each becomes the
  relationships to its targets, and the placeholders it needs are among the entities.

Rows are read in ``_type``, ``_key`` order, a page at a time; memory holds one batch.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import OutputError, StoreError
from ..jsonio import encode_json
from ..output import COLLECTIONS
from ..pipeline.write import GraphWriter, StagedOutput
from ..secrets import Redactor
from . import schema
from .connect import Store
from .stage import row_object

FORMATS = ("j1", "ndjson")


@dataclass
class ExportResult:
    directory: Path
    format: str
    instances: list[str]
    counts: Counter = field(default_factory=Counter)  # collection -> objects written

    def format_text(self) -> str:
        which = ", ".join(self.instances) or "none"
        return (
            f"{self.directory}: {self.counts['entities']} entities, {self.counts['relationships']} relationships "
            f"({self.format}; instances: {which})"
        )


def _instances(conn: Connection, name: str | None, label: str) -> list[Any]:
    i = schema.instances
    query = sa.select(i).where(i.c.name != schema.MAPPER_INSTANCE).order_by(i.c.name)
    rows = list(conn.execute(query).all())
    if name is None:
        return rows
    chosen = [r for r in rows if r.name == name]
    if not chosen:
        known = ", ".join(r.name for r in rows) or "none: nothing was loaded"
        raise StoreError(f"store {label} has no instance {name!r} (instances: {known})")
    return chosen


def current_objects(
    conn: Connection, collection: str, instance_id: int, *, mapped: bool | None = None
) -> Iterator[dict]:
    """The current objects of one instance and collection (``mapped``: only / no mapped relationships)."""
    table = schema.relationships if collection == "relationships" else schema.entities
    columns: list[Any] = [table.c._key, table.c._type, table.c._class, table.c.properties]
    query = sa.select(*columns).where(table.c.instance_id == instance_id, table.c._endOn.is_(None))
    if collection == "relationships":
        query = query.add_columns(table.c._fromEntityKey, table.c._toEntityKey, table.c._mapping)
        if mapped is not None:
            query = query.where(table.c._mapping.is_not(None) if mapped else table.c._mapping.is_(None))
    query = query.order_by(table.c._type, table.c._key)
    for row in conn.execute(query.execution_options(yield_per=2000)):
        yield row_object(*row)


def export(store: Store, directory: Path, output_format: str, instance: str | None = None) -> ExportResult:
    if output_format not in FORMATS:
        raise StoreError(f"unknown export format {output_format!r} (use one of {', '.join(FORMATS)})")
    with store.read() as conn:
        rows = _instances(conn, instance, store.label)
        result = ExportResult(directory, output_format, [r.name for r in rows])
        if output_format == "ndjson":
            _write_ndjson(conn, rows, directory, result, store.dialect)
            return result
        staged = StagedOutput(directory)
        try:
            _write_j1(conn, rows, Path(staged.path), result, single=instance is not None)
        except BaseException:
            staged.discard()
            raise
        staged.commit()
    return result


def step_id(name: str) -> str:
    """An instance name as a directory name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip(".") or "instance"


def _write_j1(conn: Connection, rows: list[Any], root: Path, result: ExportResult, *, single: bool) -> None:
    writer = GraphWriter(root, Redactor())
    steps = []
    partial: set[str] = set()
    for row in rows:
        step = step_id(row.name)
        for collection in COLLECTIONS:
            for obj in current_objects(conn, collection, row.id):
                writer.add(step, collection, obj)
                result.counts[collection] += 1
        writer.flush_step(step)
        counts = writer.counts(step)
        partial |= set(row.partial_types or ())
        when = row.last_load_on or 0
        steps.append(
            {
                "id": step,
                "name": f"{row.integration} (instance {row.name})",
                "dependsOn": [],
                "declaredTypes": sorted(counts),
                "partialTypes": sorted(row.partial_types or ()),
                "encounteredTypes": sorted(counts),
                "encounteredTypeCounts": dict(sorted(counts.items())),
                "status": "success",
                "startTime": when,
                "endTime": when,
                "duration": 0,
            }
        )
    metadata: dict[str, Any] = {"partialDatasets": {"types": sorted(partial)}}
    if single and rows:
        metadata["integration"] = {"id": rows[0].integration, "instance": rows[0].name}
    writer.write_summary({"integrationStepResults": steps, "metadata": metadata})


def _write_ndjson(conn: Connection, rows: list[Any], directory: Path, result: ExportResult, dialect: str) -> None:
    """Write both files beside their final names, then move them into place."""
    from .mapper import resolve_all

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {directory}: {exc.strerror}") from None
    names = {c: directory / f"{c}.ndjson" for c in COLLECTIONS}
    partial = {c: p.with_name(f".{p.name}.{os.getpid()}.tmp") for c, p in names.items()}
    try:
        with partial["entities"].open("wb") as entities, partial["relationships"].open("wb") as relations:
            files = {"entities": entities, "relationships": relations}
            for row in rows:
                for collection in COLLECTIONS:
                    only_direct = False if collection == "relationships" else None
                    for obj in current_objects(conn, collection, row.id, mapped=only_direct):
                        files[collection].write(encode_json(obj) + b"\n")
                        result.counts[collection] += 1
            for collection, obj in resolve_all(conn, dialect, [r.id for r in rows]):
                files[collection].write(encode_json(obj) + b"\n")
                result.counts[collection] += 1
        for collection, path in partial.items():
            os.replace(path, names[collection])
    except OSError as exc:
        raise OutputError(f"cannot write {directory}: {exc.strerror}") from None
    finally:
        for path in partial.values():
            path.unlink(missing_ok=True)
