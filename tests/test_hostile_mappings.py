"""Hostile mappings stay cheap (issue 12).

A mapping is code run on someone else's machine. What its templates and JMESPath build is
bounded (strings, lists, numbers, ranges, loops: ``engine/lang/limits.py``), and a value over a
limit is a warning for the record, in milliseconds, not an exhausted machine. Nesting that
would exhaust a parser's stack (YAML, JMESPath, Jinja) is a located mapping error, and
``etl validate`` exits 3 on it, never 70. Relationship types must look like types, and a
mapping cannot make ``--offline --record-mode`` write a cassette outside its repository.
Template errors are located wherever templates are allowed.

Every refusal is timed in-process against ``QUICK``, generous for a noisy machine: a bound
that works takes milliseconds, one that does not takes minutes or all the memory.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import EXIT_INVALID_MAPPING, EXIT_USAGE, ExpressionError, MappingError, UsageError
from engine.lang.functions import jmespath_options, unique
from engine.lang.limits import (
    MAX_BLOCKS,
    MAX_BRACKETS,
    MAX_EXPRESSION_DEPTH,
    MAX_INT_DIGITS,
    MAX_ITEMS,
    MAX_STRING_LENGTH,
    MAX_TEMPLATE_BUILT,
    MAX_TEMPLATE_STEPS,
    MAX_VALUE_SIZE,
)
from engine.lang.template_checks import TEMPLATE_VARIABLES
from engine.lang.values import Scope, Value, jmespath_value, template_value
from engine.output import OutputDir
from engine.pipeline.build import Notes, evaluate
from engine.pipeline.compile import compile_file
from engine.pipeline.load import MAX_DEPTH
from engine.pipeline.run import replay_settings

REPO = Path(__file__).resolve().parents[1]
QUICK = 2.0  # seconds

RECORD = {
    "id": 7,
    "name": "Ada",
    "big": "y" * 900_000,
    "items": list(range(10)),
    "words": ["ab"] * MAX_ITEMS,
    "objects": [{"n": i % 7} for i in range(MAX_ITEMS)],
}


def compiled(text: str) -> Value:
    """A property value as the compiler makes it: a template if it has {{ or {%, else JMESPath."""
    if "{{" in text or "{%" in text:
        return template_value(text, variables=TEMPLATE_VARIABLES, config_fields=frozenset())
    return jmespath_value(text)


def scope() -> Scope:
    return Scope(RECORD, {"record": RECORD, "config": {}, "now": 0}, jmespath_options())


def warning_of(text: str) -> str:
    """Evaluate ``text`` on RECORD as the builder does (a failure is a warning, the value
    None) and return the warning; it must come back quickly."""
    value = compiled(text)
    warnings: list[str] = []
    started = time.perf_counter()
    result = evaluate(value, scope(), Notes("users: record 0", warnings), "entities[0].properties.x")
    elapsed = time.perf_counter() - started
    assert elapsed < QUICK, f"{text[:60]!r} took {elapsed:.1f} s"
    assert result is None, f"{text[:60]!r} gave a value"
    (warning,) = warnings
    assert warning.startswith("users: record 0: entities[0].properties.x: ")
    return warning.split(": ", 3)[3]


def value_of(text: str):
    return compiled(text).evaluate(scope())


TOO_LONG = f"would be longer than {MAX_STRING_LENGTH:,} characters"
TOO_MANY = f"would have more than {MAX_ITEMS:,} items"
STEPS = (
    f"the template ran more than {MAX_TEMPLATE_STEPS:,} steps (loop iterations, filtered items, calls) in one render"
)
BUILT = f"the template built more than {MAX_TEMPLATE_BUILT:,} characters in one render"


# ----------------------------------------------------------------------------------------
# Templates: what they build and how long they loop


@pytest.mark.parametrize(
    ("template", "message"),
    [
        # strings built in one step
        ("{{ 'a' * 10**9 }}", f"the result of '*' {TOO_LONG}"),
        ("x{{ 'a' * 1000000000 }}", f"the result of '*' {TOO_LONG}"),
        ("{{ '%999999999s' % 'x' }}", f"the result of '%' {TOO_LONG}"),
        ("{{ '%*s' % (999999999, 'x') }}", f"the result of '%' {TOO_LONG}"),
        ("{{ '%s%s' % (record.big, record.big) }}", f"the result of '%' {TOO_LONG}"),
        ("{{ 'x' | center(10**9) }}", f"the result of center {TOO_LONG}"),
        ("{{ 'x' | center(1000000000) }}", f"the result of center {TOO_LONG}"),
        ("{{ 'x'.center(10**9) }}", f"the result of center() {TOO_LONG}"),
        ("{{ 'x'.rjust(999999999, '-') }}", f"the result of rjust() {TOO_LONG}"),
        ("{{ 'x'.zfill(999999999) }}", f"the result of zfill() {TOO_LONG}"),
        ("{{ '\\t'.expandtabs(999999999) }}", f"the result of expandtabs() {TOO_LONG}"),
        ("{{ (1).to_bytes(999999999, 'big') }}", f"the result of to_bytes() {TOO_LONG}"),
        ("{{ '{:>999999999}'.format('x') }}", f"the result of format() {TOO_LONG}"),
        ("{{ '{:>{w}}'.format('x', w=999999999) }}", f"the result of format() {TOO_LONG}"),
        ("{{ '{0}{0}'.format(record.big) }}", f"the result of format() {TOO_LONG}"),
        ("{{ '%999999999s' | format('x') }}", f"the result of format {TOO_LONG}"),
        ("{{ 'x' | indent(999999999) }}", f"the result of indent {TOO_LONG}"),
        ("{{ ('a\\n' * 400000) | indent(100) }}", f"the result of indent {TOO_LONG}"),
        ("{{ ('a ' * 400000) | wordwrap(1, true, '----------') }}", f"the result of wordwrap {TOO_LONG}"),
        ("{{ 'x' | truncate(5, end='-' * 2000000) }}", f"the result of '*' {TOO_LONG}"),
        ("{{ record.big | replace('y', 'yy') }}", f"the result of replace {TOO_LONG}"),
        ("{{ record.big.replace('', '-') }}", f"the result of replace() {TOO_LONG}"),
        ("{{ record.big ~ record.big }}", f"the result of '~' {TOO_LONG}"),
        ("{{ record.big + record.big }}", f"the result of '+' {TOO_LONG}"),
        ("{{ record.words | join(record.big) }}", f"the result of join {TOO_LONG}"),
        ("{{ ','.join([record.big, record.big]) }}", f"the result of join() {TOO_LONG}"),
        ("{{ range(100000) | map('string') | join(record.big) }}", f"the result of join {TOO_LONG}"),
        # numbers, lists and ranges
        ("{{ 10 ** 100000 }}", f"the result of '**' would be a number of more than {MAX_INT_DIGITS:,} digits"),
        ("{{ 7 ** 2500 * 7 ** 2500 }}", f"the result of '*' would be a number of more than {MAX_INT_DIGITS:,} digits"),
        ("{{ range(10**9) | length }}", f"range() of more than {MAX_ITEMS:,} items"),
        ("{{ range(10**30) | length }}", f"range() of more than {MAX_ITEMS:,} items"),
        ("{{ [1] * 10**9 }}", f"the result of '*' {TOO_MANY}"),
        (
            "{{ ([record.big] * 1000) | length }}",
            f"the result of '*' would be longer than {MAX_VALUE_SIZE:,} characters as text",
        ),
        ("{{ record.big | list | length }}", f"the result of list has more than {MAX_ITEMS:,} items"),
        ("{{ range(10) | batch(10**9) | list }}", f"the result of batch {TOO_MANY}"),
        ("{{ range(10) | slice(10**9) | list }}", f"the result of slice {TOO_MANY}"),
        # loops: the total work of a render
        ("{% for i in range(10**5) %}{% for j in range(10**5) %}{% endfor %}{% endfor %}", STEPS),
        (
            "{% for i in range(10**5) %}{% for j in range(10**5) %}{% if loop.index < 0 %}x{% endif %}"
            "{% endfor %}{% endfor %}",
            STEPS,
        ),
        (
            "{% for a in record.items %}{% for b in record.items %}{% for c in record.items %}"
            "{% for d in record.items %}{% for e in record.items %}{% for f in record.items %}"
            "{% for g in record.items %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}"
            "{% endfor %}{% endfor %}",
            STEPS,
        ),
        ("{{ record.words" + " | map('string')" * 20 + " | list | length }}", STEPS),
        ("{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}", "a recursive loop went more than 50 levels deep"),
        # text growing in loops
        (
            "{% for i in range(100000) %}{{ record.big }}{% endfor %}",
            "template result longer than 1,000,000 characters",
        ),
        (
            "{% for i in range(100000) %}{{ i }}{% endfor %}{{ record.big }}",
            "template result longer than 1,000,000 characters",
        ),
        ("{% set x %}{% for i in range(100000) %}{{ record.big }}{% endfor %}{% endset %}{{ x | length }}", BUILT),
        (
            "{% set x %}{% for i in range(10**5) %}{% for j in range(10**5) %}"
            + "-" * 100
            + "{% endfor %}{% endfor %}{% endset %}{{ x | length }}",
            BUILT,
        ),
        ("{% filter upper %}{% for i in range(100000) %}{{ record.big }}{% endfor %}{% endfilter %}", BUILT),
        ("{{ range(100000) | map('replace', '', record.big[:100000]) | list | length }}", BUILT),
        # lists whose text would be huge, made of references to one big string
        (
            "{% set a = [record.big] * 10 %}{% set b = [a, a, a, a, a, a, a, a, a, a] %}{{ [b, b, b, b] }}",
            "a list or object in the text is longer than 1,000,000 characters as text",
        ),
        (
            "{% set a = [record.big] * 10 %}{% set b = [a, a, a, a, a, a, a, a, a, a] %}{{ b | tojson }}",
            "the value given to tojson is longer than 1,000,000 characters as text",
        ),
        (
            "{% set a = [record.big] * 10 %}{{ a | upper }}",
            "the value given to upper is longer than 1,000,000 characters as text",
        ),
        (
            "{% set a = [record.big] * 10 %}{{ 'x' ~ a }}",
            "a value joined with '~' is longer than 1,000,000 characters as text",
        ),
        ("{{ [record.big] * 12 }}", "the result of '*' would be longer than 10,000,000 characters as text"),
    ],
)
def test_templates_building_too_much_fail_quickly_with_a_clear_warning(template, message):
    assert warning_of(template) == message


def test_the_plain_substitution_fast_path_has_the_same_limit():
    record = {"big": "y" * 600_000}
    value = template_value("{{ record.big }}{{ record.big }}", variables=TEMPLATE_VARIABLES, config_fields=frozenset())
    warnings: list[str] = []
    scope = Scope(record, {"record": record}, jmespath_options())
    assert evaluate(value, scope, Notes("r", warnings), "x") is None
    assert warnings == ["r: x: template result longer than 1,000,000 characters"]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        # exactly at the limits, or well within them: as before
        ("{{ 'a' * 1000000 }}", "a" * MAX_STRING_LENGTH),
        ("{{ range(100000) | length }}", MAX_ITEMS),
        ("{{ ([0] * 100000) | length }}", MAX_ITEMS),
        ("{{ 'x' | center(5) }}", "  x  "),
        ("{{ '%5s|%-3d' % ('ab', 7) }}", "   ab|7  "),
        ("{{ '{:>6}|{:.2f}'.format('ab', 1.5) }}", "    ab|1.50"),
        ("{{ 'a b c d' | wordwrap(3, true, '|') }}", "a b|c d"),
        ("{{ 'ab' | indent(2, true) }}", "  ab"),
        ("{{ 2 ** 64 }}", 2**64),
        ("{{ 10 ** 3999 }}", 10**3999),
        ("{{ record.items | join(',') }}", "0,1,2,3,4,5,6,7,8,9"),
        ("{{ record.words | join(',') | length }}", 3 * MAX_ITEMS - 1),
        ("{{ record.items | map('string') | join('-') }}", "0-1-2-3-4-5-6-7-8-9"),
        ("{{ record.items | select('odd') | list }}", [1, 3, 5, 7, 9]),
        ("{{ [[1], [2, 3]] | sum(start=[]) }}", [1, 2, 3]),
        ("{{ record.items | sum }}", 45),
        ("{{ record.name ~ '-' ~ record.id }}", "Ada-7"),
        ("{{ 'ab'.replace('b', 'cd') }}", "acd"),
        ("{{ '-'.join(['a', 'b']) }}", "a-b"),
        ("{% for i in range(3) %}{{ loop.index }}{% else %}none{% endfor %}", "123"),
        ("{% set s %}{% for i in record.items %}{{ i }}{% endfor %}{% endset %}{{ s }}", "0123456789"),
        ("{% filter upper %}{% for w in ['a', 'b'] %}{{ w }}{% endfor %}{% endfilter %}", "AB"),
        (
            "{% for x in [[1, [2, [3]]]] recursive %}{% if x is iterable %}{{ loop(x) }}{% else %}{{ x }}"
            "{% endif %}{% endfor %}",
            "123",
        ),
        # half a million loop iterations are within a render's budget
        ("{% for i in range(1000) %}{% for j in range(500) %}{% endfor %}{% endfor %}done", "done"),
    ],
)
def test_templates_within_the_limits_work_as_before(template, expected):
    assert value_of(template) == expected


def test_a_run_reports_a_value_over_a_limit_as_a_warning_and_goes_on(etl, tmp_path):
    mapping = tmp_path / "hostile.yaml"
    mapping.write_text(
        """\
version: 1
integration: {id: acme, name: Acme}
sources:
  api: {base_url: http://unused.invalid}
steps:
  - id: account
    entities:
      - type: acme_account
        class: Account
        key: acme_account:1
        properties:
          name: {value: Acme}
          padded: "{{ 'x' | center(10**9) }}"
          looped: "{% for i in range(10**5) %}{% for j in range(10**5) %}{% endfor %}{% endfor %}"
""",
        encoding="utf-8",
    )
    started = time.perf_counter()
    result = etl("run", mapping, "--output", tmp_path / "out", "-vv")
    assert time.perf_counter() - started < 2 * QUICK
    assert result.exit_code == 0, result.output
    output = result.stdout + result.stderr
    assert f"account: entities[0].properties.padded: the result of center {TOO_LONG}" in output
    assert f"account: entities[0].properties.looped: {STEPS}" in output
    (entity,) = OutputDir.open(tmp_path / "out").objects("entities")
    assert entity["name"] == "Acme" and "padded" not in entity and "looped" not in entity


# ----------------------------------------------------------------------------------------
# JMESPath: the engine's functions and the built-ins that can blow up


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("replace(big, 'y', 'yy')", f"the result of replace() {TOO_LONG}"),
        ("replace(big, '', '-')", f"the result of replace() {TOO_LONG}"),
        ("join(big, words)", f"the result of join() {TOO_LONG}"),
        ("split(big, 'y')", f"split() would give more than {MAX_ITEMS:,} parts"),
        ("to_string([big, big])", f"to_string() would give more than {MAX_STRING_LENGTH:,} characters"),
        (
            "words[*].replace(@, '', '" + "z" * 200 + "')",
            f"a projection would build more than {MAX_VALUE_SIZE:,} characters",
        ),
        (
            "map(&replace(@, '', '" + "z" * 200 + "'), words)",
            f"map() would build more than {MAX_VALUE_SIZE:,} characters",
        ),
        ("[" + "|".join(["[@, @]"] * 20) + "]" + "[]" * 21, "the result of '[]' would have more than 100,000 items"),
    ],
)
def test_jmespath_building_too_much_fails_quickly_with_a_clear_warning(expression, message):
    assert warning_of(expression) == message


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("join(',', words) | length(@)", 3 * MAX_ITEMS - 1),
        ("length(to_string(words))", 5 * MAX_ITEMS + 1),
        ("replace(name, 'a', 'aa')", "Adaa"),
        ("split('a, b,,c', ',')", ["a", "b", "c"]),
        ("length(words[*].replace(@, 'a', 'A'))", MAX_ITEMS),
        ("unique(objects[].n)", [0, 1, 2, 3, 4, 5, 6]),
        ("length(unique(objects))", 7),
        ("length(difference(objects, objects[:3]))", MAX_ITEMS - (MAX_ITEMS // 7) * 3 - 3),
    ],
)
def test_jmespath_within_the_limits_works_as_before(expression, expected):
    started = time.perf_counter()
    assert value_of(expression) == expected
    assert time.perf_counter() - started < QUICK


def test_unique_and_difference_keep_their_meaning_in_linear_time():
    values = [
        1,
        True,
        1.0,
        "a",
        {"a": 1},
        {"a": True},
        [1],
        [True],
        None,
        "a",
        {"b": [1, {"c": 2}]},
        {"b": [1, {"c": 2}]},
    ]
    # As the list membership test they replace: equal as Python compares values.
    expected: list = []
    for v in values:
        if v not in expected:
            expected.append(v)
    assert unique(values) == expected
    assert value_of('difference(`[1, 2, {"a": [3]}, [4]]`, `[{"a": [3]}, 2]`)') == [1, [4]]
    started = time.perf_counter()
    assert len(unique([{"n": i} for i in range(MAX_ITEMS)])) == MAX_ITEMS
    assert time.perf_counter() - started < QUICK


# ----------------------------------------------------------------------------------------
# Nesting: located mapping errors, exit 3 from `etl validate`

#  1 version: 1
#  2 integration:
#  3   id: acme
#  4   name: Acme
#  5 sources:
#  6   api:
#  7     base_url: https://api.example.com
#  8 steps:
#  9   - id: users
# 10     request:
# 11       path: /users
# 12     records: users
# 13     entities:
# 14       - type: acme_user
# 15         class: User
# 16         key: "acme_user:{{ record.id }}"
# 17         properties:
# 18           name: VALUE
SMALL = """\
version: 1
integration:
  id: acme
  name: Acme
sources:
  api:
    base_url: https://api.example.com
steps:
  - id: users
    request:
      path: /users
    records: users
    entities:
      - type: acme_user
        class: User
        key: "acme_user:{{ record.id }}"
        properties:
          name: VALUE
"""
NAME = "steps[0].entities[0].properties.name"
QUOTED = 18  # the column of the first character inside `name: "...`


def with_name(value: str) -> str:
    return SMALL.replace("VALUE", value)


def nested(opening: str, closing: str, inner: str, levels: int) -> str:
    return opening * levels + inner + closing * levels


JMESPATH_TOO_DEEP = f"nested more than {MAX_BRACKETS} levels deep (brackets, '!' or '&')"
NESTING_CASES = [
    pytest.param(
        with_name('"' + nested("(", ")", "a", 10_000) + '"'),
        [f"FILE:18:{QUOTED + MAX_BRACKETS}: {NAME}: {JMESPATH_TOO_DEEP}"],
        id="jmespath-parentheses",
    ),
    pytest.param(
        with_name('"' + nested("[", "]", "a", 10_000) + '"'),
        [f"FILE:18:{QUOTED + MAX_BRACKETS}: {NAME}: {JMESPATH_TOO_DEEP}"],
        id="jmespath-lists",
    ),
    pytest.param(
        with_name('"' + nested("{a: ", "}", "a", 10_000) + '"'),
        [f"FILE:18:{QUOTED + 4 * MAX_BRACKETS}: {NAME}: {JMESPATH_TOO_DEEP}"],
        id="jmespath-objects",
    ),
    pytest.param(
        with_name('"' + "!" * 10_000 + 'a"'),
        [f"FILE:18:{QUOTED + MAX_BRACKETS}: {NAME}: {JMESPATH_TOO_DEEP}"],
        id="jmespath-not",
    ),
    pytest.param(
        with_name('"a' + " || a" * 5_000 + '"'),
        [
            f"FILE:18:{QUOTED}: {NAME}: the expression is nested more than {MAX_EXPRESSION_DEPTH} levels deep "
            "(a chain of fields, pipes or operators, or a deep literal?)"
        ],
        id="jmespath-or-chain",
    ),
    pytest.param(
        with_name("'`" + nested("[", "]", "", 20_000) + "`'"),
        [f"FILE:18:{QUOTED}: {NAME}: the expression is nested more than {MAX_EXPRESSION_DEPTH} levels deep"],
        id="jmespath-deep-literal",
    ),
    pytest.param(
        with_name('"{{ ' + nested("(", ")", "1", 10_000) + ' }}"'),
        [f"FILE:18:{QUOTED + 3 + MAX_BRACKETS}: {NAME}: brackets nested more than {MAX_BRACKETS} deep"],
        id="jinja-parentheses",
    ),
    pytest.param(
        with_name('"{{ ' + nested("[", "]", "", 10_000) + ' }}"'),
        [f"FILE:18:{QUOTED + 3 + MAX_BRACKETS}: {NAME}: brackets nested more than {MAX_BRACKETS} deep"],
        id="jinja-lists",
    ),
    pytest.param(
        with_name('"' + nested("{% if 1 %}", "{% endif %}", "x", 5_000) + '"'),
        # each '{% if 1 %}' is 10 characters; the name of the 17th starts 3 into it.
        [f"FILE:18:{QUOTED + 10 * MAX_BLOCKS + 3}: {NAME}: '{{% if %}}' blocks nested more than {MAX_BLOCKS} deep"],
        id="jinja-ifs",
    ),
    pytest.param(
        with_name('"' + nested("{% for i in record.items %}", "{% endfor %}", "x", 100) + '"'),
        [f"FILE:18:{QUOTED + 27 * MAX_BLOCKS + 3}: {NAME}: '{{% for %}}' blocks nested more than {MAX_BLOCKS} deep"],
        id="jinja-fors",
    ),
    pytest.param(
        with_name('"{{ 1' + " + 1" * 5_000 + ' }}"'),
        [
            f"FILE:18:{QUOTED}: {NAME}: the template is nested more than {MAX_EXPRESSION_DEPTH} levels deep "
            "(a chain of operators, filters or attributes?)"
        ],
        id="jinja-plus-chain",
    ),
    pytest.param(
        with_name('"{{ ' + "not " * 5_000 + '1 }}"'),
        [f"FILE:18:{QUOTED}: {NAME}: the template is nested more than {MAX_EXPRESSION_DEPTH} levels deep"],
        id="jinja-not-chain",
    ),
    pytest.param(
        with_name('"{{ record' + ".a" * 1_000 + ' }}"'),
        [
            f"FILE:18:{QUOTED}: {NAME}: the template is nested more than {MAX_EXPRESSION_DEPTH} levels deep "
            "(a chain of operators, filters or attributes?)"
        ],
        id="jinja-attribute-chain",
    ),
    pytest.param(
        with_name(nested("[", "]", "", 10_000)),
        # `name` is 6 levels down; its value's 60th '[' (at column 17 + 59) is 65 levels down.
        [
            f"FILE:18:{17 + MAX_DEPTH - 5}: {NAME}{'[0]' * (MAX_DEPTH - 6 + 1)}: nesting deeper than {MAX_DEPTH} levels; refusing to load it"
        ],
        id="yaml-flow-lists",
    ),
    pytest.param(
        with_name(nested("{a: ", "}", "1", 10_000)),
        [
            # the 59th key 'a' (at column 18 + 4 * 58) is 65 levels down.
            f"FILE:18:{18 + 4 * (MAX_DEPTH - 6)}: {NAME}{'.a' * (MAX_DEPTH - 6 + 1)}: nesting deeper than {MAX_DEPTH} levels; refusing to load it"
        ],
        id="yaml-flow-objects",
    ),
    pytest.param(
        SMALL.replace(
            "VALUE", "\n" + "".join(" " * (12 + 2 * i) + f"k{i}:\n" for i in range(2_000)) + " " * 4_012 + "v: 1"
        ),
        # k0 is on line 19, 6 levels down; k58 (line 77, column 13 + 2 * 58) is 65 levels down.
        [
            f"FILE:{19 + MAX_DEPTH - 6}:{13 + 2 * (MAX_DEPTH - 6)}: {NAME}."
            + ".".join(f"k{i}" for i in range(MAX_DEPTH - 6 + 1))
            + f": nesting deeper than {MAX_DEPTH} levels; refusing to load it"
        ],
        id="yaml-block-mappings",
    ),
]


def write(tmp_path: Path, text: str, name: str = "mapping.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problem_lines(path: Path) -> list[str]:
    started = time.perf_counter()
    with pytest.raises(MappingError) as info:
        compile_file(path)
    assert time.perf_counter() - started < QUICK
    assert info.value.exit_code == EXIT_INVALID_MAPPING
    return [str(p).replace(str(path), "FILE") for p in info.value.problems]


@pytest.mark.parametrize(("text", "expected"), NESTING_CASES)
def test_deep_nesting_is_a_located_mapping_error(tmp_path, text, expected):
    assert problem_lines(write(tmp_path, text)) == expected


@pytest.mark.parametrize(("text", "expected"), NESTING_CASES)
def test_etl_validate_exits_3_on_deep_nesting(tmp_path, text, expected):
    path = write(tmp_path, text)
    process = subprocess.run(
        [sys.executable, "-m", "engine", "validate", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert process.returncode == EXIT_INVALID_MAPPING, process.stderr
    assert process.stderr.splitlines()[0] == expected[0].replace("FILE", str(path))
    assert "Traceback" not in process.stderr


@pytest.mark.parametrize(
    ("value", "message_at"),
    [
        # just within the limits: compiles and evaluates
        ('"' + nested("(", ")", "name", MAX_BRACKETS) + '"', None),
        ('"' + nested("[", "]", "name", MAX_BRACKETS) + '"', None),
        ('"' + nested("!(", ")", "name", MAX_BRACKETS // 2) + '"', None),
        ('"{{ ' + nested("(", ")", "record.id", MAX_BRACKETS) + ' }}"', None),
        ('"' + nested("{% for i in [1] %}", "{% endfor %}", "{{ loop.index }}", MAX_BLOCKS) + '"', None),
        ('"' + nested("{% if 1 %}", "{% endif %}", "x", MAX_BLOCKS) + '"', None),
        ('"' + nested("{% for i in [1] %}{% if 1 %}", "{% endif %}{% endfor %}", "x", MAX_BLOCKS // 2) + '"', None),
        ("{value: " + nested("[", "]", "", MAX_DEPTH - 7) + "}", None),
    ],
)
def test_nesting_within_the_limits_compiles_and_runs(tmp_path, value, message_at):
    plan = compile_file(write(tmp_path, with_name(value)))
    (entity,) = plan.steps[0].entities
    ((_, name),) = entity.properties
    name.evaluate(Scope({"name": "Ada"}, {"record": {"id": 1}, "config": {}, "now": 0}, jmespath_options()))


# ----------------------------------------------------------------------------------------
# Relationship types and classes

#  1-18 as SMALL, then:
# 19           email: email
# 20       - type: acme_group
# 21         class: Group
# 22         key: "acme_group:{{ record.group }}"
# 23         properties: {name: group}
# 24     relationships:
# 25       - class: HAS
# 26         from: acme_group
# 27         to: acme_user
# 28         type: TYPE
# 29     mapped_relationships:
# 30       - class: IS
# 31         source: acme_user
# 32         type: MAPPED
# 33         target:
# 34           type: TARGET
# 35           class: Person
# 36           properties:
# 37             email: email
# 38         filter_keys: [[_class, email]]
RELATED = SMALL.replace("VALUE", "name") + (
    """\
          email: email
      - type: acme_group
        class: Group
        key: "acme_group:{{ record.group }}"
        properties: {name: group}
    relationships:
      - class: HAS
        from: acme_group
        to: acme_user
        type: TYPE
    mapped_relationships:
      - class: IS
        source: acme_user
        type: MAPPED
        target:
          type: TARGET
          class: Person
          properties:
            email: email
        filter_keys: [[_class, email]]
"""
)
HINT = "use lower snake case of at least 3 characters"


def related(**values: str) -> str:
    text = RELATED
    for name, default in (
        ("TYPE", "acme_group_has_user"),
        ("MAPPED", "mapping_source_is_employee"),
        ("TARGET", "employee"),
    ):
        text = text.replace(name, values.get(name.lower(), default))
    return text


def test_an_entity_type_with_a_last_newline_is_refused(tmp_path):
    """The schema's pattern ends with '$', which also matches before a last newline."""
    text = SMALL.replace("VALUE", "name").replace("- type: acme_user", '- type: "acme_user\\n"')
    assert problem_lines(write(tmp_path, text)) == [
        "FILE:14:15: steps[0].entities[0].type: 'acme_user\\n' is not a valid entity _type: "
        f"{HINT} (did you mean 'acme_user'?)"
    ]


def test_the_relationship_base_compiles(tmp_path):
    plan = compile_file(write(tmp_path, related()))
    assert plan.steps[0].relationships[0].type == "acme_group_has_user"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"type": '"Acme-Group HAS user"'},
            [
                "FILE:28:15: steps[0].relationships[0].type: 'Acme-Group HAS user' is not a valid relationship "
                f"_type: {HINT} (did you mean 'acme_group_has_user'?)"
            ],
        ),
        (
            {"type": '"acme_group_has_user\\n"'},
            [
                "FILE:28:15: steps[0].relationships[0].type: 'acme_group_has_user\\n' is not a valid relationship "
                f"_type: {HINT} (did you mean 'acme_group_has_user'?)"
            ],
        ),
        (
            {"type": '"x"'},
            [f"FILE:28:15: steps[0].relationships[0].type: 'x' is not a valid relationship _type: {HINT}"],
        ),
        (
            {"type": "'{{ record.type }}'"},
            [
                "FILE:28:15: steps[0].relationships[0].type: '{{ record.type }}' is not a valid relationship "
                f"_type: {HINT} (did you mean 'record_type'?)"
            ],
        ),
        (
            {"mapped": "Mapping Source IS Employee"},
            [
                "FILE:32:15: steps[0].mapped_relationships[0].type: 'Mapping Source IS Employee' is not a valid "
                f"relationship _type: {HINT} (did you mean 'mapping_source_is_employee'?)"
            ],
        ),
        (
            {"target": "Employee!"},
            [
                "FILE:34:17: steps[0].mapped_relationships[0].target.type: 'Employee!' is not a valid target "
                f"_type: {HINT} (did you mean 'employee'?)"
            ],
        ),
    ],
)
def test_relationship_types_must_look_like_types(tmp_path, values, expected):
    assert problem_lines(write(tmp_path, related(**values))) == expected


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "- class: HAS",
            "- class: has",
            "FILE:25:16: steps[0].relationships[0].class: 'has' is not an allowed value; did you mean 'HAS'?",
        ),
        (
            "- class: HAS",
            "- class: H-A-S",
            "FILE:25:16: steps[0].relationships[0].class: 'H-A-S' is not an allowed value; did you mean 'HAS'?",
        ),
        (
            "- class: HAS",
            '- class: "HAS\\t"',
            "FILE:25:16: steps[0].relationships[0].class: 'HAS\\t' is not an allowed value; did you mean 'HAS'?",
        ),
        ("- class: IS", "- class: '*'", "FILE:30:16: steps[0].mapped_relationships[0].class: '*' is not one of: "),
    ],
)
def test_relationship_classes_with_odd_characters_are_located(tmp_path, old, new, expected):
    (line,) = problem_lines(write(tmp_path, related().replace(old, new)))
    assert line.startswith(expected)
    assert "\n" not in line


# ----------------------------------------------------------------------------------------
# offline.cassette: recorded only inside the mapping's repository

OFFLINE = SMALL.replace("VALUE", "name") + "offline:\n  cassette: CASSETTE\n"


def test_recording_the_bundled_cassette_outside_the_repository_is_refused(etl, tmp_path):
    mappings = tmp_path / "checkout" / "mappings"
    mappings.mkdir(parents=True)
    mapping = write(mappings, OFFLINE.replace("CASSETTE", "../../elsewhere/run.yaml"))
    for mode in ("once", "all"):
        result = etl("run", mapping, "--offline", "--record-mode", mode, "--output", tmp_path / "out")
        assert result.exit_code == EXIT_USAGE
        assert f"--record-mode {mode} --offline would write the mapping's cassette" in result.stderr
        assert "outside the mapping's repository" in result.stderr
    assert not (tmp_path / "elsewhere").exists()


def test_where_the_bundled_cassette_may_be_recorded(tmp_path):
    repository = tmp_path / "repo"
    (repository / ".git").mkdir(parents=True)
    (repository / "mappings").mkdir()
    (tmp_path / "outside").mkdir()
    (repository / "link").symlink_to(tmp_path / "outside")

    def settings(cassette: str, *, given: Path | None = None, mode: str | None = "once"):
        path = write(repository / "mappings", OFFLINE.replace("CASSETTE", cassette))
        return replay_settings(compile_file(path), given, mode, True)

    # Inside the repository, beside or above the mapping: as the bundled mappings do.
    assert settings("../cassettes/run.yaml")[:2] == ((repository / "cassettes" / "run.yaml").resolve(), "once")
    # Out of it, directly or through a symbolic link: refused.
    for outside in ("../../outside/run.yaml", "../link/run.yaml", str(tmp_path / "run.yaml")):
        with pytest.raises(UsageError, match="outside the mapping's repository") as info:
            settings(outside)
        assert info.value.exit_code == EXIT_USAGE
    # Replaying reads from anywhere, and --cassette PATH records where the user says.
    assert settings("../../outside/run.yaml", mode=None)[1] == "none"
    chosen = tmp_path / "chosen.yaml"
    assert settings("../../outside/run.yaml", given=chosen)[:2] == (chosen, "once")


def test_without_a_repository_the_mapping_directory_is_the_bound(tmp_path):
    (tmp_path / "loose").mkdir()
    mapping = write(tmp_path / "loose", OFFLINE.replace("CASSETTE", "cassettes/run.yaml"))
    assert replay_settings(compile_file(mapping), None, "once", True)[1] == "once"
    write(tmp_path / "loose", OFFLINE.replace("CASSETTE", "../run.yaml"))
    with pytest.raises(UsageError, match="outside the mapping's repository"):
        replay_settings(compile_file(mapping), None, "once", True)


# ----------------------------------------------------------------------------------------
# Template errors are located wherever templates are allowed

EVERYWHERE = """\
version: 1
integration: {id: acme, name: Acme}
config:
  token: {secret: true}
  team: {default: ops}
  size: {type: integer, default: 10}
tags:
  Team: "{{ config.team | bad_tag }}"
sources:
  api:
    base_url: "https://{{ config.team | bad_base_url }}.example.com"
    auth: {kind: bearer, token: "{{ config.token | bad_auth }}"}
    headers:
      X-Team: "{{ config.team | bad_source_header }}"
    params:
      team: "{{ config.team | bad_source_param }}"
    validate:
      path: "/me/{{ config.team | bad_validate }}"
  keyed:
    base_url: https://keyed.example.com
    auth: {kind: api_key, name: X-Key, value: "{{ config.token | bad_api_key }}"}
steps:
  - id: teams
    request:
      method: POST
      path: "/teams/{{ config.team | bad_path }}"
      params: {q: "{{ config.team | bad_param }}"}
      headers: {X-Q: "{{ config.team | bad_header }}"}
      body: {filter: {names: ["{{ config.team | bad_body }}"]}}
    pagination: {kind: offset, limit: "{{ config.size | bad_size }}"}
    records: teams
    entities:
      - type: acme_team
        class: Team
        key: "acme_team:{{ record.id | bad_key }}"
        properties:
          name: "{{ record.name | bad_property }}"
          title: {template: "{{ record.title | bad_explicit }}"}
          bio: |-
            {{ record.bio
               | bad_block }}
        tags:
          Owner: "{{ record.owner | bad_entity_tag }}"
  - id: users
    depends_on: [teams]
    request:
      source: keyed
      graphql:
        query: "query { users { id team } }"
        variables: {team: "{{ config.team | bad_graphql }}"}
    records: data.users
    entities:
      - type: acme_user
        class: User
        key: "acme_user:{{ record.id }}"
        properties:
          email: email
          name: name
    relationships:
      - class: HAS
        from: {type: acme_team, key: "acme_team:{{ record.team | bad_endpoint }}"}
        to: acme_user
        properties:
          since: "{{ record.since | bad_relationship_property }}"
    mapped_relationships:
      - class: IS
        source: acme_user
        target:
          type: employee
          class: Person
          properties:
            name: name
            email: "{{ record.email | bad_target }}"
        properties:
          role: "{{ record.role | bad_mapped_property }}"
        filter_keys: [[_class, name]]
"""
WHERE = {
    "bad_tag": "tags.Team",
    "bad_base_url": "sources.api.base_url",
    "bad_auth": "sources.api.auth.token",
    "bad_source_header": "sources.api.headers.X-Team",
    "bad_source_param": "sources.api.params.team",
    "bad_validate": "sources.api.validate.path",
    "bad_api_key": "sources.keyed.auth.value",
    "bad_path": "steps[0].request.path",
    "bad_param": "steps[0].request.params.q",
    "bad_header": "steps[0].request.headers.X-Q",
    "bad_body": "steps[0].request.body.filter.names[0]",
    "bad_size": "steps[0].pagination.limit",
    "bad_key": "steps[0].entities[0].key",
    "bad_property": "steps[0].entities[0].properties.name",
    "bad_explicit": "steps[0].entities[0].properties.title.template",
    "bad_block": "steps[0].entities[0].properties.bio",
    "bad_entity_tag": "steps[0].entities[0].tags.Owner",
    "bad_graphql": "steps[1].request.graphql.variables.team",
    "bad_endpoint": "steps[1].relationships[0].from.key",
    "bad_relationship_property": "steps[1].relationships[0].properties.since",
    "bad_target": "steps[1].mapped_relationships[0].target.properties.email",
    "bad_mapped_property": "steps[1].mapped_relationships[0].properties.role",
}


def test_template_errors_are_located_wherever_templates_are_allowed(tmp_path):
    lines = problem_lines(write(tmp_path, EVERYWHERE))
    expected = []
    for name, path in WHERE.items():
        (match,) = list(re.finditer(rf"\b{name}\b", EVERYWHERE))
        line = EVERYWHERE.count("\n", 0, match.start()) + 1
        column = match.start() - EVERYWHERE.rfind("\n", 0, match.start())
        expected.append(f"FILE:{line}:{column}: {path}: unknown filter '{name}'")
    assert [line.split(" (did you mean")[0] for line in lines] == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            '"{{ record.name | upperr }}"',
            f"FILE:18:{QUOTED + 17}: {NAME}: unknown filter 'upperr' (did you mean 'upper'?)",
        ),
        (
            '"{% if record.id is od %}x{% endif %}"',
            f"FILE:18:{QUOTED + 19}: {NAME}: unknown test 'od' (did you mean 'odd'?)",
        ),
        (
            '"{% filter lowr %}x{% endfilter %}"',
            f"FILE:18:{QUOTED + 10}: {NAME}: unknown filter 'lowr' (did you mean 'lower'?)",
        ),
        (
            '"{% if record.id %}{{ record.name | nosuch }}{% endif %}"',
            f"FILE:18:{QUOTED + 35}: {NAME}: unknown filter 'nosuch'",
        ),
        (
            '"{% macro m() %}x{% endmacro %}{{ m() }}"',
            f"FILE:18:{QUOTED + 3}: {NAME}: '{{% macro %}}' is not available in mapping templates "
            "(no macros, call blocks, include, import, extends or blocks)",
        ),
        (
            "\"{% include 'other.txt' %}\"",
            f"FILE:18:{QUOTED + 3}: {NAME}: '{{% include %}}' is not available in mapping templates "
            "(no macros, call blocks, include, import, extends or blocks)",
        ),
        ("''", f"FILE:18:{QUOTED}: {NAME}: JMESPath syntax error: Invalid JMESPath expression: cannot be empty."),
        (
            '"' + "a" * 100_001 + '"',
            f"FILE:18:{QUOTED + 100_000}: {NAME}: the expression is longer than 100,000 characters",
        ),
        (
            '"items[' + "9" * 5_000 + ']"',
            f"FILE:18:{QUOTED}: {NAME}: JMESPath syntax error: Exceeds the limit (4300 digits) for integer string "
            "conversion: value has 5000 digits; use sys.set_int_max_str_digits() to increase the limit",
        ),
    ],
)
def test_more_template_and_expression_errors_are_located(tmp_path, value, expected):
    assert problem_lines(write(tmp_path, with_name(value))) == [expected]


def test_etl_validate_locates_an_unknown_filter(etl, tmp_path):
    path = write(tmp_path, with_name('"{{ record.name | upperr }}"'))
    result = etl("validate", path)
    assert result.exit_code == EXIT_INVALID_MAPPING
    assert f"{path}:18:{QUOTED + 17}: {NAME}: unknown filter 'upperr' (did you mean 'upper'?)" in result.stderr


def test_a_long_template_with_a_syntax_error_is_located_quickly(tmp_path):
    """Locating a syntax error parses prefixes of the template: a long template is searched
    by halves, and finds what the scan of a short one finds; a very long one is located at
    the start of the error's line."""
    error = "{{ record.id + }}"
    with pytest.raises(ExpressionError) as short:
        compiled(error)
    filler = "{{ record.id }} " * 400
    (line,) = problem_lines(write(tmp_path, with_name(f'"{filler}{error}"')))
    assert line == f"FILE:18:{QUOTED + len(filler) + short.value.offset}: {NAME}: {short.value}"
    filler = "{{ record.id }} " * 10_000
    (line,) = problem_lines(write(tmp_path, with_name(f'"{filler}{error}"')))
    assert line == f"FILE:18:{QUOTED}: {NAME}: {short.value}"


def test_expression_errors_are_signals_with_offsets():
    with pytest.raises(ExpressionError) as info:
        compiled("{{ " + "(" * 100 + "1" + ")" * 100 + " }}")
    assert info.value.offset == 3 + MAX_BRACKETS
