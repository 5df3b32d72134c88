"""Values in a mapping: JMESPath expressions, Jinja templates and literals.

Everything here is compiled once, when the mapping is loaded (see ``plan.py``), and
then evaluated per record with a :class:`Scope`. A value in YAML is written as:

* a string - a JMESPath expression evaluated against the record (``certificate.common_name``);
* a string containing ``{{`` - a Jinja template rendered to a string (``"acme_user:{{ record.id }}"``);
* ``{jmespath: ...}``, ``{template: ...}`` or ``{value: ...}`` - the explicit forms;
* a number, boolean or null - that literal.
"""

from __future__ import annotations

import re
import time
from functools import lru_cache
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable, NamedTuple

import jinja2
import jinja2.meta
import jinja2.nodes
import jmespath
import jmespath.exceptions
import jmespath.lexer
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jmespath import functions

from .jmespath_compiler import CompiledExpref, compile_ast

# ----------------------------------------------------------------------------------------
# Helpers shared by JMESPath functions and Jinja filters


class ValueProblem(ValueError):
    """A helper could not convert a value (an unparsable date, say)."""


def to_epoch_ms(value: Any) -> int | None:
    """ISO-8601 / RFC 2822 / ``YYYY-MM-DD`` text -> milliseconds since the epoch (UTC).

    A date or time without an offset is taken as UTC. Numbers are assumed to be epoch
    milliseconds already and are returned unchanged; null stays null.
    """
    if value.__class__ is str and value:
        return _text_to_epoch_ms(value)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueProblem(f"cannot read a date from the boolean {value!r}")
    if isinstance(value, (int, float)):
        return int(value)
    raise ValueProblem(f"cannot read a date from {type(value).__name__} {value!r}")


@lru_cache(maxsize=4096)  # the same dates come back often (day-granular validity dates, say)
def _text_to_epoch_ms(value: str) -> int:
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            raise ValueProblem(f"cannot read a date from {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp() * 1000)


DAY_MS = 86_400_000


def split_text(value: str | None, separator: str) -> list[str] | None:
    """Split and trim, dropping empty parts. null stays null."""
    if value is None:
        return None
    return [part.strip() for part in value.split(separator) if part.strip()]


def _strings(function: str, values: list) -> list:
    for value in values:
        if value.__class__ is not str:
            raise ValueProblem(f"{function}(): an array must hold only strings, not {value!r}")
    return values


def unique(values: list) -> list:
    seen: list = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


# ----------------------------------------------------------------------------------------
# JMESPath


class EngineFunctions(functions.Functions):
    """JMESPath functions the engine adds to the standard ones. Null-safe where it helps."""

    def __init__(self, config: dict[str, Any] | None = None, now: int | None = None):
        super().__init__()
        self._config = config or {}
        self._now = int(time.time() * 1000) if now is None else now

    @functions.signature({"types": ["string", "number", "null"]})
    def _func_to_epoch_ms(self, value):
        return to_epoch_ms(value)

    @functions.signature({"types": ["expref"]}, {"types": ["array"]})
    def _func_map(self, expref, values):
        """jmespath's map, calling a compiled expression directly."""
        if not isinstance(expref, CompiledExpref):  # jmespath.py's own interpreter
            return super()._func_map(expref, values)
        search, functions = expref.fn, expref.functions
        return [search(value, functions) for value in values]

    @functions.signature({"types": []})
    def _func_to_string(self, value):
        """jmespath's to_string, without a JSON encoder for the usual text and integers."""
        cls = value.__class__
        if cls is str:
            return value
        if cls is int:
            return str(value)
        return super()._func_to_string(value)

    @functions.signature()
    def _func_now_ms(self):
        """The run's clock in epoch milliseconds (``etl run --as-of`` sets it)."""
        return self._now

    @functions.signature({"types": ["number"]})
    def _func_days_ago_ms(self, days):
        return int(self._now - days * DAY_MS)

    @functions.signature({"types": ["string", "null"]}, {"types": ["string"]})
    def _func_split(self, value, separator):
        return split_text(value, separator)

    @functions.signature({"types": ["string", "null"]})
    def _func_trim(self, value):
        return None if value is None else value.strip()

    @functions.signature({"types": ["string", "null"]})
    def _func_lower(self, value):
        return None if value is None else value.lower()

    @functions.signature({"types": ["string", "null"]})
    def _func_upper(self, value):
        return None if value is None else value.upper()

    @functions.signature({"types": ["string", "null"]}, {"types": ["string"]}, {"types": ["string"]})
    def _func_replace(self, value, old, new):
        return None if value is None else value.replace(old, new)

    @functions.signature({"types": ["string", "array", "null"]}, {"types": ["string"]})
    def _func_trim_prefix(self, value, prefix):
        """The text without ``prefix``; of an array of strings, each item's."""
        if value is None:
            return None
        if isinstance(value, list):
            return [item.removeprefix(prefix) for item in _strings("trim_prefix", value)]
        return value.removeprefix(prefix)

    @functions.signature({"types": ["string", "array", "null"]}, {"types": ["string"]})
    def _func_trim_suffix(self, value, suffix):
        """The text without ``suffix``; of an array of strings, each item's."""
        if value is None:
            return None
        if isinstance(value, list):
            return [item.removesuffix(suffix) for item in _strings("trim_suffix", value)]
        return value.removesuffix(suffix)

    @functions.signature({"types": ["array", "null"]})
    def _func_unique(self, values):
        return None if values is None else unique(values)

    @functions.signature({"types": ["array", "null"]}, {"types": ["array", "null"]})
    def _func_difference(self, values, removed):
        """The items of the first array that are not in the second, in order."""
        if values is None:
            return None
        return [v for v in values if v not in (removed or [])]

    @functions.signature({"types": [], "variadic": True})
    def _func_coalesce(self, *values):
        """The first argument that is not null (unlike ``||``, keeps false, 0 and '')."""
        return next((v for v in values if v is not None), None)

    @functions.signature({"types": ["array", "null"]}, {"types": ["string"]}, {"types": ["string"]})
    def _func_from_entries(self, items, key_field, value_field):
        """[{label: a, value: 1}] with 'label', 'value' -> {a: 1}. Skips items without a key."""
        if items is None:
            return None
        out = {}
        for item in items:
            if isinstance(item, dict) and item.get(key_field) is not None:
                out[str(item[key_field])] = item.get(value_field)
        return out

    @functions.signature({"types": ["string"]})
    def _func_config(self, name):
        """The value of the mapping's config field ``name``."""
        if name not in self._config:
            raise ValueProblem(f"config('{name}'): no such config field")
        return self._config[name]


def jmespath_options(config: dict[str, Any] | None = None, now: int | None = None) -> jmespath.Options:
    return jmespath.Options(custom_functions=EngineFunctions(config, now))


FUNCTION_NAMES = frozenset(
    name.removeprefix("_func_")
    for name in dir(EngineFunctions)
    if name.startswith("_func_")
)


def compile_jmespath(text: str, config_fields: frozenset[str] | None = None) -> jmespath.parser.ParsedResult:
    """Compile, or raise ExpressionError with the offending offset (0-based). Unknown
    functions, and ``config('name')`` of an undeclared field, are errors too."""
    try:
        compiled = jmespath.compile(text)
    except jmespath.exceptions.LexerError as exc:
        raise ExpressionError(f"JMESPath syntax error: {exc.message}", exc.lex_position) from None
    except jmespath.exceptions.IncompleteExpressionError:
        raise ExpressionError("JMESPath syntax error: unexpected end of expression", len(text)) from None
    except jmespath.exceptions.ParseError as exc:
        raise ExpressionError(
            f"JMESPath syntax error: {exc.msg} (at {exc.token_type} {exc.token_value!r})",
            exc.lex_position,
        ) from None
    calls = _function_calls(text)
    for name, start, _ in calls:
        if name not in FUNCTION_NAMES and name not in _BUILTIN_FUNCTIONS:
            raise ExpressionError(f"unknown JMESPath function '{name}()'", start)
    if config_fields is not None:
        for name, _, argument in calls:
            if name == "config" and argument is not None and argument["value"] not in config_fields:
                field = argument["value"]
                raise ExpressionError(f"unknown config field '{field}'{_close(field, config_fields)}",
                                      argument["start"] + 1)  # inside the quotes
    return compiled


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


_BUILTIN_FUNCTIONS = frozenset(
    name.removeprefix("_func_") for name in dir(functions.Functions) if name.startswith("_func_")
)


class ExpressionError(ValueError):
    """A JMESPath expression or Jinja template does not compile."""

    def __init__(self, message: str, offset: int = 0):
        super().__init__(message)
        self.offset = offset


# ----------------------------------------------------------------------------------------
# Jinja


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


def compile_template(text: str, *, variables: frozenset[str], config_fields: frozenset[str]) -> "LazyTemplate":
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
                raise ExpressionError(f"'{name}' is not available here: {_WHERE_AVAILABLE[name]}",
                                      _variable_offset(tokens, name))
            raise ExpressionError(f"unknown variable '{name}'{_close(name, variables)}",
                                  _variable_offset(tokens, name))
    for node in tree.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem)):
        target = node.node
        if isinstance(target, jinja2.nodes.Name) and target.name == "config":
            field = node.attr if isinstance(node, jinja2.nodes.Getattr) else getattr(node.arg, "value", None)
            if isinstance(field, str) and field not in config_fields:
                raise ExpressionError(f"unknown config field '{field}'{_close(field, config_fields)}",
                                      _config_field_offset(tokens, field))
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
        if value.strip("'\"") == field and kind in ("name", "string") and significant[index - 1][2] in (".", "["):
            if significant[index - 2][2] == "config":
                return offset + (1 if kind == "string" else 0)
    return 0


def _syntax_error_offset(text: str, message: str) -> int:
    """Where a syntax error is: the end of the shortest prefix that fails the same way
    (Jinja itself only reports the line)."""
    for end in range(1, len(text) + 1):
        try:
            ENVIRONMENT.parse(text[:end])
        except jinja2.TemplateSyntaxError as exc:
            if exc.message == message:
                return end - 1
    return len(text)


def _close(name: str, options: frozenset[str]) -> str:
    import difflib

    match = difflib.get_close_matches(name, sorted(options), n=1, cutoff=0.6)
    if match:
        return f" (did you mean '{match[0]}'?)"
    return f"; known: {', '.join(sorted(options))}" if options else "; none are declared"


# ----------------------------------------------------------------------------------------
# Values


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
    return Value("jmespath", text, lambda scope: search(scope.root, scope.options.custom_functions), search,
                 field_path)


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


def _substitute(pieces: list, template: "LazyTemplate") -> Callable[[Scope], str]:
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
        return "".join(out)

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
    compiled: list = []  # compiled by Jinja on first use

    def evaluate(scope: Scope) -> Any:
        if not compiled:
            compiled.append(ENVIRONMENT.compile_expression(source, undefined_to_none=False))
        result = compiled[0](**scope.variables)
        if isinstance(result, jinja2.Undefined):
            result._fail_with_undefined_error()
        return result

    return Value("template", text, evaluate)
