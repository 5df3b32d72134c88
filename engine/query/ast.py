"""The parsed query: small immutable dataclasses, each with the offset of its first character.

::

    FIND UNIQUE User WITH active = true AS u           Query(unique, start=Selector, hops=[...])
      THAT !HAS >> AS r Device AS d                    Hop(negated, verbs, direction, alias, entity)
      WHERE u.email = d.owner                           where: an Expr over aliases
      RETURN u.name, count(d) ORDER BY u.name LIMIT 5   returns, order, skip, limit

Filters (``WITH`` and ``WHERE``) are trees of :class:`Or`, :class:`And` and
:class:`Comparison`; a comparison's right side is a value, a :class:`Group` (the shorthand
``= ('a' OR 'b')``) or, in ``WHERE``, another :class:`Ref`.
"""

from __future__ import annotations

from dataclasses import dataclass

# -- values ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    """A string, number or boolean."""

    value: str | int | float | bool
    offset: int


@dataclass(frozen=True)
class Undefined:
    """``undefined``: the property is absent (or null)."""

    offset: int


@dataclass(frozen=True)
class RelativeDate:
    """``date.now`` plus or minus amounts: ``date.now - 30 days`` is ``((-30, 'day'),)``.
    Resolved against the clock when the query runs, not when it is compiled."""

    steps: tuple[tuple[int | float, str], ...]  # (signed amount, unit: hour | day | month | year)
    offset: int


@dataclass(frozen=True)
class StaticDate:
    """``date(2024-01-31)``: an instant, in epoch milliseconds."""

    ms: int
    text: str
    offset: int


@dataclass(frozen=True)
class Ref:
    """A property: ``name`` in ``WITH``; ``alias.name`` in ``WHERE``, ``RETURN`` and ``ORDER BY``
    (``alias`` is None in ``WITH``)."""

    alias: str | None
    name: str
    offset: int

    @property
    def label(self) -> str:
        return f"{self.alias}.{self.name}" if self.alias else self.name


Value = Literal | Undefined | RelativeDate | StaticDate | Ref


@dataclass(frozen=True)
class Group:
    """The shorthand ``('a' OR 'b')`` / ``('a' AND 'b')`` on the right of a comparison."""

    kind: str  # "OR" | "AND"
    values: tuple[Value, ...]
    offset: int


# -- filters --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    ref: Ref
    op: str  # = != < > <= >= ~= ^= $= !~= !^= !$=
    value: Value | Group
    offset: int


@dataclass(frozen=True)
class And:
    items: tuple[Expr, ...]
    offset: int


@dataclass(frozen=True)
class Or:
    items: tuple[Expr, ...]
    offset: int


Expr = Comparison | And | Or


# -- the traversal --------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One name after FIND (or after a verb): a class (TitleCase) or a type (anything else)."""

    name: str
    is_class: bool
    offset: int


@dataclass(frozen=True)
class Selector:
    """Entities: ``*`` (targets empty) or one or more classes / types, a WITH filter, an alias."""

    targets: tuple[Target, ...]
    filter: Expr | None
    alias: str | None
    offset: int
    alias_offset: int = 0  # where the alias is written (errors about it point there)


@dataclass(frozen=True)
class Hop:
    """``THAT [!]VERB[|VERB] [>>|<<] [AS alias] <selector>``; ``verbs`` empty: RELATES TO (any)."""

    negated: bool
    verbs: tuple[str, ...]  # upper case
    direction: str  # "both" | "out" (>>: from the previous entity) | "in" (<<: to it)
    alias: str | None
    entity: Selector
    offset: int
    alias_offset: int = 0


# -- what comes back ------------------------------------------------------------------------


@dataclass(frozen=True)
class ReturnItem:
    """One RETURN item. ``function`` None: ``alias`` (the whole object), ``alias.name``, or
    ``alias.*`` (``star``); otherwise an aggregate over ``alias`` or ``alias.name``."""

    alias: str
    name: str | None
    star: bool
    function: str | None  # count | min | max | avg | sum
    label: str | None  # AS label
    offset: int

    @property
    def key(self) -> str:
        """The column's name in the answer: its label, else as written (``u.name``, ``count(u)``)."""
        if self.label:
            return self.label
        inner = f"{self.alias}.{self.name}" if self.name is not None else self.alias
        if self.star:
            inner = f"{self.alias}.*"
        return f"{self.function}({inner})" if self.function else inner


@dataclass(frozen=True)
class OrderItem:
    ref: Ref
    descending: bool


@dataclass(frozen=True)
class Query:
    text: str
    unique: bool
    start: Selector
    hops: tuple[Hop, ...]
    where: Expr | None
    tree: bool  # RETURN tree
    returns: tuple[ReturnItem, ...]  # empty: no RETURN (the starting entities)
    order: tuple[OrderItem, ...]
    skip: int | None
    limit: int | None
