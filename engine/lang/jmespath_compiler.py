"""JMESPath compiled to Python closures.

jmespath.py parses an expression into an AST and then walks that AST, node by node,
every time the expression is evaluated. For a mapping that evaluates the same few dozen
expressions on every record that walk is most of the engine's time, so here the AST is
turned, once, into nested closures that do only the work the expression needs. The
semantics are jmespath.py's own (``jmespath.visitor.TreeInterpreter``): the test suite
compares both on generated expressions and data.

A compiled expression is called as ``fn(value, functions)``, ``functions`` being the
run's :class:`jmespath.functions.Functions` (which carries config and the clock).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from numbers import Number
from typing import Any

from jmespath import exceptions
from jmespath import functions as jp_functions

from ..errors import LimitExceeded
from .limits import MAX_ITEMS, MAX_VALUE_SIZE, text_size, too_many_items

Compiled = Callable[[Any, Any], Any]

# Functions whose result can be much larger than their arguments: a projection (or map)
# calling one of them checks the size of what it collects.
AMPLIFYING_FUNCTIONS = frozenset({"replace", "join", "to_string"})

# jmespath type names -> the Python type names jmespath.py accepts for them.
_TYPE_NAMES = {
    "boolean": ("bool",),
    "array": ("list", "_Projection"),
    "object": ("dict", "OrderedDict"),
    "null": ("NoneType",),
    "string": ("unicode", "str"),
    "number": ("float", "int", "long"),
    "expref": ("CompiledExpref",),
}


class CompiledExpref:
    """What ``&expr`` evaluates to: jmespath's built-in functions call ``.visit(expression, value)``.
    ``amplifies``: the expression calls a function whose result can be much larger than its input."""

    __slots__ = ("fn", "functions", "expression", "amplifies")

    def __init__(self, fn: Compiled, functions, amplifies: bool = False):
        self.fn = fn
        self.functions = functions
        self.expression = None
        self.amplifies = amplifies

    def visit(self, node, value):
        return self.fn(value, self.functions)


def _is_false(value: Any) -> bool:
    return value == "" or value == [] or value == {} or value is None or value is False


def _is_number(value: Any) -> bool:
    cls = value.__class__
    if cls is int or cls is float:
        return True
    return cls is not bool and isinstance(value, Number)


def _equals(x: Any, y: Any) -> bool:
    if x.__class__ is str or y.__class__ is str:
        return x == y
    if _is_number(x) and x in (0, 1):
        if isinstance(y, bool):
            return False
    elif _is_number(y) and y in (0, 1) and isinstance(x, bool):
        return False
    return x == y


def _comparable(x: Any) -> bool:
    return _is_number(x) or isinstance(x, str)


_ORDERING = {"lt": operator.lt, "gt": operator.gt, "lte": operator.le, "gte": operator.ge}


def compile_ast(node: dict, table: dict) -> Compiled:
    """Compile a jmespath AST. ``table`` is the Functions class's FUNCTION_TABLE (for
    arity checks, done here once instead of on every call)."""
    kind = node["type"]
    children = node.get("children", [])
    build = _BUILDERS.get(kind)
    if build is None:
        raise exceptions.JMESPathError(f"unsupported JMESPath node {kind!r}")
    return build(node, [compile_ast(c, table) if isinstance(c, dict) else c for c in children], table)


def _field(node, children, table):
    name = node["value"]

    def field(value, fns):
        try:
            return value.get(name)
        except AttributeError:
            return None

    return field


def _chain(node, children, table):
    first, *rest = children
    if len(rest) == 1:
        (second,) = rest

        def chain2(value, fns):
            return second(first(value, fns), fns)

        return chain2

    def chain(value, fns):
        result = first(value, fns)
        for child in rest:
            result = child(result, fns)
        return result

    return chain


def _comparator(node, children, table):
    left, right = children
    op = node["value"]
    if op == "eq":
        return lambda value, fns: _equals(left(value, fns), right(value, fns))
    if op == "ne":
        return lambda value, fns: not _equals(left(value, fns), right(value, fns))
    compare = _ORDERING[op]

    def ordering(value, fns):
        a, b = left(value, fns), right(value, fns)
        if not (_comparable(a) and _comparable(b)):
            return None
        return compare(a, b)

    return ordering


def _current(node, children, table):
    return lambda value, fns: value


def _expref(node, children, table):
    (inner,) = children
    amplifies = amplifying(node)
    return lambda value, fns: CompiledExpref(inner, fns, amplifies)


def amplifying(node: dict) -> bool:
    """Whether the expression calls one of AMPLIFYING_FUNCTIONS."""
    pending = [node]
    while pending:
        current = pending.pop()
        if current.get("type") == "function_expression" and current.get("value") in AMPLIFYING_FUNCTIONS:
            return True
        pending.extend(child for child in current.get("children", ()) if isinstance(child, dict))
    return False


def _function(node, children, table):
    name = node["value"]
    spec = table.get(name)
    if spec is None:
        raise exceptions.UnknownFunctionError(f"Unknown function: {name}()")
    signature = spec["signature"]
    variadic = bool(signature) and signature[-1].get("variadic")
    if variadic and len(children) < len(signature):
        raise exceptions.VariadictArityError(len(signature), len(children), name)
    if not variadic and len(children) != len(signature):
        raise exceptions.ArityError(len(signature), len(children), name)
    checks = [_type_check(name, entry["types"]) for entry in signature]
    if variadic:
        checks += [checks[-1]] * (len(children) - len(checks))
    checked = [(argument, check) for argument, check in zip(children, checks)]
    function = spec["function"]
    if len(checked) == 1:  # the common shapes, without a loop
        ((a, check_a),) = checked

        def call1(value, fns):
            x = a(value, fns)
            if check_a is not None:
                check_a(x)
            return function(fns, x)

        return call1
    if len(checked) == 2:
        (a, check_a), (b, check_b) = checked

        def call2(value, fns):
            x, y = a(value, fns), b(value, fns)
            if check_a is not None:
                check_a(x)
            if check_b is not None:
                check_b(y)
            return function(fns, x, y)

        return call2

    def call(value, fns):
        resolved = []
        for argument, check in checked:
            result = argument(value, fns)
            if check is not None:
                check(result)
            resolved.append(result)
        return function(fns, *resolved)

    return call


def _type_check(name: str, types: list[str]):
    """A checker raising jmespath's own JMESPathTypeError, or None when anything goes."""
    if not types:
        return None
    allowed: set[str] = set()
    subtypes: list[tuple[str, ...]] = []
    for jp_type in types:
        if jp_type.startswith("array-"):
            allowed.update(_TYPE_NAMES["array"])
            subtypes.append(_TYPE_NAMES[jp_type[len("array-") :]])
        else:
            allowed.update(_TYPE_NAMES[jp_type])
    checker = jp_functions.Functions()
    fast = {_PYTHON_TYPES[n] for n in allowed if n in _PYTHON_TYPES}
    # An array's items must all be of one of the subtypes ("array-string", "array-number").
    item_kinds = [{_PYTHON_TYPES[n] for n in names if n in _PYTHON_TYPES} for names in subtypes]

    def check(value):
        cls = value.__class__
        if cls in fast:
            if not subtypes or cls is not list or not value:
                return
            first = value[0].__class__
            for kinds in item_kinds:
                if first in kinds and all(item.__class__ in kinds for item in value):
                    return
        actual = type(value).__name__
        if actual not in allowed:
            raise exceptions.JMESPathTypeError(name, value, checker._convert_to_jmespath_type(actual), types)
        if subtypes and actual in _TYPE_NAMES["array"] and value:
            checker._subtype_check(value, subtypes, types, name)

    return check


_PYTHON_TYPES = {
    "bool": bool,
    "list": list,
    "dict": dict,
    "NoneType": type(None),
    "str": str,
    "float": float,
    "int": int,
    "CompiledExpref": CompiledExpref,
}


def _filter_projection(node, children, table):
    left, right, condition = children
    project = _project_checked if amplifying(node["children"][1]) else _project

    def filter_projection(value, fns):
        base = left(value, fns)
        if not isinstance(base, list):
            return None
        return project((e for e in base if not _is_false(condition(e, fns))), right, fns)

    return filter_projection


def _project(elements, right: Compiled, fns) -> list:
    """``right`` of each element, nulls left out: what every projection yields."""
    collected = []
    for element in elements:
        current = right(element, fns)
        if current is not None:
            collected.append(current)
    return collected


def _project_checked(elements, right: Compiled, fns) -> list:
    """:func:`_project` for a ``right`` that can build large values: what it collects stays
    within MAX_VALUE_SIZE characters of text."""
    collected = []
    total = 0
    for element in elements:
        current = right(element, fns)
        if current is not None:
            total += len(current) if current.__class__ is str else text_size(current, MAX_VALUE_SIZE - total)
            if total > MAX_VALUE_SIZE:
                raise LimitExceeded(f"a projection would build more than {MAX_VALUE_SIZE:,} characters")
            collected.append(current)
    return collected


def _flatten(node, children, table):
    (inner,) = children

    def flatten(value, fns):
        base = inner(value, fns)
        if not isinstance(base, list):
            return None
        merged = []
        for element in base:
            if isinstance(element, list):
                merged.extend(element)
                if len(merged) > MAX_ITEMS:
                    raise too_many_items("the result of '[]'")
            else:
                merged.append(element)
        return merged

    return flatten


def _index(node, children, table):
    position = node["value"]

    def index(value, fns):
        if not isinstance(value, list):
            return None
        try:
            return value[position]
        except IndexError:
            return None

    return index


def _slice(node, children, table):
    bounds = slice(*children)

    def sliced(value, fns):
        if not isinstance(value, list):
            return None
        return value[bounds]

    return sliced


def _key_val_pair(node, children, table):
    return children[0]


def _literal(node, children, table):
    constant = node["value"]
    return lambda value, fns: constant


def _multi_select_dict(node, children, table):
    pairs = [(child["value"], compiled) for child, compiled in zip(node["children"], children)]

    def multi_select_dict(value, fns):
        if value is None:
            return None
        return {key: compiled(value, fns) for key, compiled in pairs}

    return multi_select_dict


def _multi_select_list(node, children, table):
    def multi_select_list(value, fns):
        if value is None:
            return None
        return [compiled(value, fns) for compiled in children]

    return multi_select_list


def _or(node, children, table):
    left, right = children

    def either(value, fns):
        matched = left(value, fns)
        return right(value, fns) if _is_false(matched) else matched

    return either


def _and(node, children, table):
    left, right = children

    def both(value, fns):
        matched = left(value, fns)
        return matched if _is_false(matched) else right(value, fns)

    return both


def _not(node, children, table):
    (inner,) = children

    def negation(value, fns):
        result = inner(value, fns)
        if _is_number(result) and result == 0:
            return False
        return not result

    return negation


def _projection(node, children, table):
    left, right = children
    project = _project_checked if amplifying(node["children"][1]) else _project

    def projection(value, fns):
        base = left(value, fns)
        if not isinstance(base, list):
            return None
        return project(base, right, fns)

    return projection


def _value_projection(node, children, table):
    left, right = children
    project = _project_checked if amplifying(node["children"][1]) else _project

    def value_projection(value, fns):
        base = left(value, fns)
        try:
            base = base.values()
        except AttributeError:
            return None
        return project(base, right, fns)

    return value_projection


_BUILDERS = {
    "field": _field,
    "subexpression": _chain,
    "index_expression": _chain,
    "pipe": _chain,
    "comparator": _comparator,
    "current": _current,
    "identity": _current,
    "expref": _expref,
    "function_expression": _function,
    "filter_projection": _filter_projection,
    "flatten": _flatten,
    "index": _index,
    "slice": _slice,
    "key_val_pair": _key_val_pair,
    "literal": _literal,
    "multi_select_dict": _multi_select_dict,
    "multi_select_list": _multi_select_list,
    "or_expression": _or,
    "and_expression": _and,
    "not_expression": _not,
    "projection": _projection,
    "value_projection": _value_projection,
}
