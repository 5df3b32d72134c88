"""The few places where SQLite and PostgreSQL need different SQL, behind one function each.

Everything else is plain SQLAlchemy Core, compiled by the dialect of the store.

* :func:`~engine.store.jsontext.dumps`: the canonical JSON text the store writes (keys sorted,
  no spaces), so that two equal objects are equal text on SQLite;
* :func:`has_class`: "the entity's ``_class`` list contains NAME";
* :func:`one_of`: "a column's value is one of these strings";
* :func:`property_text`: a property's value as text, the expression the mapper's indexes cover;
* :func:`stage_table`: the staging table a load fills before its set-based merge.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from .jsontext import canonical, dumps
from .stage import STAGE_COLUMNS
from .url import POSTGRESQL

__all__ = ["STAGE_COLUMNS", "canonical", "dumps", "has_class", "json_path", "one_of", "property_text", "stage_table"]


def has_class(column: Any, name: str, dialect: str) -> sa.ColumnElement[bool]:
    """``_class`` (a JSON list) contains ``name``."""
    if dialect == POSTGRESQL:
        return sa.type_coerce(column, JSONB).contains(sa.func.to_jsonb(sa.cast(sa.literal(name), sa.Text)))
    each = sa.func.json_each(column).table_valued("value")
    return sa.exists().where(each.c.value == name)


def one_of(column: Any, values: list[str], dialect: str) -> sa.ColumnElement[bool]:
    """``column IN (values...)``; on PostgreSQL ``column = ANY(:values)``, the form PostgreSQL turns
    an IN list into anyway (the same index search), with one array parameter instead of one per
    value: psycopg rewrites every parameter placeholder of a query in Python, which took the mapper
    1.6 s (under cProfile) for 100,000 values."""
    if dialect == POSTGRESQL:
        return column == sa.any_(sa.bindparam(None, values, type_=ARRAY(sa.Text)))
    return column.in_(values)


def json_path(name: str) -> str | None:
    """The SQLite JSON path of a top-level property, or None when the name cannot be quoted in one."""
    return None if '"' in name or "\\" in name else f'$."{name}"'


def property_text(column: Any, name: str, dialect: str) -> sa.ColumnElement[Any] | None:
    """The value of property ``name`` of a JSON ``column``, as text for a string value, with the
    name rendered literally (so the expression matches the index built on it). None when the
    name cannot be used so (the caller then filters in Python)."""
    literal = "'" + name.replace("'", "''") + "'"
    if dialect == POSTGRESQL:
        return sa.type_coerce(column, JSONB).op("->>")(sa.literal_column(literal))
    path = json_path(name)
    if path is None:
        return None
    return sa.func.json_extract(column, sa.literal_column("'" + path.replace("'", "''") + "'"))


def stage_table(name: str, dialect: str, schema: str | None = None, *, transaction: bool = True) -> sa.Table:
    """A staging table: one row per object of a run, JSON as text (SQLite) or JSONB (PostgreSQL).
    Temporary (unless in an attached ``schema``); with ``transaction``, PostgreSQL drops it at commit."""
    json_type: Any = JSONB if dialect == POSTGRESQL else sa.Text
    options: dict[str, Any] = {}
    if schema is None:
        options = {"prefixes": ["TEMPORARY"], **({"postgresql_on_commit": "DROP"} if transaction else {})}
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("_key", sa.Text, nullable=False),
        sa.Column("_type", sa.Text, nullable=False),
        sa.Column("_class", json_type, nullable=False),
        sa.Column("properties", json_type, nullable=False),
        sa.Column("_fromEntityKey", sa.Text),
        sa.Column("_toEntityKey", sa.Text),
        sa.Column("_mapping", json_type),
        schema=schema,
        **options,
    )
