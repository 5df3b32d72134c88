"""Run a compiled query on a store and read the answer back as plain data.

A :class:`CompiledQuery` is parsed and checked once; its SQL is built once per database and
set of usable property indexes, and reused (``etl alerts`` runs the same queries on every
schedule). ``date.now`` is bound when it runs: the clock is an argument.

The answer is JupiterOne's shape, ``{"type": "list" | "table" | "tree", "totalCount": N,
"data": ...}``:

* list: the starting entities, each a graph object (``_key``, ``_type``, ``_class`` and its
  properties, as in a run's graph files);
* table: one dict per row, keyed by the RETURN items (``u.name``, ``count(u)``, a label);
  ``alias`` gives the whole object, ``alias.*`` every property as ``alias.name`` plus
  ``alias._version``, ``alias._createdOn`` and ``alias._beginOn``;
* tree: ``{"vertices": [entities], "edges": [relationships]}`` of every matched path.

``totalCount`` is the number of items in ``data``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Connection

from ..store import schema
from ..store.stage import row_object
from ..store.url import SQLITE
from .ast import Comparison, Expr, Query
from .compiler import META_COLUMNS, Compiled, Output, compile_plan
from .dates import shifted
from .dialect import JSON_PARAM, dialect_for
from .filters import Parameters
from .lexer import Source
from .parser import Parser
from .plan import Plan, plan


@dataclass
class Answer:
    """A query's answer: ``type``, ``data`` (and its length, ``total``)."""

    type: str
    data: Any
    query: str

    @property
    def total(self) -> int:
        if self.type == "tree":
            return len(self.data["vertices"])
        return len(self.data)

    def to_dict(self) -> dict:
        return {"type": self.type, "totalCount": self.total, "data": self.data}


class CompiledQuery:
    """A J1QL query, parsed and checked: raises :class:`~engine.errors.QueryError` on a problem."""

    def __init__(self, text: str, name: str = "query", *, ast: Query | None = None):
        self.text = text
        self.source = Source(text, name)
        self.ast: Query = ast if ast is not None else Parser(self.source).query()
        self.plan: Plan = plan(self.ast, self.source)
        self.properties = sorted(_filtered_properties(self.plan))
        self._sql: dict[tuple[str, frozenset[str]], tuple[Compiled, Parameters]] = {}

    def as_tree(self) -> CompiledQuery:
        """The same query answered as ``RETURN tree`` (the matched entities and relationships)."""
        if self.ast.tree:
            return self
        return CompiledQuery(self.text, self.source.name, ast=replace(self.ast, tree=True, returns=(), unique=False))

    @property
    def kind(self) -> str:
        return "tree" if self.ast.tree else "table" if self.ast.returns else "list"

    def sql(self, dialect: str, indexes: Iterable[str] = ()) -> tuple[Compiled, Parameters]:
        """The statement for ``dialect`` given the store's index names (built once, then reused)."""
        usable = frozenset(schema.property_index_name(p, dialect) for p in self.properties) & frozenset(indexes)
        key = (dialect, usable)
        if key not in self._sql:
            parameters = Parameters()

            def indexed(name: str) -> bool:
                return schema.property_index_name(name, dialect) in usable

            compiled = compile_plan(self.plan, self.source, dialect_for(dialect), parameters, indexed)
            self._sql[key] = (compiled, parameters)
        return self._sql[key]

    def execute(self, conn: Connection, dialect: str, *, now: int | None = None) -> Answer:
        """Run in the caller's transaction (``store.read()``); ``now``: epoch ms for ``date.now``."""
        compiled, parameters = self.sql(dialect, index_names(conn, dialect))
        clock = int(time.time() * 1000) if now is None else now
        values: dict[str, Any] = {}
        for name, date in parameters.relative.items():
            ms = shifted(clock, date.steps)
            values[name] = ms
            values[name + JSON_PARAM] = str(ms)
        rows = conn.execute(compiled.statement, values).all()
        return Answer(compiled.kind, read(compiled, rows), self.text)


def index_names(conn: Connection, dialect: str) -> frozenset[str]:
    """The names of the indexes on ``etl_entities``."""
    if dialect == SQLITE:
        sql = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'etl_entities'"
    else:
        sql = "SELECT indexname FROM pg_indexes WHERE tablename = 'etl_entities' AND schemaname = current_schema()"
    return frozenset(row[0] for row in conn.exec_driver_sql(sql))


def _filtered_properties(query_plan: Plan) -> set[str]:
    """The property names WITH filters compare (the ones an index may serve)."""
    found: set[str] = set()

    def walk(expr: Expr | None) -> None:
        if expr is None:
            return
        if isinstance(expr, Comparison):
            found.add(expr.ref.name)
            return
        for item in expr.items:
            walk(item)

    for selector in query_plan.nodes:
        walk(selector.filter)
    return found


# -- rows back to data ------------------------------------------------------------------------------


def number(value: Any) -> Any:
    """A numeric result as JSON has it (PostgreSQL's numeric arrives as Decimal)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def graph_object(
    key: str, graph_type: str, classes: Any, properties: Any, source: str | None = None, target: str | None = None
) -> dict:
    """A row as the graph object, its properties in name order (PostgreSQL's jsonb keeps its own)."""
    return row_object(key, graph_type, classes, dict(sorted(properties.items())), source, target)


def read(compiled: Compiled, rows: Sequence[Any]) -> Any:
    if compiled.kind == "list":
        return [graph_object(row._key, row._type, row._class, row.properties) for row in rows]
    if compiled.kind == "tree":
        vertices, edges = [], []
        for row in rows:
            if row.part == "vertex":
                vertices.append(graph_object(row._key, row._type, row._class, row.properties))
            else:
                edges.append(
                    graph_object(row._key, row._type, row._class, row.properties, row._fromEntityKey, row._toEntityKey)
                )
        return {"vertices": vertices, "edges": edges}
    return [_table_row(compiled.outputs, row._mapping) for row in rows]


def _table_row(outputs: list[Output], values: Any) -> dict:
    out: dict[str, Any] = {}
    for output in outputs:
        columns = [values[c] for c in output.columns]
        if output.kind == "value":
            out[output.key] = columns[0]
        elif output.kind == "aggregate":
            out[output.key] = number(columns[0])
        else:
            obj = graph_object(*columns[1:7]) if "relationship" in output.kind else graph_object(*columns[1:5])
            if output.kind.startswith("star-"):
                meta = dict(zip(META_COLUMNS, columns[-len(META_COLUMNS) :]))
                for name, value in {**obj, **meta}.items():
                    out[f"{output.alias}.{name}"] = value
            else:
                out[output.key] = obj
    return out


def compile_query(text: str, name: str = "query") -> CompiledQuery:
    return CompiledQuery(text, name)


__all__ = ["Answer", "CompiledQuery", "Source", "compile_query", "index_names"]
