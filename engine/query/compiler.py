"""A planned query to one SQL statement (SQLAlchemy Core), for one database.

The traversal is a join: ``etl_entities`` aliased ``e0, e1, ...`` for the entities,
``etl_relationships`` aliased ``r0, r1, ...`` for the relationships, every one restricted to
current rows (``"_endOn" IS NULL``). A hop from ``eI`` to ``eJ`` through ``rI`` is

* ``>>``: ``rI._fromEntityKey = eI._key AND rI._toEntityKey = eJ._key``;
* ``<<``: the other way round;
* bidirectional (the default): both. Rather than one join on an OR (which neither database
  plans well), the query is written once per direction of each bidirectional hop and the
  *legs* are combined with UNION ALL - each a chain of index lookups on the endpoints. A
  relationship from an entity to itself is kept in the ``>>`` leg only. Past
  :data:`MAX_EXPANDED` bidirectional hops the rest are joined on the OR.

A negated hop (``THAT !HAS ...``) is ``NOT EXISTS`` (one per leg of the negated part) on the
entity before it. What the statement selects depends on the answer:

* no RETURN (a *list*): the starting entities whose id is among the legs' ``e0.id``;
* RETURN items (a *table*): the items' columns from the legs, then DISTINCT (UNIQUE) or
  GROUP BY (aggregates), sorting, SKIP and LIMIT around them;
* RETURN tree: every entity and relationship id of the legs' paths, and their rows.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..store import schema
from ..store.sql import has_class, json_path
from ..store.url import SQLITE
from .ast import And, Group, Literal, Or, Ref, ReturnItem, StaticDate
from .dialect import Dialect, Slot, slot
from .filters import FilterCompiler, Parameters
from .lexer import Source
from .plan import ENTITY, Branch, Plan

MAX_EXPANDED = 5  # bidirectional hops written as separate legs (2 ** 5 = 32 legs at most)
ENTITY_COLUMNS = ("id", "_key", "_type", "_class", "properties")
RELATIONSHIP_COLUMNS = (*ENTITY_COLUMNS, "_fromEntityKey", "_toEntityKey")
META_COLUMNS = ("_version", "_createdOn", "_beginOn")

Scope = dict[tuple[str, int], Any]  # ("e", node) | ("r", edge) -> the table alias in this leg


@dataclass
class Output:
    """How one RETURN item is read back from the result: its key and its columns."""

    key: str
    kind: str  # entity | relationship | star-entity | star-relationship | value | aggregate
    alias: str
    columns: list[str]
    function: str | None = None  # of an aggregate: count | min | max | avg | sum


@dataclass
class Compiled:
    kind: str  # list | table | tree
    statement: Any
    outputs: list[Output] = field(default_factory=list)


class Compiler:
    def __init__(self, plan: Plan, source: Source, dialect: Dialect, parameters: Parameters, indexed):
        self.plan = plan
        self.query = plan.query
        self.source = source
        self.dialect = dialect
        self.indexed = indexed
        self.filters = FilterCompiler(dialect, source, parameters, indexed)
        self.pivot = self.choose_pivot()
        # SQLite only: hide the other entities' own indexes from the planner, and find the pivot's
        # entities once for every leg (PostgreSQL plans from statistics, and scans in parallel)
        self.steer = dialect.name == SQLITE
        self.pivot_rows: Any = None  # the pivot's ids, computed once for every leg (a CTE)

    # -- where the database starts ------------------------------------------------------------

    def choose_pivot(self) -> int:
        """The entity the plan should start from: the first with an indexed equality (a property
        index, ``_key``), else the first filtered by type, else the first. SQLite has no statistics
        (etl does not ANALYZE), so it takes every ``_type = ?`` for a few rows and may start from a
        type of a million entities: there, the other entities' type and property indexes are
        hidden, and the plan reaches them through the relationships' endpoint indexes."""

        def score(index: int) -> int:
            selector = self.plan.nodes[index]
            if selector.filter is not None and self._selective(selector.filter):
                return 2
            return 1 if selector.targets and not any(t.is_class for t in selector.targets) else 0

        nodes = self.plan.positive_nodes
        return max(nodes, key=lambda n: (score(n), -n))

    def _selective(self, expr: Any) -> bool:
        if isinstance(expr, And):
            return any(self._selective(item) for item in expr.items)
        if isinstance(expr, Or):
            return all(self._selective(item) for item in expr.items)
        values = expr.value.values if isinstance(expr.value, Group) else (expr.value,)
        literal = all(isinstance(v, (Literal, StaticDate)) for v in values)
        indexed = expr.ref.name == "_key" or self.indexed(expr.ref.name)
        return expr.op == "=" and literal and (not isinstance(expr.value, Group) or expr.value.kind == "OR") and indexed

    def steered(self, index: int) -> bool:
        """Are this entity's own indexes hidden from the database (it is reached by a join)?"""
        return self.steer and index != self.pivot

    # -- slots --------------------------------------------------------------------------------

    def slot(self, table: Any, name: str, *, entity: bool, offset: int) -> Slot:
        found = slot(table, name, entity=entity)
        if found.kind == "property" and self.dialect.name == SQLITE and json_path(name) is None:
            raise self.source.error(offset, f"property names with '\"' or '\\' cannot be queried on SQLite: {name!r}")
        return found

    def alias_slot(self, scope: Scope, ref: Ref) -> Slot:
        assert ref.alias is not None
        alias = self.plan.alias(ref.alias, ref.offset, self.source, "this clause")
        table = scope[("e" if alias.kind == ENTITY else "r", alias.index)]
        return self.slot(table, ref.name, entity=alias.kind == ENTITY, offset=ref.offset)

    # -- one leg: the joins and conditions of a chain of hops ---------------------------------

    def entity_conditions(self, table: Any, index: int) -> list[Any]:
        if index == self.pivot and self.pivot_rows is not None:
            return [table.c.id.in_(sa.select(self.pivot_rows.c.id))]
        selector = self.plan.nodes[index]
        steered = self.steered(index)
        conditions = [table.c._endOn.is_(None)]
        if selector.targets:
            graph_type = table.c._type.concat("") if steered else table.c._type  # || '': no index for it
            conditions.append(
                sa.or_(
                    *(
                        has_class(table.c._class, t.name, self.dialect.name) if t.is_class else graph_type == t.name
                        for t in selector.targets
                    )
                )
            )
        if selector.filter is not None:

            def resolve(ref: Ref) -> Slot:
                return self.slot(table, ref.name, entity=True, offset=ref.offset)

            conditions.append(self.filters.compile(selector.filter, resolve, use_indexes=not steered))
        return conditions

    def directions(self, edges: list[int]) -> Iterator[dict[int, tuple[str, bool]]]:
        """Each leg: edge -> (direction, expanded from a bidirectional hop)."""
        both = [e for e in edges if self.plan.hops[e].direction == "both"][:MAX_EXPANDED]
        for choice in itertools.product(("out", "in"), repeat=len(both)):
            chosen = {e: (self.plan.hops[e].direction, False) for e in edges}
            chosen.update({e: (d, True) for e, d in zip(both, choice)})
            yield chosen

    def chain(self, branch: Branch, directions: dict[int, tuple[str, bool]], scope: Scope) -> list[Any]:
        """The tables (added to ``scope``) and conditions of ``branch``'s edges in one leg."""
        conditions: list[Any] = []
        for edge in branch.edges:
            hop = self.plan.hops[edge]
            rel = schema.relationships.alias(f"r{edge}")
            after = schema.entities.alias(f"e{edge + 1}")
            before = scope[("e", edge)]
            scope[("r", edge)], scope[("e", edge + 1)] = rel, after
            conditions.append(rel.c._endOn.is_(None))
            if hop.verbs:
                conditions.append(sa.or_(*(has_class(rel.c._class, v, self.dialect.name) for v in hop.verbs)))
            direction, expanded = directions[edge]
            out = sa.and_(rel.c._fromEntityKey == before.c._key, rel.c._toEntityKey == after.c._key)
            back = sa.and_(rel.c._toEntityKey == before.c._key, rel.c._fromEntityKey == after.c._key)
            if direction == "out":
                conditions.append(out)
            elif direction == "in":
                conditions.append(back)
                if expanded:  # a relationship to itself is the ">>" leg's
                    conditions.append(rel.c._fromEntityKey != rel.c._toEntityKey)
            else:
                conditions.append(sa.or_(out, back))
            conditions.extend(self.entity_conditions(after, edge + 1))
        if branch.negated is not None:
            conditions.extend(self.absent(branch.negated, scope))
        return conditions

    def absent(self, branch: Branch, scope: Scope) -> list[Any]:
        """``NOT EXISTS`` a match of the negated ``branch`` (one per leg)."""
        found = []
        for directions in self.directions(branch.edges):
            inner = dict(scope)
            conditions = self.chain(branch, directions, inner)
            found.append(sa.not_(sa.select(sa.literal(1)).where(*conditions).exists()))
        return found

    def legs(self) -> Iterator[tuple[Scope, list[Any]]]:
        """Each leg of the positive chain: its tables and its conditions (WHERE included). With
        several legs, SQLite finds the pivot's entities once (a materialized CTE) for all of them."""
        every = list(self.directions(self.plan.main.edges))
        if self.steer and len(every) > 1 and self.pivot_rows is None:
            rows = schema.entities.alias("pivot_rows")
            found = sa.select(rows.c.id).where(*self.entity_conditions(rows, self.pivot))
            self.pivot_rows = found.cte("pivot").prefix_with("MATERIALIZED")
        for directions in every:
            start = schema.entities.alias("e0")
            scope: Scope = {("e", 0): start}
            conditions = self.entity_conditions(start, 0) + self.chain(self.plan.main, directions, scope)
            if self.query.where is not None:
                conditions.append(self.filters.compile(self.query.where, functools.partial(self.alias_slot, scope)))
            yield scope, conditions

    # -- the answer ----------------------------------------------------------------------------

    def compile(self) -> Compiled:
        if self.query.tree:
            return self.tree()
        if self.query.returns:
            return self.table()
        return self.entity_list()

    def order_terms(self, expressions: list[tuple[Any, bool]]) -> list[Any]:
        return [(e.desc() if descending else e.asc()).nulls_last() for e, descending in expressions]

    def start_order(self, table: Any) -> list[Any]:
        """The starting entities' order: ORDER BY, then _key (and id: keys repeat across instances)."""
        explicit = [
            (self.dialect.sort_value(self.slot(table, o.ref.name, entity=True, offset=o.ref.offset)), o.descending)
            for o in self.query.order
        ]
        return self.order_terms(explicit) + [table.c._key, table.c.id]

    def paged(self, statement: Any) -> Any:
        if self.query.limit is not None:
            statement = statement.limit(self.query.limit)
        if self.query.skip:
            statement = statement.offset(self.query.skip)
        return statement

    def entity_list(self) -> Compiled:
        legs = list(self.legs())
        if not self.plan.main.edges:  # one table: select from it directly
            (scope, conditions), *_ = legs
            start = scope[("e", 0)]
            statement = sa.select(*(start.c[c] for c in ENTITY_COLUMNS)).where(*conditions)
        else:
            ids = [sa.select(scope[("e", 0)].c.id).where(*conditions) for scope, conditions in legs]
            start = schema.entities.alias("found")
            chosen = ids[0] if len(ids) == 1 else sa.union_all(*ids)
            statement = sa.select(*(start.c[c] for c in ENTITY_COLUMNS)).where(start.c.id.in_(chosen))
        return Compiled("list", self.paged(statement.order_by(*self.start_order(start))))

    # -- tables --------------------------------------------------------------------------------

    def item_columns(self, scope: Scope, item: ReturnItem, number: int) -> tuple[Output, list[Any]]:
        """The columns one RETURN item selects in a leg (labelled ``c<number>_<part>``)."""
        alias = self.plan.aliases[item.alias]
        table = scope[("e" if alias.kind == ENTITY else "r", alias.index)]
        entity = alias.kind == ENTITY

        def labelled(parts: list[tuple[str, Any]]) -> list[Any]:
            return [expression.label(f"c{number}_{name}") for name, expression in parts]

        if item.function:
            parts: list[tuple[str, Any]] = [("id", table.c.id)]
            if item.name is not None:
                value_slot = self.slot(table, item.name, entity=entity, offset=item.offset)
                if item.function == "count":
                    defined = sa.not_(sa.func.coalesce(self.dialect.undefined(value_slot), sa.false()))
                    parts = [("id", sa.case((defined, table.c.id), else_=sa.null()))]
                else:
                    parts.append(("value", self.dialect.number_value(value_slot)))
            columns = labelled(parts)
            return Output(item.key, "aggregate", item.alias, [c.name for c in columns], item.function), columns
        if item.name is not None:
            value = self.dialect.json_value(self.slot(table, item.name, entity=entity, offset=item.offset))
            columns = labelled([("value", value)])
            return Output(item.key, "value", item.alias, [c.name for c in columns]), columns
        names = list(ENTITY_COLUMNS if entity else RELATIONSHIP_COLUMNS)
        if item.star:
            names += META_COLUMNS
        columns = labelled([(n, table.c[n]) for n in names])
        kind = ("star-" if item.star else "") + ("entity" if entity else "relationship")
        return Output(item.key, kind, item.alias, [c.name for c in columns]), columns

    def sort_keys(self, scope: Scope) -> list[tuple[Any, bool, Ref | None]]:
        """ORDER BY's expressions, then every returned item's (the default order)."""
        keys: list[tuple[Any, bool, Ref | None]] = []
        for order in self.query.order:
            keys.append((self.dialect.sort_value(self.alias_slot(scope, order.ref)), order.descending, order.ref))
        for item in self.query.returns:
            if item.function:
                continue
            alias = self.plan.aliases[item.alias]
            table = scope[("e" if alias.kind == ENTITY else "r", alias.index)]
            if item.name is None:
                keys.append((table.c._key, False, None))
            else:
                value = self.slot(table, item.name, entity=alias.kind == ENTITY, offset=item.offset)
                keys.append((self.dialect.sort_value(value), False, None))
        return keys

    def table(self) -> Compiled:
        selects = []
        outputs: list[Output] = []
        sort_names: list[tuple[str, bool]] = []
        for scope, conditions in self.legs():
            columns: list[Any] = []
            outputs = []
            for number, item in enumerate(self.query.returns):
                output, item_columns = self.item_columns(scope, item, number)
                outputs.append(output)
                columns.extend(item_columns)
            sort_names = []
            for number, (expression, descending, _) in enumerate(self.sort_keys(scope)):
                columns.append(expression.label(f"s{number}"))
                sort_names.append((f"s{number}", descending))
            selects.append(sa.select(*columns).where(*conditions))
        paths = (selects[0] if len(selects) == 1 else sa.union_all(*selects)).subquery("paths")
        plain = [c for o in outputs if o.kind != "aggregate" for c in o.columns]
        if any(o.kind == "aggregate" for o in outputs):
            statement = self.aggregated(paths, outputs, plain, sort_names)
        else:
            sorts = self.order_terms([(paths.c[name], descending) for name, descending in sort_names])
            statement = sa.select(*(paths.c[c] for c in plain), *(paths.c[n] for n, _ in sort_names))
            if self.query.unique:
                statement = statement.distinct()
            statement = statement.order_by(*sorts)
        return Compiled("table", self.paged(statement), outputs)

    def aggregated(self, paths: Any, outputs: list[Output], plain: list[str], sort_names: list[tuple[str, bool]]):
        """GROUP BY the plain items (and their sort keys); each aggregate over distinct entities."""
        groups = plain + [name for name, _ in sort_names]
        source = paths
        dedupe = [o for o in outputs if o.kind == "aggregate" and o.function in ("sum", "avg")]
        if dedupe:  # sum and avg count each entity once per group, however many paths reach it
            numbered = [
                sa.func.row_number()
                .over(partition_by=[paths.c[g] for g in groups] + [paths.c[o.columns[0]]])
                .label(f"{o.columns[0]}_n")
                for o in dedupe
            ]
            source = sa.select(paths, *numbered).subquery("numbered")
        columns: list[Any] = [source.c[g] for g in groups]
        for output in outputs:
            if output.kind != "aggregate":
                continue
            function = output.function or "count"
            ident = source.c[output.columns[0]]
            if function == "count":
                value = sa.func.count(sa.distinct(ident))
            elif function in ("min", "max"):
                value = getattr(sa.func, function)(source.c[output.columns[1]])
            else:
                first = source.c[f"{output.columns[0]}_n"] == 1
                counted = sa.case((first, source.c[output.columns[1]]), else_=sa.null())
                value = getattr(sa.func, function)(counted)
            columns.append(value.label(output.columns[0] + "_agg"))
            output.columns = [output.columns[0] + "_agg"]
        order = self.order_terms([(source.c[name], descending) for name, descending in sort_names])
        return sa.select(*columns).group_by(*(source.c[g] for g in groups)).order_by(*order)

    # -- trees -------------------------------------------------------------------------------

    def tree(self) -> Compiled:
        nodes = self.plan.positive_nodes
        edges = self.plan.main.edges
        selects = []
        for scope, conditions in self.legs():
            columns = [scope[("e", n)].c.id.label(f"n{n}") for n in nodes]
            columns += [scope[("r", e)].c.id.label(f"h{e}") for e in edges]
            selects.append(sa.select(*columns).where(*conditions))
        paths: Any = (selects[0] if len(selects) == 1 else sa.union_all(*selects)).cte("paths")
        if self.query.order or self.query.limit is not None or self.query.skip:
            start = schema.entities.alias("start")
            starts = self.paged(
                sa.select(start.c.id).where(start.c.id.in_(sa.select(paths.c.n0))).order_by(*self.start_order(start))
            )
            paths = sa.select(paths).where(paths.c.n0.in_(starts)).cte("chosen")
        entity_ids = sa.union(*(sa.select(paths.c[f"n{n}"]) for n in nodes)) if len(nodes) > 1 else None
        e = schema.entities.alias("v")
        text_null = sa.cast(sa.null(), sa.Text)
        vertices = sa.select(
            sa.literal("vertex").label("part"),
            *(e.c[c] for c in ENTITY_COLUMNS),
            text_null.label("_fromEntityKey"),
            text_null.label("_toEntityKey"),
        ).where(e.c.id.in_(entity_ids if entity_ids is not None else sa.select(paths.c.n0)))
        parts = [vertices]
        if edges:
            r = schema.relationships.alias("h")
            edge_ids = sa.union(*(sa.select(paths.c[f"h{x}"]) for x in edges)) if len(edges) > 1 else None
            parts.append(
                sa.select(sa.literal("edge").label("part"), *(r.c[c] for c in RELATIONSHIP_COLUMNS)).where(
                    r.c.id.in_(edge_ids if edge_ids is not None else sa.select(paths.c[f"h{edges[0]}"]))
                )
            )
        statement = (parts[0] if len(parts) == 1 else sa.union_all(*parts)).subquery("answer")
        ordered = sa.select(statement).order_by(statement.c.part.desc(), statement.c._key, statement.c.id)
        return Compiled("tree", ordered)


def compile_plan(plan: Plan, source: Source, dialect: Dialect, parameters: Parameters, indexed) -> Compiled:
    return Compiler(plan, source, dialect, parameters, indexed).compile()
