"""What a parsed query means, checked before any SQL is written: the chain of entities and
relationships, the negated parts, and what each alias names.

The traversal ``FIND A THAT HAS B THAT !USES C THAT IS D`` is a chain of *nodes* (entities
0..3) and *edges* (relationships 0..2, edge ``i`` between nodes ``i`` and ``i + 1``). A negated
hop splits it: the positive part (A HAS B) is what the query returns; the rest hangs off its
last node as a :class:`Branch` that must have no match (B with no ``USES C THAT IS D``), and may
itself end in a further negated branch. Aliases inside a negated branch match nothing, so
WHERE, RETURN and ORDER BY cannot use them.

Errors name the alias, with the line and column where it is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .ast import Comparison, Expr, Hop, Query, Ref, Selector
from .lexer import Source

ENTITY, RELATIONSHIP = "entity", "relationship"


@dataclass(frozen=True)
class Alias:
    name: str
    kind: str  # ENTITY | RELATIONSHIP
    index: int  # the node or edge number
    negated: bool


@dataclass
class Branch:
    """A run of edges from node ``anchor``; ``negated`` hangs off its last node."""

    anchor: int
    edges: list[int] = field(default_factory=list)
    negated: Branch | None = None

    @property
    def last_node(self) -> int:
        return self.edges[-1] + 1 if self.edges else self.anchor


@dataclass
class Plan:
    query: Query
    nodes: list[Selector]
    hops: list[Hop]
    main: Branch
    aliases: dict[str, Alias]

    @property
    def positive_nodes(self) -> list[int]:
        return list(range(self.main.last_node + 1))

    def node_alias(self, index: int) -> str | None:
        return self.nodes[index].alias

    def alias(self, ref_alias: str, offset: int, source: Source, what: str) -> Alias:
        """The alias a WHERE, RETURN or ORDER BY item names (an error if unknown or negated)."""
        found = self.aliases.get(ref_alias)
        if found is None:
            known = ", ".join(sorted(self.aliases)) or "none: name one with AS"
            raise source.error(offset, f"unknown alias {ref_alias!r} in {what} (aliases: {known})")
        if found.negated:
            raise source.error(
                offset, f"alias {ref_alias!r} is inside a negated traversal (THAT !...): it matches nothing"
            )
        return found


def plan(query: Query, source: Source) -> Plan:
    nodes = [query.start] + [hop.entity for hop in query.hops]
    hops = list(query.hops)
    main = Branch(0)
    branch = main
    for index, hop in enumerate(hops):
        if hop.negated:
            branch.negated = Branch(index)
            branch = branch.negated
        branch.edges.append(index)
    negated_from = next((i for i, hop in enumerate(hops) if hop.negated), None)
    aliases: dict[str, Alias] = {}

    def add(name: str | None, kind: str, index: int, negated: bool, offset: int) -> None:
        if name is None:
            return
        if name in aliases:
            raise source.error(offset, f"alias {name!r} is defined twice")
        aliases[name] = Alias(name, kind, index, negated)

    for index, selector in enumerate(nodes):
        negated = negated_from is not None and index > negated_from
        add(selector.alias, ENTITY, index, negated, selector.alias_offset)
    for index, hop in enumerate(hops):
        negated = negated_from is not None and index >= negated_from
        add(hop.alias, RELATIONSHIP, index, negated, hop.alias_offset)
    result = Plan(query, nodes, hops, main, aliases)
    _check(result, source)
    return result


def _refs(expr: Expr | None) -> list[Ref]:
    if expr is None:
        return []
    if isinstance(expr, Comparison):
        found = [expr.ref]
        values = expr.value.values if hasattr(expr.value, "values") else (expr.value,)
        found.extend(v for v in values if isinstance(v, Ref))
        return found
    return [ref for item in expr.items for ref in _refs(item)]


def _check(plan: Plan, source: Source) -> None:
    query = plan.query
    for ref in _refs(query.where):
        assert ref.alias is not None
        plan.alias(ref.alias, ref.offset, source, "WHERE")
    returned = set()
    for item in query.returns:
        found = plan.alias(item.alias, item.offset, source, "RETURN")
        returned.add(found.name)
        if item.function not in (None, "count") and item.name is None:
            raise source.error(item.offset, f"{item.function}() needs alias.property")
    keys = [item.key for item in query.returns]
    for item in query.returns:
        if keys.count(item.key) > 1:
            raise source.error(item.offset, f"RETURN has {item.key!r} twice; name one with AS")
    aggregated = any(item.function for item in query.returns)
    start = plan.nodes[0].alias
    for order in query.order:
        assert order.ref.alias is not None
        found = plan.alias(order.ref.alias, order.ref.offset, source, "ORDER BY")
        if not query.returns and found.name != start:
            raise source.error(
                order.ref.offset,
                "without RETURN the answer is the starting entities: ORDER BY their alias "
                f"({start!r})" + ("" if start else " - name them with AS"),
            )
        if (query.unique or aggregated) and query.returns and not _is_returned(order.ref, query):
            why = "with UNIQUE" if query.unique else "with aggregates"
            raise source.error(order.ref.offset, f"{why}, ORDER BY must name a returned item ({order.ref.label})")


def _is_returned(ref: Ref, query: Query) -> bool:
    for item in query.returns:
        if item.function or item.alias != ref.alias:
            continue
        if item.name is None or item.name == ref.name:
            return True
    return False
