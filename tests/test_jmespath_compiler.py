"""The compiled JMESPath gives exactly what jmespath.py's interpreter gives: same results,
same errors, on generated expressions and data."""

from __future__ import annotations

import jmespath
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from engine.lang.functions import EngineFunctions, jmespath_options
from engine.lang.jmespath_compiler import compile_ast

NAMES = ["a", "b", "c", "d"]
ATOMS = st.sampled_from(
    NAMES
    + [
        "@",
        "`1`",
        "`0`",
        "`-2.5`",
        "'x'",
        "''",
        "`null`",
        "`true`",
        "`false`",
        "`[1, 2]`",
        "`[]`",
        "`{}`",
        '`"2024-06-20T17:29:56Z"`',
    ]
)


def compound(children):
    pair = st.tuples(children, children)
    return st.one_of(
        children.map(lambda x: f"{x}.{NAMES[len(x) % 4]}"),
        children.map(lambda x: f"{x}[0]"),
        children.map(lambda x: f"{x}[-1]"),
        children.map(lambda x: f"{x}[1:]"),
        children.map(lambda x: f"{x}[::-1]"),
        children.map(lambda x: f"{x}[*].a"),
        children.map(lambda x: f"{x}[].b"),
        children.map(lambda x: f"{x}.*"),
        pair.map(lambda p: f"{p[0]}[?{p[1]}].c"),
        pair.map(lambda p: f"{p[0]} || {p[1]}"),
        pair.map(lambda p: f"{p[0]} && {p[1]}"),
        children.map(lambda x: f"!{x}"),
        pair.map(lambda p: f"{p[0]} == {p[1]}"),
        pair.map(lambda p: f"{p[0]} != {p[1]}"),
        pair.map(lambda p: f"{p[0]} < {p[1]}"),
        pair.map(lambda p: f"{p[0]} >= {p[1]}"),
        pair.map(lambda p: f"{{k: {p[0]}, j: {p[1]}}}"),
        pair.map(lambda p: f"[{p[0]}, {p[1]}]"),
        pair.map(lambda p: f"{p[0]} | {p[1]}"),
        children.map(lambda x: f"({x})"),
        children.map(lambda x: f"length({x})"),
        children.map(lambda x: f"keys({x})"),
        pair.map(lambda p: f"sort_by({p[0]}, &{p[1]})"),
        pair.map(lambda p: f"map(&{p[1]}, {p[0]})"),
        children.map(lambda x: f"to_string({x})"),
        pair.map(lambda p: f"contains({p[0]}, {p[1]})"),
        children.map(lambda x: f"join(', ', {x})"),
        children.map(lambda x: f"max({x})"),
        children.map(lambda x: f"to_number({x})"),
        children.map(lambda x: f"not_null({x}, `3`)"),
        children.map(lambda x: f"split({x}, ',')"),
        pair.map(lambda p: f"coalesce({p[0]}, {p[1]})"),
        children.map(lambda x: f"unique({x})"),
        children.map(lambda x: f"to_epoch_ms({x})"),
        children.map(lambda x: f"trim_prefix({x}, 'x')"),
        pair.map(lambda p: f"difference({p[0]}, {p[1]})"),
        children.map(lambda x: f"from_entries({x}, 'a', 'b')"),
        children.map(lambda x: f"merge({x}, `{{}}`)"),
    )


EXPRESSIONS = st.recursive(ATOMS, compound, max_leaves=6)
DATA = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from([0.5, "x", "", "a,b", "2024-01-01"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(NAMES), children, max_size=4),
    max_leaves=12,
)


def outcome(evaluate):
    try:
        return "ok", evaluate()
    except jmespath.exceptions.JMESPathError as exc:
        return "error", type(exc).__name__
    except Exception as exc:  # the engine's functions raise ValueProblem; both sides must agree
        return "error", type(exc).__name__


@settings(max_examples=400, deadline=None)
@given(expression=EXPRESSIONS, data=DATA)
def test_compiled_equals_interpreted(expression, data):
    try:
        parsed = jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError:
        assume(False)
    options = jmespath_options({"x": 1}, now=1_700_000_000_000)
    try:
        compiled = compile_ast(parsed.parsed, EngineFunctions.FUNCTION_TABLE)
    except (jmespath.exceptions.ArityError, jmespath.exceptions.VariadictArityError):
        with pytest.raises((jmespath.exceptions.ArityError, jmespath.exceptions.VariadictArityError)):
            parsed.search(data, options=options)
        return
    expected = outcome(lambda: parsed.search(data, options=options))
    actual = outcome(lambda: compiled(data, options.custom_functions))
    assert actual == expected, expression


@pytest.mark.parametrize(
    "expression, data, expected",
    [
        ("a.b", {"a": {"b": 1}}, 1),
        ("a[?b > `1`].c", {"a": [{"b": 1, "c": "x"}, {"b": 2, "c": "y"}]}, ["y"]),
        ("!`0`", {}, False),
        ("`1` == `true`", {}, False),
        ("sort_by(a, &b)[].b", {"a": [{"b": 2}, {"b": 1}]}, [1, 2]),
        ("length(a)", {"a": "four"}, 4),
    ],
)
def test_known_answers(expression, data, expected):
    compiled = compile_ast(jmespath.compile(expression).parsed, EngineFunctions.FUNCTION_TABLE)
    assert compiled(data, jmespath_options().custom_functions) == expected
