"""The store at a point in time: one instance's objects as they were then.

A version was current at time ``T`` when ``_beginOn <= T`` and (``_endOn`` is NULL or
``_endOn > T``). :class:`Snapshot` has what ``etl diff`` reads from an output directory
(``path``, ``partial_types``, ``all_objects``), so :class:`engine.tools.diff.Comparison`
compares two points of the store's history exactly as it compares two runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from ..errors import StoreError
from ..output import COLLECTIONS
from . import schema
from .connect import Store
from .stage import row_object


def format_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Snapshot:
    """One instance of the store as it was at ``at`` (epoch ms)."""

    def __init__(self, store: Store, instance: str, at: int):
        self.store = store
        self.instance = instance
        self.at = at
        self.path = f"{store.label} instance {instance} at {format_time(at)}"  # the diff's label
        with store.read() as conn:
            i = schema.instances
            row = conn.execute(sa.select(i.c.id).where(i.c.name == instance)).first()
            if row is None:
                names = conn.execute(sa.select(i.c.name).order_by(i.c.name)).scalars().all()
                known = ", ".join(names) or "none: nothing was loaded"
                raise StoreError(f"store {store.label} has no instance {instance!r} (instances: {known})")
            self.instance_id = row.id
            loads = schema.loads
            partial = conn.execute(
                sa.select(loads.c.partial_types)
                .where(loads.c.instance_id == self.instance_id, loads.c.loaded_on <= at)
                .order_by(loads.c.loaded_on.desc())
                .limit(1)
            ).scalar()
        self.partial_types = frozenset(partial or ())

    def objects(self, collection: str, drop: frozenset[str] = frozenset()) -> Iterator[dict]:
        table = schema.relationships if collection == "relationships" else schema.entities
        columns: list[Any] = [table.c._key, table.c._type, table.c._class, table.c.properties]
        if collection == "relationships":
            columns += [table.c._fromEntityKey, table.c._toEntityKey, table.c._mapping]
        query = (
            sa.select(*columns)
            .where(
                table.c.instance_id == self.instance_id,
                table.c._beginOn <= self.at,
                sa.or_(table.c._endOn.is_(None), table.c._endOn > self.at),
            )
            .order_by(table.c._key)
        )
        with self.store.read() as conn:
            for row in conn.execute(query.execution_options(yield_per=2000)):
                obj = row_object(*row)
                yield {k: v for k, v in obj.items() if k not in drop} if drop else obj

    def all_objects(self, drop: frozenset[str] = frozenset()) -> Iterator[tuple[str, dict]]:
        for collection in COLLECTIONS:
            for obj in self.objects(collection, drop):
                yield collection, obj
