"""Jinja templates of a mapping: the sandbox they run in, and their compile-time checks.

Templates are checked once, when the mapping is compiled (syntax, unknown variables,
undeclared config fields, each with the offset of the offending token), and compiled
by Jinja on first use.
"""

from __future__ import annotations

from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import ExpressionError, ValueProblem, did_you_mean
from .functions import split_text, to_epoch_ms


class MappingSandbox(ImmutableSandboxedEnvironment):
    """The sandbox templates run in: immutable, strict about undefined names and about
    None, and reading dict keys before attributes (so ``record.items`` is the record's
    ``items`` field, not ``dict.items``)."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict):
            if attribute in obj:
                return obj[attribute]
            return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, (dict, list)) and callable(value):
            return False
        return super().is_safe_attribute(obj, attr, value)


def _finalize(value: Any) -> Any:
    if value is None:
        raise ValueProblem("a template expression is null (use `| default('', true)` to allow that)")
    return value


def _epoch_ms_filter(value: Any) -> int | None:
    return to_epoch_ms(value)


def make_environment() -> MappingSandbox:
    env = MappingSandbox(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        finalize=_finalize,
        keep_trailing_newline=False,
    )
    env.filters.update(epoch_ms=_epoch_ms_filter, split=split_text)
    # Templates get data helpers only: no lipsum, cycler, joiner or namespace objects.
    env.globals = {"range": env.globals["range"], "dict": dict}
    return env


ENVIRONMENT = make_environment()

# What templates see: the record, config values, the for_each item, the fan-out parent
# entity, and the run's clock in epoch milliseconds.
TEMPLATE_VARIABLES = frozenset({"record", "config", "item", "parent", "now"})
_WHERE_AVAILABLE = {
    "record": "templates of sources and instance tags see only config",
    "parent": "only steps with for_each (fan-out) have a parent entity",
    "item": "only rules with for_each have an item",
    "paging": "only requests of paginated steps see paging",
}
# Request templates also see ``paging`` (offset, limit, page, size, cursor of the next page).
REQUEST_VARIABLES = frozenset({"config", "parent", "now", "paging"})


def compile_template(text: str, *, variables: frozenset[str], config_fields: frozenset[str]) -> LazyTemplate:
    """Check a template (syntax, unknown variables, undeclared config fields); the Jinja
    template itself is compiled on first use (plain substitutions rarely need it)."""
    try:
        tree = ENVIRONMENT.parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise ExpressionError(f"Jinja syntax error: {exc.message}", _syntax_error_offset(text, exc.message)) from None
    tokens = _tokens(text)
    for name in sorted(jinja2.meta.find_undeclared_variables(tree)):
        if name not in variables and name not in ENVIRONMENT.globals:
            if name in _WHERE_AVAILABLE:
                raise ExpressionError(
                    f"'{name}' is not available here: {_WHERE_AVAILABLE[name]}", _variable_offset(tokens, name)
                )
            raise ExpressionError(
                f"unknown variable '{name}'{known_names(name, variables)}", _variable_offset(tokens, name)
            )
    for node in tree.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem)):
        assert isinstance(node, (jinja2.nodes.Getattr, jinja2.nodes.Getitem))  # find_all's type is their base
        target = node.node
        if isinstance(target, jinja2.nodes.Name) and target.name == "config":
            field = node.attr if isinstance(node, jinja2.nodes.Getattr) else getattr(node.arg, "value", None)
            if isinstance(field, str) and field not in config_fields:
                raise ExpressionError(
                    f"unknown config field '{field}'{known_names(field, config_fields)}",
                    _config_field_offset(tokens, field),
                )
    return LazyTemplate(text)


class LazyTemplate:
    """A checked template, compiled to Python by Jinja the first time it is rendered."""

    __slots__ = ("text", "_template")

    def __init__(self, text: str):
        self.text = text
        self._template: jinja2.Template | None = None

    def render(self, variables: dict) -> str:
        if self._template is None:
            self._template = ENVIRONMENT.from_string(self.text)
        return self._template.render(variables)


def _tokens(text: str) -> list[tuple[int, str, str]]:
    """``(offset, type, value)`` of every lexer token (whitespace included)."""
    out, offset = [], 0
    for _, kind, value in ENVIRONMENT.lex(text):
        start = text.find(value, offset) if value else offset
        out.append((start, kind, value))
        offset = start + len(value)
    return out


def _variable_offset(tokens, name: str) -> int:
    previous = ""
    for offset, kind, value in tokens:
        if kind == "name" and value == name and previous != ".":
            return offset
        if kind != "whitespace":
            previous = value
    return 0


def _config_field_offset(tokens, field: str) -> int:
    significant = [(o, k, v) for o, k, v in tokens if k != "whitespace"]
    for index in range(2, len(significant)):
        offset, kind, value = significant[index]
        after_config = significant[index - 2][2] == "config" and significant[index - 1][2] in (".", "[")
        if after_config and value.strip("'\"") == field and kind in ("name", "string"):
            return offset + (1 if kind == "string" else 0)
    return 0


def _syntax_error_offset(text: str, message: str | None) -> int:
    """Where a syntax error is: the end of the shortest prefix that fails the same way
    (Jinja itself only reports the line)."""
    for end in range(1, len(text) + 1):
        try:
            ENVIRONMENT.parse(text[:end])
        except jinja2.TemplateSyntaxError as exc:
            if exc.message == message:
                return end - 1
    return len(text)


def known_names(name: str, options: frozenset[str]) -> str:
    """A did-you-mean hint, or the names that are known when none is close."""
    hint = did_you_mean(name, options)
    if hint:
        return hint
    return f"; known: {', '.join(sorted(options))}" if options else "; none are declared"
