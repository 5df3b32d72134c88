"""WITH and WHERE filters to SQL conditions, with J1QL's semantics:

* ``AND`` binds tighter than ``OR``; parentheses group;
* ``=`` compares typed values; a property holding an array matches when any element does;
* ``!=`` (and ``!~=``, ``!^=``, ``!$=``) is the negation of its positive operator: true for an
  absent property, false for an array with any matching element;
* the shorthand ``p = ('a' OR 'b')`` is ``p = 'a' OR p = 'b'``; ``p = ('a' AND 'b')`` is
  ``p = 'a' AND p = 'b'``; a negated operator negates the whole list: ``p != ('a' OR 'b')`` is
  ``NOT (p = 'a' OR p = 'b')`` (De Morgan: ``p != 'a' AND p != 'b'``) - JupiterOne's truth tables;
* ``p = undefined``: the property is absent (or null); ``p != undefined``: it has a value;
* a date is the number of milliseconds it stands for; ``date.now`` is bound when the query runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from .ast import And, Comparison, Expr, Group, Literal, Or, Ref, RelativeDate, StaticDate, Undefined, Value
from .dialect import ORDERING, STRING_OPERATORS, Dialect, Lit, Slot, negate
from .lexer import Source

NEGATED = {"!=": "=", "!~=": "~=", "!^=": "^=", "!$=": "$="}


class Parameters:
    """The dates relative to now a query uses: each is a bind parameter set when the query runs."""

    def __init__(self) -> None:
        self.relative: dict[str, RelativeDate] = {}
        self._names: dict[tuple, str] = {}

    def name(self, date: RelativeDate) -> str:
        key = date.steps
        if key not in self._names:
            self._names[key] = f"now_{len(self._names)}"
            self.relative[self._names[key]] = date
        return self._names[key]


class FilterCompiler:
    """Compiles filter expressions; ``resolve`` turns a property reference into a :class:`Slot`
    (the selector's own entity in WITH, an alias's table in WHERE)."""

    def __init__(self, dialect: Dialect, source: Source, parameters: Parameters, indexed: Callable[[str], bool]):
        self.dialect = dialect
        self.source = source
        self.parameters = parameters
        self.indexed = indexed

    def compile(self, expr: Expr, resolve: Callable[[Ref], Slot], *, use_indexes: bool = True) -> Any:
        """``expr`` as a condition; ``use_indexes`` False writes no index-driven form (the
        compiler keeps those for the entities it wants the database to start from)."""
        if isinstance(expr, And):
            return sa.and_(*(self.compile(item, resolve, use_indexes=use_indexes) for item in expr.items))
        if isinstance(expr, Or):
            return sa.or_(*(self.compile(item, resolve, use_indexes=use_indexes) for item in expr.items))
        return self.comparison(expr, resolve, use_indexes)

    def comparison(self, comparison: Comparison, resolve: Callable[[Ref], Slot], use_indexes: bool = True) -> Any:
        left = resolve(comparison.ref)
        op = comparison.op
        positive = NEGATED.get(op, op)
        operand = comparison.value
        indexed = use_indexes and op not in NEGATED and left.kind == "property" and self.indexed(left.name)
        if isinstance(operand, Group):
            parts = [self.positive(left, positive, value, resolve, indexed) for value in operand.values]
            combined = sa.and_(*parts) if operand.kind == "AND" else sa.or_(*parts)
        else:
            combined = self.positive(left, positive, operand, resolve, indexed)
        return negate(combined) if op in NEGATED else combined

    def positive(self, left: Slot, op: str, value: Value, resolve: Callable[[Ref], Slot], indexed: bool) -> Any:
        if isinstance(value, Undefined):
            if op != "=":
                raise self.source.error(value.offset, "undefined compares only with = and !=")
            return self.dialect.undefined(left)
        if isinstance(value, Ref):
            return self.dialect.compare_slots(left, op, resolve(value))
        lit = self.literal(value)
        if lit.kind == "boolean" and op != "=":
            raise self.source.error(value.offset, f"{op} does not compare booleans; use = or !=")
        if op in STRING_OPERATORS and lit.kind != "string":
            raise self.source.error(value.offset, f"{op} compares strings: expected a quoted string")
        assert op == "=" or op in ORDERING or op in STRING_OPERATORS
        return self.dialect.compare(left, op, lit, indexed)

    def literal(self, value: Value) -> Lit:
        if isinstance(value, Literal):
            if isinstance(value.value, bool):
                return Lit("boolean", value.value)
            if isinstance(value.value, str):
                return Lit("string", value.value)
            return Lit("number", value.value)
        if isinstance(value, StaticDate):
            return Lit("number", value.ms)
        if isinstance(value, RelativeDate):
            return Lit("number", param=self.parameters.name(value))
        raise AssertionError(value)
