"""Where SQLite and PostgreSQL differ, for the query compiler: JSON property access, comparisons
with J1QL's typing and "any element of an array" rule, string operators, and the index-friendly
forms of a comparison. Everything else the compiler writes is dialect-neutral SQLAlchemy Core.

A *slot* is where a value lives: a property in the ``properties`` JSON of an entity or a
relationship, or one of the columns (``_key``, ``_type`` and the endpoints are text,
``_version``/``_createdOn``/``_beginOn`` integers, ``_class`` a JSON list).

Comparisons are typed as JSON is: ``'1'`` is not ``1``, ``true`` is not ``1``; a string
compares with strings, a number (or a date) with numbers. A property holding an array matches
when any element does. A property whose value is an object never matches.

* a property's JSON value: SQLite ``properties -> '$."name"'`` (JSON text); PostgreSQL
  ``properties -> 'name'`` (jsonb);
* its elements: ``json_each(properties, '$."name"')`` (one row for a scalar, one per element of an
  array); ``jsonb_array_elements`` of an array;
* ``name = 'x'``: ``EXISTS (SELECT 1 FROM json_each(...) WHERE type = 'text' AND value = 'x')``;
  ``(properties -> 'name') @> '"x"'`` (a scalar equal to it, or an array containing it);
* with the store's expression index on the property: SQLite ``id IN (SELECT id ... WHERE
  json_extract(...) = 'x' UNION ALL SELECT id ... WHERE json_extract(...) BETWEEN '[' AND '\\'
  ...)`` - two index range scans, the second over arrays (whose extracted JSON text starts with
  ``[``); PostgreSQL ``x = '"x"' OR (x > 'true' AND x < '{}' AND x @> '"x"')`` - jsonb's order
  puts every array between the booleans and the objects, so both sides are index ranges.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from ..store import schema
from ..store.jsontext import dumps
from ..store.sql import has_class, json_path
from ..store.url import POSTGRESQL, SQLITE

TEXT_COLUMNS = {"_key", "_type"}
INTEGER_COLUMNS = {"_version", "_createdOn", "_beginOn", "_endOn"}
RELATIONSHIP_TEXT_COLUMNS = {"_fromEntityKey", "_toEntityKey"}
ORDERING = ("<", ">", "<=", ">=")
STRING_OPERATORS = ("~=", "^=", "$=")
JSON_PARAM = "_json"  # a parameter's value as JSON text (PostgreSQL compares jsonb) is bound under name + this
_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}


@dataclass(frozen=True)
class Lit:
    """A literal on the right of a comparison: its JSON kind (string | number | boolean) and its
    value, or the name of a parameter bound when the query runs (a date relative to now)."""

    kind: str
    value: Any = None
    param: str | None = None


@dataclass(frozen=True)
class Slot:
    """A value of one row: a property (``kind`` property) or a column (text | integer | classes)."""

    table: Any  # an alias of etl_entities or etl_relationships
    kind: str
    name: str
    entity: bool  # of an entity (the store's property indexes are on entities only)

    @property
    def column(self) -> Any:
        return self.table.c[self.name]


def slot(table: Any, name: str, *, entity: bool) -> Slot:
    """Where property ``name`` of ``table``'s rows lives."""
    if name in TEXT_COLUMNS or (not entity and name in RELATIONSHIP_TEXT_COLUMNS):
        return Slot(table, "text", name, entity)
    if name in INTEGER_COLUMNS:
        return Slot(table, "integer", name, entity)
    if name == "_class":
        return Slot(table, "classes", name, entity)
    return Slot(table, "property", name, entity)


def _literal_text(text: str) -> Any:
    return sa.literal_column("'" + text.replace("'", "''") + "'")


def false() -> Any:
    return sa.false()


def negate(predicate: Any) -> Any:
    """NOT, with an unknown (NULL) read as false first: ``!=`` is true for an absent property."""
    return sa.not_(sa.func.coalesce(predicate, sa.false()))


class Dialect:
    """The SQL of one database. :func:`dialect_for` picks the class."""

    name = ""

    def _bind(self, lit: Lit) -> Any:
        """The literal's value as a bind parameter (a date relative to now: its named parameter)."""
        return sa.bindparam(lit.param) if lit.param else sa.literal(lit.value)

    # -- reading values ---------------------------------------------------------------------

    def json_value(self, s: Slot) -> Any:
        """The value as JSON (decoded to Python by the result), for RETURN and GROUP BY."""
        raise NotImplementedError

    def sort_value(self, s: Slot) -> Any:
        """An expression that sorts the values (numbers numerically, strings as text)."""
        raise NotImplementedError

    def number_value(self, s: Slot) -> Any:
        """The value when it is a number, else NULL (for min, max, avg, sum)."""
        raise NotImplementedError

    # -- comparisons ------------------------------------------------------------------------

    def compare(self, s: Slot, op: str, lit: Lit, indexed: bool) -> Any:
        """``slot op literal`` for a positive operator (= < > <= >= ~= ^= $=), any element of an
        array matching; ``indexed``: the store has an expression index on this property."""
        if s.kind == "text":
            return self._text_compare(s.column, op, lit) if lit.kind == "string" else false()
        if s.kind == "integer":
            return _OPS[op](s.column, self._bind(lit)) if lit.kind == "number" and op in _OPS else false()
        if s.kind == "classes":
            if op == "=" and lit.kind == "string" and lit.param is None:
                return has_class(s.column, lit.value, self.name)
            return self._classes_compare(s, op, lit)
        if indexed and s.entity and op in _OPS and not (lit.kind == "boolean" and op != "="):
            return self._indexed_compare(s, op, lit)
        return self._property_compare(s, op, lit)

    def undefined(self, s: Slot) -> Any:
        """The slot has no value (absent, or JSON null)."""
        if s.kind == "property":
            return sa.func.coalesce(self._type_of(s), "null") == "null"
        return s.column.is_(None)

    def compare_slots(self, left: Slot, op: str, right: Slot) -> Any:
        """``left op right`` between two aliases' values: true when any element of one matches any
        element of the other, of the same JSON type."""
        raise NotImplementedError

    def _text_compare(self, value: Any, op: str, lit: Lit) -> Any:
        bound = self._bind(lit)
        if op in _OPS:
            return _OPS[op](value, bound)
        return self.string_operator(value, op, bound)

    def string_operator(self, value: Any, op: str, text: Any) -> Any:
        """``~=`` contains, ``^=`` starts with, ``$=`` ends with (case-sensitive)."""
        raise NotImplementedError

    def _type_of(self, s: Slot) -> Any:
        raise NotImplementedError

    def _property_compare(self, s: Slot, op: str, lit: Lit) -> Any:
        raise NotImplementedError

    def _indexed_compare(self, s: Slot, op: str, lit: Lit) -> Any:
        raise NotImplementedError

    def _classes_compare(self, s: Slot, op: str, lit: Lit) -> Any:
        raise NotImplementedError


# -- SQLite -------------------------------------------------------------------------------------

_SQLITE_TYPES = {"string": ("text",), "number": ("integer", "real")}


class SQLiteDialect(Dialect):
    """JSON through json_extract / json_each / json_type; the store's property indexes are on
    ``json_extract(properties, '$."name"')`` over the current rows."""

    name = SQLITE

    def _path(self, s: Slot) -> Any:
        path = json_path(s.name)
        assert path is not None  # the compiler refuses names a path cannot quote
        return _literal_text(path)

    def _extract(self, table: Any, s: Slot) -> Any:
        return sa.func.json_extract(table.c.properties, self._path(s))

    def json_value(self, s: Slot) -> Any:
        if s.kind == "property":
            return sa.type_coerce(sa.type_coerce(s.table.c.properties, sa.Text).op("->")(self._path(s)), sa.JSON)
        return s.column

    def sort_value(self, s: Slot) -> Any:
        return self._extract(s.table, s) if s.kind == "property" else s.column

    def number_value(self, s: Slot) -> Any:
        if s.kind == "integer":
            return s.column
        if s.kind != "property":
            return sa.null()
        return sa.case((self._type_of(s).in_(("integer", "real")), self._extract(s.table, s)), else_=sa.null())

    def _type_of(self, s: Slot) -> Any:
        return sa.func.json_type(s.table.c.properties, self._path(s))

    def _elements(self, document: Any, path: Any = None) -> Any:
        args = (document,) if path is None else (document, path)
        return sa.func.json_each(*args).table_valued("key", "value", "type")

    def _element_match(self, element: Any, op: str, lit: Lit) -> Any:
        """One JSON value (a json_each row) against a literal."""
        if lit.kind == "boolean":
            return element.c.type == ("true" if lit.value else "false")
        kind = element.c.type == "text" if lit.kind == "string" else element.c.type.in_(_SQLITE_TYPES["number"])
        bound = self._bind(lit)
        test = _OPS[op](element.c.value, bound) if op in _OPS else self.string_operator(element.c.value, op, bound)
        return sa.and_(kind, test)

    def _property_compare(self, s: Slot, op: str, lit: Lit) -> Any:
        element = self._elements(s.table.c.properties, self._path(s))
        not_a_member = sa.func.typeof(element.c.key) != "text"  # an object's members are not elements
        match = sa.exists().where(not_a_member, self._element_match(element, op, lit))
        needle = _needle(op, lit)
        if needle is None:
            return match
        # The stored JSON text is the store's canonical encoding: a string equal to (or containing)
        # the literal is in it as written. Looking for it first spares parsing most rows.
        text = sa.type_coerce(s.table.c.properties, sa.Text)
        return sa.and_(sa.func.instr(text, sa.literal(needle, sa.Text)) > 0, match)

    def _classes_compare(self, s: Slot, op: str, lit: Lit) -> Any:
        element = self._elements(s.column)
        return sa.exists().where(self._element_match(element, op, lit))

    def _indexed_compare(self, s: Slot, op: str, lit: Lit) -> Any:
        """Two index range scans, joined by id: a scalar that compares, and the arrays (whose
        json_extract is JSON text starting with '[') with an element that does."""
        rows = schema.entities.alias("indexed")
        value = self._extract(rows, s)
        bound = self._bind(lit)
        current = rows.c._endOn.is_(None)
        type_of = sa.func.json_type(rows.c.properties, self._path(s))
        if lit.kind == "boolean":
            scalar = sa.and_(value == (1 if lit.value else 0), type_of == ("true" if lit.value else "false"))
        elif lit.kind == "string":
            scalar = sa.and_(_OPS[op](value, bound), type_of == "text")
        else:
            scalar = sa.and_(_OPS[op](value, bound), type_of.in_(_SQLITE_TYPES["number"]))
            if op in (">", ">="):
                scalar = sa.and_(scalar, value < "")  # every number sorts before every text
        element = self._elements(rows.c.properties, self._path(s))
        arrays = sa.and_(
            value >= "[",
            value < "\\",
            type_of == "array",
            sa.exists().where(self._element_match(element, op, lit)),
        )
        ids = sa.union_all(sa.select(rows.c.id).where(current, scalar), sa.select(rows.c.id).where(current, arrays))
        return s.table.c.id.in_(ids)

    def string_operator(self, value: Any, op: str, text: Any) -> Any:
        if op == "~=":
            return sa.func.instr(value, text) > 0
        if op == "^=":
            return sa.func.substr(value, 1, sa.func.length(text)) == text
        return sa.and_(
            sa.func.length(value) >= sa.func.length(text),
            sa.func.substr(value, sa.func.length(value) - sa.func.length(text) + 1) == text,
        )

    def _document(self, s: Slot) -> tuple[Any, Any]:
        if s.kind == "property":
            return s.table.c.properties, self._path(s)
        if s.kind == "classes":
            return s.column, None
        return sa.func.json_quote(s.column), None

    def compare_slots(self, left: Slot, op: str, right: Slot) -> Any:
        a, b = self._elements(*self._document(left)), self._elements(*self._document(right))
        comparable = ("text", "integer", "real", "true", "false")
        same_type = sa.or_(
            a.c.type == b.c.type, sa.and_(a.c.type.in_(("integer", "real")), b.c.type.in_(("integer", "real")))
        )
        if op in STRING_OPERATORS:
            test = sa.and_(a.c.type == "text", b.c.type == "text", self.string_operator(a.c.value, op, b.c.value))
        else:
            test = sa.and_(same_type, _OPS[op](a.c.value, b.c.value))
        return sa.exists().where(
            sa.func.typeof(a.c.key) != "text",
            sa.func.typeof(b.c.key) != "text",
            a.c.type.in_(comparable),
            test,
        )


def _needle(op: str, lit: Lit) -> str | None:
    """Text the stored JSON must contain for ``op lit`` to hold on a string (None: no such text)."""
    if lit.kind != "string" or lit.param is not None or not (op == "=" or op in STRING_OPERATORS):
        return None
    if op == "=":
        return dumps(lit.value)  # as the store encodes it
    escaped = any(c in '"\\' or ord(c) < 0x20 for c in lit.value)
    return None if escaped or not lit.value else lit.value


# -- PostgreSQL ---------------------------------------------------------------------------------

_PG_KINDS = {"string": "string", "number": "number", "boolean": "boolean"}


class PostgresDialect(Dialect):
    """JSON through jsonb operators; the query indexes are btree on ``(properties -> 'name')``,
    whose order puts every array between the booleans and the objects."""

    name = POSTGRESQL

    def _value(self, table: Any, s: Slot) -> Any:
        return sa.type_coerce(table.c.properties, JSONB).op("->")(_literal_text(s.name))

    def _json(self, s: Slot) -> Any:
        """The slot as a jsonb value."""
        if s.kind == "property":
            return self._value(s.table, s)
        if s.kind == "classes":
            return sa.type_coerce(s.column, JSONB)
        return sa.func.to_jsonb(s.column)

    def _lit_json(self, lit: Lit) -> Any:
        """The literal as jsonb (a parameter's JSON text is bound as ``<name>_json``)."""
        if lit.param:
            return sa.cast(sa.bindparam(lit.param + JSON_PARAM, type_=sa.Text), JSONB)
        return sa.cast(sa.literal(dumps(lit.value)), JSONB)

    def json_value(self, s: Slot) -> Any:
        return sa.type_coerce(self._value(s.table, s), JSONB) if s.kind == "property" else s.column

    def sort_value(self, s: Slot) -> Any:
        return self._value(s.table, s) if s.kind == "property" else s.column

    def number_value(self, s: Slot) -> Any:
        if s.kind == "integer":
            return s.column
        if s.kind != "property":
            return sa.null()
        value = self._value(s.table, s)
        return sa.case((sa.func.jsonb_typeof(value) == "number", sa.cast(value, sa.Numeric)), else_=sa.null())

    def _type_of(self, s: Slot) -> Any:
        return sa.func.jsonb_typeof(self._value(s.table, s))

    def _array_elements(self, value: Any, *, wrap_scalars: bool = False) -> Any:
        """The elements of a jsonb array (of nothing for a scalar, or of ``[scalar]``)."""
        otherwise = sa.func.jsonb_build_array(value) if wrap_scalars else sa.cast(sa.literal("[]"), JSONB)
        guarded = sa.case((sa.func.jsonb_typeof(value) == "array", value), else_=otherwise)
        return sa.func.jsonb_array_elements(guarded).table_valued("value")

    def _element_match(self, value: Any, op: str, lit: Lit) -> Any:
        """One jsonb value against a literal of its kind."""
        if op == "=":
            return value == self._lit_json(lit)
        kind = sa.func.jsonb_typeof(value) == _PG_KINDS[lit.kind]
        if op in _OPS:
            return sa.and_(kind, _OPS[op](value, self._lit_json(lit)))
        return sa.and_(kind, self.string_operator(value.op("#>>")(sa.text("'{}'")), op, self._bind(lit)))

    def _property_compare(self, s: Slot, op: str, lit: Lit) -> Any:
        value = self._value(s.table, s)
        if op == "=":
            return sa.type_coerce(value, JSONB).contains(self._lit_json(lit))  # a scalar, or in an array
        element = self._array_elements(value)
        return sa.or_(
            self._element_match(value, op, lit),
            sa.and_(
                sa.func.jsonb_typeof(value) == "array", sa.exists().where(self._element_match(element.c.value, op, lit))
            ),
        )

    def _classes_compare(self, s: Slot, op: str, lit: Lit) -> Any:
        element = self._array_elements(sa.type_coerce(s.column, JSONB))
        return sa.exists().where(self._element_match(element.c.value, op, lit))

    def _indexed_compare(self, s: Slot, op: str, lit: Lit) -> Any:
        value = self._value(s.table, s)
        literal = self._lit_json(lit)
        if op == "=":
            scalar = value == literal
        else:
            scalar = sa.and_(_OPS[op](value, literal), sa.func.jsonb_typeof(value) == _PG_KINDS[lit.kind])
            if op in (">", ">=") and lit.kind == "number":
                scalar = sa.and_(scalar, value < sa.cast(sa.literal("false"), JSONB))  # booleans sort after numbers
        element = self._array_elements(value)
        arrays = sa.and_(
            value > sa.cast(sa.literal("true"), JSONB),
            value < sa.cast(sa.literal("{}"), JSONB),
            sa.exists().where(self._element_match(element.c.value, op, lit)),
        )
        return sa.or_(scalar, arrays)

    def string_operator(self, value: Any, op: str, text: Any) -> Any:
        if op == "~=":
            return sa.func.strpos(value, text) > 0
        if op == "^=":
            return sa.func.left(value, sa.func.length(text)) == text
        return sa.func.right(value, sa.func.length(text)) == text

    def compare_slots(self, left: Slot, op: str, right: Slot) -> Any:
        a = self._array_elements(self._json(left), wrap_scalars=True)
        b = self._array_elements(self._json(right), wrap_scalars=True)
        type_a, type_b = sa.func.jsonb_typeof(a.c.value), sa.func.jsonb_typeof(b.c.value)
        if op in STRING_OPERATORS:
            text_a, text_b = a.c.value.op("#>>")(sa.text("'{}'")), b.c.value.op("#>>")(sa.text("'{}'"))
            test = sa.and_(type_a == "string", type_b == "string", self.string_operator(text_a, op, text_b))
        else:
            test = sa.and_(
                type_a == type_b, type_a.in_(("string", "number", "boolean")), _OPS[op](a.c.value, b.c.value)
            )
        return sa.exists().where(test)


def dialect_for(name: str) -> Dialect:
    return PostgresDialect() if name == POSTGRESQL else SQLiteDialect()
