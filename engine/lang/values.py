"""Values in a mapping: JMESPath expressions, Jinja templates and literals.

Everything here is compiled once, when the mapping is compiled (``pipeline/compile.py``),
and then evaluated per record with a :class:`Scope`. A value in YAML is written as:

* a string - a JMESPath expression evaluated against the record (``certificate.common_name``);
* a string containing ``{{`` - a Jinja template rendered to a string (``"acme_user:{{ record.id }}"``);
* ``{jmespath: ...}``, ``{template: ...}`` or ``{value: ...}`` - the explicit forms;
* a number, boolean or null - that literal.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jinja2
import jinja2.nodes
import jmespath
import jmespath.exceptions
import jmespath.lexer

from ..errors import ExpressionError, ValueProblem
from .functions import BUILTIN_FUNCTION_NAMES, FUNCTION_NAMES, EngineFunctions
from .jmespath_compiler import compile_ast
from .limits import (
    MAX_BRACKETS,
    MAX_EXPRESSION_DEPTH,
    MAX_EXPRESSION_LENGTH,
    MAX_STRING_LENGTH,
    MAX_VALUE_SIZE,
    check_value_size,
    end_render,
    start_render,
    too_long,
)
from .template_checks import known_names
from .template_environment import ENVIRONMENT
from .templates import LazyTemplate, compile_expression, compile_template


def compile_jmespath(text: str, config_fields: frozenset[str] | None = None) -> jmespath.parser.ParsedResult:
    """Compile, or raise ExpressionError with the offending offset (0-based). Unknown
    functions, ``config('name')`` of an undeclared field, and nesting deeper than the
    limits are errors too."""
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(
            f"the expression is longer than {MAX_EXPRESSION_LENGTH:,} characters", MAX_EXPRESSION_LENGTH
        )
    _check_nesting(text)
    try:
        compiled = jmespath.compile(text)
    except RecursionError:
        raise ExpressionError(f"the expression is nested more than {MAX_EXPRESSION_DEPTH} levels deep", 0) from None
    except jmespath.exceptions.LexerError as exc:
        raise ExpressionError(f"JMESPath syntax error: {exc.message}", exc.lex_position) from None
    except jmespath.exceptions.IncompleteExpressionError:
        raise ExpressionError("JMESPath syntax error: unexpected end of expression", len(text)) from None
    except jmespath.exceptions.ParseError as exc:
        raise ExpressionError(
            f"JMESPath syntax error: {exc.msg} (at {exc.token_type} {exc.token_value!r})",
            exc.lex_position,
        ) from None
    except ValueError as exc:  # an empty expression, a number too long to read...
        raise ExpressionError(f"JMESPath syntax error: {exc}", 0) from None
    _check_depth(compiled.parsed)
    calls = _function_calls(text)
    for name, start, _ in calls:
        if name not in FUNCTION_NAMES and name not in BUILTIN_FUNCTION_NAMES:
            raise ExpressionError(f"unknown JMESPath function '{name}()'", start)
    if config_fields is not None:
        for name, _, argument in calls:
            if name == "config" and argument is not None and argument["value"] not in config_fields:
                field = argument["value"]
                raise ExpressionError(
                    f"unknown config field '{field}'{known_names(field, config_fields)}", argument["start"] + 1
                )  # inside the quotes
    return compiled


_OPENING = frozenset({"lparen", "lbracket", "lbrace", "filter"})
_CLOSING = frozenset({"rparen", "rbracket", "rbrace"})
_PREFIX = frozenset({"not", "expref"})


def _check_nesting(text: str) -> None:
    """Brackets (and runs of ``!`` or ``&``) nested deeper than MAX_BRACKETS: jmespath's
    parser recurses once per level, so they are refused before it runs, located."""
    depth = run = 0
    too_deep = None
    try:
        for token in jmespath.lexer.Lexer().tokenize(text):
            kind = token["type"]
            if kind in _OPENING:
                depth += 1
            elif kind in _CLOSING:
                depth = max(depth - 1, 0)
            run = run + 1 if kind in _PREFIX else 0
            if depth + run > MAX_BRACKETS:
                too_deep = token["start"]
                break
    except (jmespath.exceptions.JMESPathError, ValueError, RecursionError):
        return  # not an expression: compiling it says why
    if too_deep is not None:
        raise ExpressionError(f"nested more than {MAX_BRACKETS} levels deep (brackets, '!' or '&')", too_deep)


def _check_depth(parsed: dict) -> None:
    """A syntax tree deeper than MAX_EXPRESSION_DEPTH (a chain of 5,000 '.', or a literal
    nested as deep), refused: compiling and evaluating it would recurse as deep."""
    pending: list[tuple[Any, int]] = [(parsed, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_EXPRESSION_DEPTH:
            raise ExpressionError(
                f"the expression is nested more than {MAX_EXPRESSION_DEPTH} levels deep "
                "(a chain of fields, pipes or operators, or a deep literal?)",
                0,
            )
        if isinstance(node, dict) and "type" in node and "children" in node:
            pending.extend((child, depth + 1) for child in node["children"])
            if node["type"] == "literal":
                pending.append((node["value"], depth + 1))
        elif isinstance(node, dict):
            pending.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            pending.extend((child, depth + 1) for child in node)


def _call_offset(text: str, name: str) -> int:
    return next((start for called, start, _ in _function_calls(text) if called == name), 0)


def _function_calls(text: str) -> list[tuple[str, int, dict | None]]:
    """``(name, offset, first argument token if it is a literal)`` of every function call."""
    tokens = list(jmespath.lexer.Lexer().tokenize(text))
    calls = []
    for index, token in enumerate(tokens[:-1]):
        if token["type"] == "unquoted_identifier" and tokens[index + 1]["type"] == "lparen":
            argument = tokens[index + 2] if index + 2 < len(tokens) else None
            literal_argument = argument if argument and argument["type"] == "literal" else None
            calls.append((token["value"], token["start"], literal_argument))
    return calls


class Scope(NamedTuple):
    """What a value is evaluated against: ``root`` for JMESPath, ``variables`` for Jinja."""

    root: Any
    variables: dict[str, Any]
    options: jmespath.Options


_FIELD_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True)
class Value:
    """A compiled value of a mapping. ``source`` is what the author wrote.

    ``evaluate(scope)`` computes it; a JMESPath value also offers ``search(root, functions)``,
    the compiled expression itself, which hot loops call directly, and a plain field path
    (``certificate.common_name``) its names, which generated code turns into dict lookups.
    """

    kind: str  # 'jmespath' | 'template' | 'literal'
    source: Any
    evaluate: Callable[[Scope], Any]
    search: Callable[[Any, Any], Any] | None = None
    field_path: tuple[str, ...] | None = None


def literal(value: Any) -> Value:
    return Value("literal", value, lambda scope: value)


def jmespath_value(text: str, config_fields: frozenset[str] | None = None) -> Value:
    field_path = None
    if _FIELD_PATH.match(text):
        # Plain field paths skip the JMESPath machinery: same semantics, far faster.
        compile_jmespath(text)
        field_path = tuple(text.split("."))
        search = _field_path(field_path)
    else:
        parsed = compile_jmespath(text, config_fields).parsed
        try:
            search = compile_ast(parsed, EngineFunctions.FUNCTION_TABLE)
        except (jmespath.exceptions.ArityError, jmespath.exceptions.VariadictArityError) as exc:
            raise ExpressionError(f"JMESPath: {exc}", _call_offset(text, exc.function_name)) from None
    return Value("jmespath", text, lambda scope: search(scope.root, scope.options.custom_functions), search, field_path)


def _field_path(parts: tuple[str, ...]) -> Callable[[Any, Any], Any]:
    if len(parts) == 1:
        (name,) = parts

        def get_field(value: Any, functions: Any) -> Any:
            return value.get(name) if value.__class__ is dict or isinstance(value, dict) else None

        return get_field
    if len(parts) == 2:
        first, second = parts

        def get_pair(value: Any, functions: Any) -> Any:
            if value.__class__ is not dict and not isinstance(value, dict):
                return None
            value = value.get(first)
            return value.get(second) if value.__class__ is dict or isinstance(value, dict) else None

        return get_pair

    def get_path(value: Any, functions: Any) -> Any:
        for part in parts:
            if value.__class__ is not dict and not isinstance(value, dict):
                return None
            value = value.get(part)
        return value

    return get_path


_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{-?(?P<expr>(?:(?!\{\{|\}\}).)*?)-?\}\}\s*$", re.DOTALL)


def _plain_substitution(text: str) -> list | None:
    """For templates that only put fields into text ("acme:{{ record.a.b }}"): the pieces,
    text or (variable, attribute...) paths. None for anything else (filters, tests...)."""
    body = ENVIRONMENT.parse(text).body
    if len(body) != 1 or not isinstance(body[0], jinja2.nodes.Output):
        return None
    pieces: list = []
    for node in body[0].nodes:
        if isinstance(node, jinja2.nodes.TemplateData):
            pieces.append(node.data)
            continue
        path = []
        while isinstance(node, jinja2.nodes.Getattr):
            path.append(node.attr)
            node = node.node
        if not isinstance(node, jinja2.nodes.Name):
            return None
        pieces.append((node.name, *reversed(path)))
    return pieces


_TEXT_TYPES = (str, int, float)


def _substitute(pieces: list, template: LazyTemplate) -> Callable[[Scope], str]:
    """Render a plain substitution without Jinja's machinery; anything unusual (a missing
    field, a non-dict on the way, a value that is not text or a number) goes to Jinja, so
    the result and the errors are Jinja's own."""

    def render(scope: Scope) -> str:
        variables = scope.variables
        out = []
        for piece in pieces:
            if piece.__class__ is str:
                out.append(piece)
                continue
            value = variables.get(piece[0])
            for attribute in piece[1:]:
                if value.__class__ is not dict or attribute not in value:
                    return template.render(variables)
                value = value[attribute]
            if value.__class__ not in _TEXT_TYPES:
                return template.render(variables)
            out.append(value if value.__class__ is str else str(value))
        result = "".join(out)
        if len(result) > MAX_STRING_LENGTH:
            raise too_long("template result")
        return result

    return render


def template_value(text: str, *, variables: frozenset[str], config_fields: frozenset[str]) -> Value:
    """A template. One made of a single ``{{ expression }}`` keeps the expression's type
    (a number stays a number, null stays null); anything else renders to a string."""
    template = compile_template(text, variables=variables, config_fields=config_fields)
    single = _SINGLE_EXPRESSION.match(text)
    if single is None:
        fast = _plain_substitution(text)
        if fast is not None:
            return Value("template", text, _substitute(fast, template))
        return Value("template", text, lambda scope: template.render(scope.variables))
    source = single.group("expr")
    compiled: list = []  # (expression, whether it needs a budget), compiled by Jinja on first use

    def evaluate(scope: Scope) -> Any:
        if not compiled:
            compiled.extend(compile_expression(source))
        if compiled[1]:
            token = start_render()
            try:
                result = compiled[0](scope.variables)
            finally:
                end_render(token)
        else:
            result = compiled[0](scope.variables)
        cls = result.__class__
        if cls is str:
            if len(result) > MAX_STRING_LENGTH:
                raise too_long("template result")
        elif cls is list or cls is dict or cls is tuple:
            check_value_size(result, "template result", MAX_VALUE_SIZE)
        elif isinstance(result, jinja2.Undefined):
            result._fail_with_undefined_error()
        elif cls is bytes:  # a digest's or base64_decode's raw bytes: no value of a mapping holds those
            raise ValueProblem("the template gives bytes: encode them (`| base64_encode`, or a digest's 'hex')")
        return result

    return Value("template", text, evaluate)


def is_truthy(value: Any) -> bool:
    """JMESPath truthiness: null, false and empty strings, lists and objects are false."""
    if value is None or value is False:
        return False
    if isinstance(value, (str, list, dict)):
        return len(value) > 0
    return True
