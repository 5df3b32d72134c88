"""The checks of a template's text, made once when the mapping is compiled: syntax, the
tags a mapping cannot use, nesting, unknown variables, filters and tests, undeclared config
and request fields; each refused with the offset of the offending token.

Here too are what each kind of template sees (``TEMPLATE_VARIABLES``, ``REQUEST_VARIABLES``,
``SIGN_VARIABLES``), and the questions later stages ask of a checked template's text
(:func:`uses_variable`, :func:`check_fields`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import suppress

import jinja2
import jinja2.meta
import jinja2.nodes as nodes

from ..errors import ExpressionError, did_you_mean
from .limits import MAX_BLOCKS, MAX_BRACKETS, MAX_EXPRESSION_DEPTH
from .template_environment import ENVIRONMENT, FILTER_NAMES, TEST_NAMES

# What templates see: the record, config values, the for_each item, the fan-out parent
# entity, and the run's clock in epoch milliseconds.
TEMPLATE_VARIABLES = frozenset({"record", "config", "item", "parent", "now"})
_WHERE_AVAILABLE = {
    "record": (
        "templates of sources and instance tags see only config (a source's base_url, headers and params "
        "also see account)"
    ),
    "parent": "only steps with for_each (fan-out) have a parent entity",
    "item": "only rules with for_each have an item",
    "paging": "only requests of paginated steps see paging",
    "request": "only a source's sign templates see the request being signed",
    "ancestors": "only steps with for_each (fan-out) have ancestors",
    "account": (
        "only steps with accounts, fan-outs over entities fetched for an account, and their sources' "
        "base_url, headers and params have an account"
    ),
}
# Request templates also see ``paging`` (offset, limit, page, size, cursor of the next page).
REQUEST_VARIABLES = frozenset({"config", "parent", "now", "paging"})
# A source's ``sign`` templates see the request being signed (``pipeline/signing.py``).
SIGN_VARIABLES = frozenset({"config", "request"})
SIGNED_REQUEST_FIELDS = frozenset(
    {"method", "url", "scheme", "host", "path", "query", "target", "params", "headers", "body", "content_type"}
    | {"time", "nonce", "uuid"}
)

# Tags that define or load other templates: none of that exists for a mapping's templates
# (and a macro calling itself is an endless loop no budget can see coming).
_UNAVAILABLE_TAGS = frozenset({"macro", "call", "include", "import", "from", "extends", "block"})
_BLOCK_TAGS = frozenset({"for", "if", "with", "filter", "autoescape", "macro", "call", "block"})


def check_template(text: str, *, variables: frozenset[str], config_fields: frozenset[str]) -> None:
    """Check a template (syntax, nesting, unknown variables, filters and tests, undeclared
    config fields): an ExpressionError, located, at the first problem."""
    with suppress(jinja2.TemplateSyntaxError):  # a text that does not lex: parsing reports it, located
        _check_tags_and_nesting(_offset_tokens(text))
    try:
        tree = ENVIRONMENT.parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise ExpressionError(f"Jinja syntax error: {exc.message}", _syntax_error_offset(text, exc)) from None
    except RecursionError:
        raise ExpressionError(f"the template is nested more than {MAX_EXPRESSION_DEPTH} levels deep", 0) from None
    _check_depth(tree, text)
    tokens = list(_offset_tokens(text))
    for used in tree.find_all((nodes.Filter, nodes.Test)):
        assert isinstance(used, (nodes.Filter, nodes.Test))
        kind, known = ("filter", FILTER_NAMES) if isinstance(used, nodes.Filter) else ("test", TEST_NAMES)
        if used.name not in known:
            raise ExpressionError(
                f"unknown {kind} '{used.name}'{did_you_mean(used.name, known)}", _name_offset(tokens, used.name, kind)
            )
    try:
        undeclared = jinja2.meta.find_undeclared_variables(tree)
    except jinja2.TemplateAssertionError as exc:
        raise ExpressionError(f"Jinja: {exc.message or exc}", _line_offset(text, exc.lineno)) from None
    for name in sorted(undeclared):
        if name not in variables and name not in ENVIRONMENT.globals:
            if name in _WHERE_AVAILABLE:
                raise ExpressionError(
                    f"'{name}' is not available here: {_WHERE_AVAILABLE[name]}", _variable_offset(tokens, name)
                )
            raise ExpressionError(
                f"unknown variable '{name}'{known_names(name, variables)}", _variable_offset(tokens, name)
            )
    known_fields = {"config": ("config field", config_fields), "request": ("request field", SIGNED_REQUEST_FIELDS)}
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, (nodes.Getattr, nodes.Getitem))  # find_all's type is their base
        target = node.node
        if isinstance(target, nodes.Name) and target.name in known_fields and target.name in variables:
            what, fields = known_fields[target.name]
            field = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
            if isinstance(field, str) and field not in fields:
                raise ExpressionError(
                    f"unknown {what} '{field}'{known_names(field, fields)}",
                    _field_offset(tokens, target.name, field),
                )


def uses_variable(text: str, name: str) -> bool:
    """Whether the template ``text`` (already checked) reads the variable ``name``."""
    if name not in text:
        return False
    try:
        return name in jinja2.meta.find_undeclared_variables(ENVIRONMENT.parse(text))
    except (jinja2.TemplateError, RecursionError):  # reported where the template is compiled
        return False


def check_fields(text: str, variable: str, fields: frozenset[str], what: str) -> None:
    """The fields of ``variable`` that the template ``text`` (already checked) names with a
    constant (``variable.name``, ``variable['name']``) must be ``fields`` (``what`` names
    them): an ExpressionError at the first one that is not."""
    if variable not in text:
        return
    try:
        tree = ENVIRONMENT.parse(text)
    except (jinja2.TemplateError, RecursionError):  # reported where the template is compiled
        return
    if variable not in jinja2.meta.find_undeclared_variables(tree):
        return  # a name of the template's own ({% set %}, a loop variable)
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, (nodes.Getattr, nodes.Getitem))  # find_all's type is their base
        if not (isinstance(node.node, nodes.Name) and node.node.name == variable):
            continue
        field = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
        if isinstance(field, str) and field not in fields:
            raise ExpressionError(
                f"unknown {what} '{field}'{known_names(field, fields)}",
                _field_offset(list(_offset_tokens(text)), variable, field),
            )


def _check_tags_and_nesting(tokens: Iterable[tuple[int, str, str]]) -> None:
    """Tags a mapping's templates cannot use, and nesting deep enough to exhaust Jinja's
    parser or Python's compiler, refused with the offset of the offending token (reading
    the tokens only as far as that)."""
    brackets = blocks = 0
    previous = ""
    setting: int | None = None  # the offset of a `set` not known yet to be a block or an assignment
    for offset, kind, value in tokens:
        if kind == "whitespace":
            continue
        if kind == "operator" and value in "([{":
            brackets += 1
            if brackets > MAX_BRACKETS:
                raise ExpressionError(f"brackets nested more than {MAX_BRACKETS} deep", offset)
        elif kind == "operator" and value in ")]}":
            brackets = max(brackets - 1, 0)
        if setting is not None and (kind == "block_end" or (kind == "operator" and value in ("=", "|"))):
            if value != "=":  # {% set x %}...{% endset %}, or {% set x | f %}: a block
                blocks += 1
                if blocks > MAX_BLOCKS:
                    raise ExpressionError(f"'{{% set %}}' blocks nested more than {MAX_BLOCKS} deep", setting)
            setting = None
        if kind == "name" and previous == "block_begin":
            if value in _UNAVAILABLE_TAGS:
                raise ExpressionError(
                    f"'{{% {value} %}}' is not available in mapping templates "
                    "(no macros, call blocks, include, import, extends or blocks)",
                    offset,
                )
            if value in _BLOCK_TAGS:
                blocks += 1
                if blocks > MAX_BLOCKS:
                    raise ExpressionError(f"'{{% {value} %}}' blocks nested more than {MAX_BLOCKS} deep", offset)
            elif value == "set":
                setting = offset
            elif value.startswith("end"):
                blocks = max(blocks - 1, 0)
        previous = kind


def _check_depth(tree: nodes.Template, text: str) -> None:
    """A syntax tree deeper than MAX_EXPRESSION_DEPTH (a chain of operators, filters or
    attributes), refused at the line of its deepest node (Jinja keeps no columns)."""
    pending: list[tuple[nodes.Node, int]] = [(tree, 0)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_EXPRESSION_DEPTH:
            raise ExpressionError(
                f"the template is nested more than {MAX_EXPRESSION_DEPTH} levels deep "
                "(a chain of operators, filters or attributes?)",
                _line_offset(text, node.lineno),
            )
        pending.extend((child, depth + 1) for child in node.iter_child_nodes())


def _line_offset(text: str, lineno: int) -> int:
    offset = 0
    for _ in range(max(lineno - 1, 0)):
        found = text.find("\n", offset)
        if found < 0:
            break
        offset = found + 1
    return offset


def _name_offset(tokens: list[tuple[int, str, str]], name: str, kind: str) -> int:
    """Where filter (after ``|`` or ``{% filter``) or test (after ``is``) ``name`` is used."""
    before = ("|", "filter") if kind == "filter" else ("is", "not")
    significant = [(o, k, v) for o, k, v in tokens if k != "whitespace"]
    for index in range(1, len(significant)):
        offset, token_kind, value = significant[index]
        if token_kind == "name" and value == name and significant[index - 1][2] in before:
            return offset
    return 0


def _offset_tokens(text: str) -> Iterator[tuple[int, str, str]]:
    """``(offset, type, value)`` of every lexer token (whitespace included)."""
    offset = 0
    for _, kind, value in ENVIRONMENT.lex(text):
        start = text.find(value, offset) if value else offset
        yield start, kind, value
        offset = start + len(value)


def _variable_offset(tokens, name: str) -> int:
    previous = ""
    for offset, kind, value in tokens:
        if kind == "name" and value == name and previous != ".":
            return offset
        if kind != "whitespace":
            previous = value
    return 0


def _field_offset(tokens, variable: str, field: str) -> int:
    """Where ``variable.field`` (or ``variable['field']``) names the field."""
    significant = [(o, k, v) for o, k, v in tokens if k != "whitespace"]
    for index in range(2, len(significant)):
        offset, kind, value = significant[index]
        after_config = significant[index - 2][2] == variable and significant[index - 1][2] in (".", "[")
        if after_config and value.strip("'\"") == field and kind in ("name", "string"):
            return offset + (1 if kind == "string" else 0)
    return 0


# Locating a syntax error parses prefixes of the template (each parse takes time in
# proportion to the prefix): every prefix of a short one, a binary search in a longer one;
# a very long one is located at the start of the error's line.
_SCANNED_PREFIXES = 256
_SEARCHED_LENGTH = 8_192


def _syntax_error_offset(text: str, error: jinja2.TemplateSyntaxError) -> int:
    """Where a syntax error is: the end of the shortest prefix that fails the same way
    (Jinja itself only reports the line)."""

    def fails_the_same_way(end: int) -> bool:
        try:
            ENVIRONMENT.parse(text[:end])
        except jinja2.TemplateSyntaxError as exc:
            return exc.message == error.message
        except RecursionError:
            return False
        return False

    if len(text) <= _SCANNED_PREFIXES:
        return next((end - 1 for end in range(1, len(text) + 1) if fails_the_same_way(end)), len(text))
    if len(text) > _SEARCHED_LENGTH:
        return _line_offset(text, error.lineno)
    low, high = 1, len(text)  # the whole text fails the same way
    while low < high:
        middle = (low + high) // 2
        if fails_the_same_way(middle):
            high = middle
        else:
            low = middle + 1
    return high - 1


def known_names(name: str, options: frozenset[str]) -> str:
    """A did-you-mean hint, or the names that are known when none is close."""
    hint = did_you_mean(name, options)
    if hint:
        return hint
    return f"; known: {', '.join(sorted(options))}" if options else "; none are declared"
