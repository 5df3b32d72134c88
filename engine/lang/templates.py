"""Jinja templates of a mapping: the sandbox they run in, and their compile-time checks.

Templates are checked once, when the mapping is compiled (syntax, nesting, unknown
variables, filters and tests, undeclared config fields, each with the offset of the
offending token), and compiled by Jinja on first use.

The sandbox bounds what a template can build and how long it can loop (``limits.py``):
operators, calls and the filters that can build big values check their results (and,
where one step can build a huge value, their arguments); loops and the items of
``map``/``select``-like filters are counted against the render's budget, by a rewrite of the
template's tree before Jinja generates its code.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from itertools import chain, islice
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes as nodes
import jinja2.parser
from jinja2.environment import TemplateExpression
from jinja2.exceptions import FilterArgumentError
from jinja2.filters import make_attrgetter
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.utils import pass_context
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

from ..errors import ExpressionError, LimitExceeded, ValueProblem, did_you_mean
from .functions import (
    base64_to_text,
    digest,
    encode_base64,
    format_time,
    hmac_digest,
    percent_encode,
    split_text,
    to_epoch_ms,
)
from .limits import (
    FILTERED_ITEM_STEPS,
    MAX_BLOCKS,
    MAX_BRACKETS,
    MAX_EXPRESSION_DEPTH,
    MAX_INT_BITS,
    MAX_INT_DIGITS,
    MAX_ITEMS,
    MAX_RECURSION,
    MAX_STRING_LENGTH,
    MAX_TEMPLATE_STEPS,
    MAX_VALUE_SIZE,
    CountedIterator,
    charge_built,
    check_concatenation,
    check_format_spec,
    check_join,
    check_percent,
    check_power,
    check_repeat,
    check_replace,
    check_value_size,
    check_width,
    counted,
    current_budget,
    end_render,
    start_render,
    text_size,
    too_long,
    too_many_items,
    too_many_steps,
    would_be_too_long,
)

_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})


class MappingSandbox(ImmutableSandboxedEnvironment):
    """The sandbox templates run in: immutable, strict about undefined names and about
    None, and reading dict keys before attributes (so ``record.items`` is the record's
    ``items`` field, not ``dict.items``). Operators, calls and ``str.format`` are bounded."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

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

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            check_repeat(left, right)
        elif operator == "**":
            check_power(left, right)
        elif operator == "%":
            if isinstance(left, str):
                check_percent(left, right)
        else:
            check_concatenation(left, right)
        result = self.binop_table[operator](left, right)
        if operator == "%" and isinstance(result, str):
            if len(result) > MAX_STRING_LENGTH:
                raise too_long("the result of '%'")
            charge_built(len(result))
        elif result.__class__ is int and result.bit_length() > MAX_INT_BITS:
            raise LimitExceeded(f"the result of '{operator}' is a number of more than {MAX_INT_DIGITS:,} digits")
        return result

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """A call from a template: counted as a step; the string and integer methods that can
        build a huge value in one step are checked first, and every result after."""
        budget = current_budget()
        if budget is not None:
            budget.steps += 1
            if budget.steps > MAX_TEMPLATE_STEPS:
                raise too_many_steps()
            if isinstance(obj, LoopContext) and args:  # loop(children) in a recursive loop
                cost = getattr(obj._iterator, "cost", 1)
                args = (CountedIterator(args[0], cost, budget), *args[1:])
                budget.depth += 1
                try:
                    if budget.depth > MAX_RECURSION:
                        raise LimitExceeded(f"a recursive loop went more than {MAX_RECURSION} levels deep")
                    return super().call(context, obj, *args, **kwargs)
                finally:
                    budget.depth -= 1
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, (str, bytes, int)):
            args = _check_method(owner, getattr(obj, "__name__", ""), args, kwargs)
        return _checked_result(super().call(context, obj, *args, **kwargs), "the result of a call")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format`` and ``format_map`` with the sandbox's formatter, bounded: no width
        beyond the string limit, no field whose text is too long."""
        if not isinstance(value, (types.MethodType, types.BuiltinMethodType)) or value.__name__ not in (
            "format",
            "format_map",
        ):
            return None
        text = value.__self__
        if not isinstance(text, str):
            return None
        is_format_map = value.__name__ == "format_map"
        formatter: SandboxedFormatter = (
            _BoundedEscapeFormatter(self, escape=text.escape) if isinstance(text, Markup) else _BoundedFormatter(self)
        )
        text_type = type(text)

        def bounded_format(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                kwargs, args = args[0], ()
            result = text_type(formatter.vformat(text, args, kwargs))
            charge_built(len(result))
            return result

        return bounded_format


class _BoundedFormatter(SandboxedFormatter):
    """The sandbox's ``str.format``, refusing widths and results beyond the string limit."""

    def vformat(self, format_string: str, args: Any, kwargs: Any) -> str:
        self.total = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> Any:
        check_format_spec(format_spec, "the result of format()")
        if not isinstance(value, (str, int, float)) and text_size(value, MAX_STRING_LENGTH) > MAX_STRING_LENGTH:
            raise would_be_too_long("the result of format()")
        result = super().format_field(value, format_spec)
        self.total = getattr(self, "total", 0) + len(result)
        if self.total > MAX_STRING_LENGTH:
            raise would_be_too_long("the result of format()")
        return result


class _BoundedEscapeFormatter(_BoundedFormatter, SandboxedEscapeFormatter):
    pass


def _check_method(owner: Any, name: str, args: tuple, kwargs: dict) -> tuple:
    """Refuse a call of a string or integer method that would build a value beyond the
    limits; returns the arguments to call it with (an iterable to join, materialized)."""
    what = f"the result of {name}()"
    if isinstance(owner, (str, bytes)):
        if name in _WIDTH_METHODS:
            check_width(args[0] if args else kwargs.get("width"), what)
        elif name == "expandtabs":
            size = args[0] if args else kwargs.get("tabsize", 8)
            tab = "\t" if isinstance(owner, str) else b"\t"
            if isinstance(size, int) and size > 0 and len(owner) + owner.count(tab) * size > MAX_STRING_LENGTH:  # type: ignore[arg-type]
                raise would_be_too_long(what)
        elif name == "replace" and len(args) >= 2 and all(isinstance(a, (str, bytes)) for a in args[:2]):
            check_replace(owner, args[0], args[1], args[2] if len(args) > 2 else kwargs.get("count", -1), what)  # type: ignore[arg-type]
        elif name == "join" and args:
            items = _materialize(args[0], f"{name}()")
            check_join(owner, items, what)  # type: ignore[arg-type]
            args = (items, *args[1:])
        elif name == "translate" and args and isinstance(args[0], dict):
            longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
            if longest > 1 and len(owner) * longest > MAX_STRING_LENGTH:
                raise would_be_too_long(what)
    elif name == "to_bytes" and not isinstance(owner, bool):
        length = args[0] if args else kwargs.get("length", 1)
        if isinstance(length, int) and length > MAX_STRING_LENGTH:
            raise would_be_too_long(what)
    return args


def _materialize(iterable: Any, what: str) -> list | tuple:
    """An iterable as a list of at most MAX_ITEMS items."""
    if isinstance(iterable, (list, tuple)):
        items = iterable
    else:
        items = list(islice(iter(iterable), MAX_ITEMS + 1))
    if len(items) > MAX_ITEMS:
        raise LimitExceeded(f"{what} of more than {MAX_ITEMS:,} items")
    return items


def _checked_result(value: Any, what: str) -> Any:
    cls = value.__class__
    if cls is str or cls is bytes or isinstance(value, (str, bytes)):
        if len(value) > MAX_STRING_LENGTH:
            raise too_long(what)
        charge_built(len(value))
    elif cls is list or cls is tuple:
        if len(value) > MAX_ITEMS:
            raise LimitExceeded(f"{what} has more than {MAX_ITEMS:,} items")
        charge_built(len(value))
    elif cls is int and value.bit_length() > MAX_INT_BITS:
        raise LimitExceeded(f"{what} is a number of more than {MAX_INT_DIGITS:,} digits")
    return value


_CONTAINERS = frozenset({list, tuple, dict})


def _finalize(value: Any) -> Any:
    if value is None:
        raise ValueProblem("a template expression is null (use `| default('', true)` to allow that)")
    if value.__class__ is bytes:
        raise ValueProblem("a template expression gives bytes: encode them (`| base64_encode`, or a digest's 'hex')")
    if value.__class__ in _CONTAINERS:  # about to become text: refuse one whose text would be huge
        check_value_size(value, "a list or object in the text is", MAX_STRING_LENGTH)
    return value


def _epoch_ms_filter(value: Any) -> int | None:
    return to_epoch_ms(value)


def _signing_filters() -> dict[str, Callable[..., Any]]:
    """Digests, HMAC, base64, percent-encoding and time formats (``functions.py``), as filters:
    ``{{ text | hmac_sha256(config.secret) }}``, ``{{ request.body | sha256 }}``,
    ``{{ request.time | format_time('http_date') }}``."""

    def digest_filter(algorithm: str) -> Callable[..., Any]:
        def digest_of(value: Any, encoding: str = "hex") -> Any:
            return digest(value, algorithm, encoding)

        return digest_of

    def hmac_filter(algorithm: str) -> Callable[..., Any]:
        def hmac_of(value: Any, key: Any, encoding: str = "hex", key_encoding: str = "text") -> Any:
            return hmac_digest(value, key, algorithm, encoding, key_encoding)

        return hmac_of

    def base64_encode(value: Any, urlsafe: bool = False, pad: bool = True) -> str | None:
        return encode_base64(value, urlsafe, pad)

    def base64_decode(value: Any, output: str = "text") -> Any:
        return base64_to_text(value, output)

    def percent_encode_filter(value: Any, safe: str = "") -> str | None:
        return percent_encode(value, safe)

    def format_time_filter(value: Any, fmt: str = "iso8601") -> Any:
        return format_time(value, fmt)

    return {
        **{name: digest_filter(name) for name in ("md5", "sha1", "sha256", "sha512")},
        **{f"hmac_{name}": hmac_filter(name) for name in ("sha1", "sha256", "sha512")},
        "base64_encode": base64_encode,
        "base64_decode": base64_decode,
        "percent_encode": percent_encode_filter,
        "format_time": format_time_filter,
    }


def _bounded_range(*args: int) -> range:
    numbers = range(*args)
    try:
        length = len(numbers)
    except OverflowError:
        length = MAX_ITEMS + 1
    if length > MAX_ITEMS:
        raise LimitExceeded(f"range() of more than {MAX_ITEMS:,} items")
    return numbers


# ----------------------------------------------------------------------------------------
# Bounded filters


def _text_filter(original: Callable[..., Any], name: str) -> Callable[..., Any]:
    """A filter that makes text of its value: a list or object whose text would be too long
    is refused before it is converted, and so is a result beyond the limit."""
    what = f"the result of {name}"
    pass_arg = getattr(original, "jinja_pass_arg", None)
    if name in _SIZE_PRESERVING:  # the result is no longer than the value's text: checking the value is enough

        def lean_text_filter(value: Any, *args: Any, **kwargs: Any) -> Any:
            if value.__class__ is not str:
                check_value_size(value, f"the value given to {name} is", MAX_STRING_LENGTH)
            return original(value, *args, **kwargs)

        return lean_text_filter
    if pass_arg is None:

        def text_filter(value: Any, *args: Any, **kwargs: Any) -> Any:
            if value.__class__ is not str:
                check_value_size(value, f"the value given to {name} is", MAX_STRING_LENGTH)
            return _checked_result(original(value, *args, **kwargs), what)

        return text_filter

    def text_filter_with(first: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        if value.__class__ is not str:
            check_value_size(value, f"the value given to {name} is", MAX_STRING_LENGTH)
        return _checked_result(original(first, value, *args, **kwargs), what)

    text_filter_with.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
    return text_filter_with


def _counting_filter(original: Callable[..., Any]) -> Callable[..., Any]:
    """``map``, ``select``...: each item they go through is a step of the render."""

    @pass_context
    def counting_filter(context: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        return counted(original(context, value, *args, **kwargs), FILTERED_ITEM_STEPS)

    return counting_filter


def _make_filters(env: MappingSandbox) -> dict[str, Callable[..., Any]]:
    builtin = env.filters
    center, indent, wordwrap = builtin["center"], builtin["indent"], builtin["wordwrap"]
    replace, join, batch, slice_ = builtin["replace"], builtin["join"], builtin["batch"], builtin["slice"]

    def bounded_center(value: Any, width: int = 80) -> str:
        check_width(width, "the result of center")
        return center(value, width)

    def bounded_indent(value: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
        text = str(value)
        prefix = width if isinstance(width, int) else len(str(width))
        if len(text) + (text.count("\n") + 1) * max(prefix, 0) > MAX_STRING_LENGTH:
            raise would_be_too_long("the result of indent")
        return indent(text, width, first, blank)

    def bounded_wordwrap(
        environment: Any,
        value: Any,
        width: int = 79,
        break_long_words: bool = True,
        wrapstring: str | None = None,
        break_on_hyphens: bool = True,
    ) -> str:
        text = str(value)
        wrap = environment.newline_sequence if wrapstring is None else str(wrapstring)
        lines = len(text) + 1  # a line holds a character at least, or half the width
        if isinstance(width, int) and width > 1:
            lines = min(lines, 2 * len(text) // width + text.count("\n") + 2)
        if len(text) + lines * len(wrap) > MAX_STRING_LENGTH:
            raise would_be_too_long("the result of wordwrap")
        return wordwrap(environment, text, width, break_long_words, wrapstring, break_on_hyphens)

    bounded_wordwrap.jinja_pass_arg = wordwrap.jinja_pass_arg  # type: ignore[attr-defined]

    def bounded_format(value: Any, *args: Any, **kwargs: Any) -> str:
        if args and kwargs:
            raise FilterArgumentError("can't handle positional and keyword arguments at the same time")
        text = str(value)
        arguments = kwargs or args
        check_percent(text, arguments, "the result of format")
        return text % arguments

    def bounded_replace(eval_ctx: Any, value: Any, old: Any, new: Any, count: int | None = None) -> str:
        check_replace(str(value), str(old), str(new), -1 if count is None else count, "the result of replace")
        return replace(eval_ctx, value, old, new, count)

    bounded_replace.jinja_pass_arg = replace.jinja_pass_arg  # type: ignore[attr-defined]

    def bounded_join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
        if attribute is not None:
            value = map(make_attrgetter(eval_ctx.environment, attribute), value)
        items = _materialize(counted(value), "join")
        check_join(str(d), items, "the result of join")
        return join(eval_ctx, items, d)

    bounded_join.jinja_pass_arg = join.jinja_pass_arg  # type: ignore[attr-defined]

    def bounded_batch(value: Any, linecount: int, fill_with: Any = None) -> Any:
        _check_padding(linecount, fill_with, "batch")
        return counted(batch(value, linecount, fill_with))

    def bounded_slice(value: Any, slices: int, fill_with: Any = None) -> Any:
        _check_padding(slices, fill_with, "slice")
        return counted(slice_(value, slices, fill_with))

    def bounded_sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
        if attribute is not None:
            iterable = map(make_attrgetter(environment, attribute), iterable)
        items = _materialize(counted(iterable), "sum")
        if isinstance(start, (list, tuple)) and all(type(item) is type(start) for item in items):
            # Lists are concatenated once, not pairwise (which takes quadratic time).
            if len(start) + sum(len(item) for item in items) > MAX_ITEMS:
                raise too_many_items("the result of sum")
            return type(start)(chain(start, *items))
        return sum(items, start)

    bounded_sum.jinja_pass_arg = builtin["sum"].jinja_pass_arg  # type: ignore[attr-defined]

    def bounded_list(value: Any) -> list:
        return _checked_result(list(counted(value)), "the result of list")

    filters: dict[str, Callable[..., Any]] = {
        "center": bounded_center,
        "indent": bounded_indent,
        "wordwrap": bounded_wordwrap,
        "format": bounded_format,
        "replace": bounded_replace,
        "join": bounded_join,
        "batch": bounded_batch,
        "slice": bounded_slice,
        "sum": bounded_sum,
        "list": bounded_list,
    }
    for name in ("center", "indent", "wordwrap", "format", "replace"):
        filters[name] = _text_filter(filters[name], name)
    for name in _TEXT_FILTERS:
        filters[name] = _text_filter(builtin[name], name)
    for name in _COUNTING_FILTERS:
        filters[name] = _counting_filter(builtin[name])
    return filters


# Filters that make text of their value (beyond those bounded above).
_TEXT_FILTERS = (
    "capitalize",
    "e",
    "escape",
    "forceescape",
    "lower",
    "pprint",
    "string",
    "striptags",
    "title",
    "tojson",
    "trim",
    "truncate",
    "upper",
    "urlencode",
    "urlize",
    "wordcount",
    "xmlattr",
)
# Text filters whose result is about as long as the text of their value (and take no context).
_SIZE_PRESERVING = frozenset({"capitalize", "lower", "string", "striptags", "title", "trim", "upper", "wordcount"})
# Filters that call another filter or test (or look up an attribute) per item.
_COUNTING_FILTERS = ("map", "select", "reject", "selectattr", "rejectattr")


def _check_padding(count: Any, fill_with: Any, name: str) -> None:
    if not isinstance(count, int):
        return
    if count > MAX_ITEMS:
        raise too_many_items(f"the result of {name}")
    if fill_with is not None and count * text_size(fill_with, MAX_VALUE_SIZE) > MAX_VALUE_SIZE:
        raise LimitExceeded(f"the result of {name} would be longer than {MAX_VALUE_SIZE:,} characters as text")


# -- the filters the tree rewrite inserts (names no template can write) -------------------

_LOOP = "etl-loop"
_OUTPUT = "etl-output"
_CONCAT = "etl-concat"


@pass_context
def _loop_filter(context: Any, iterable: Any, cost: int) -> Any:
    """A loop's iterable: each iteration costs ``cost`` steps (the size of the loop's body)."""
    return counted(iterable, cost)


@pass_context
def _output_filter(context: Any, value: Any) -> str:
    """Text a block captures (``{% set x %}``, ``{% filter %}``, a recursive loop): counted as built."""
    text = value if value.__class__ is str else str(_finalize(value))
    charge_built(len(text))
    return text


def _concat_filter(values: list) -> str:
    """``a ~ b ~ c``: refused as soon as the text would be too long."""
    parts = []
    total = 0
    for value in values:
        if value.__class__ is not str:
            check_value_size(value, "a value joined with '~' is", MAX_STRING_LENGTH)
            value = str(value)
        total += len(value)
        if total > MAX_STRING_LENGTH:
            raise would_be_too_long("the result of '~'")
        parts.append(value)
    charge_built(total)
    return "".join(parts)


def make_environment() -> MappingSandbox:
    env = MappingSandbox(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        finalize=_finalize,
        keep_trailing_newline=False,
    )
    env.filters.update(_make_filters(env))
    env.filters.update(epoch_ms=_epoch_ms_filter, split=split_text)
    env.filters.update(_signing_filters())
    env.filters.update({_LOOP: _loop_filter, _OUTPUT: _output_filter, _CONCAT: _concat_filter})
    # Templates get data helpers only: no lipsum, cycler, joiner or namespace objects.
    env.globals = {"range": _bounded_range, "dict": dict}
    return env


ENVIRONMENT = make_environment()
FILTER_NAMES = frozenset(name for name in ENVIRONMENT.filters if name not in (_LOOP, _OUTPUT, _CONCAT))
TEST_NAMES = frozenset(ENVIRONMENT.tests)


# ----------------------------------------------------------------------------------------
# The tree rewrite: loops, captured text and '~' counted


class _Guard(NodeTransformer):
    """Rewrites a parsed template so that its render is bounded: a loop's iterable charges
    the loop body's size per iteration, text captured by a block is counted, and ``~``
    checks the length of its result as it goes. Records whether the render needs a budget."""

    def __init__(self) -> None:
        self.capturing = 0
        self.budgeted = False

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.budgeted = True
        cost = 1 + _size(node.body) + _size(node.else_)
        self.capturing += node.recursive
        self.generic_visit(node)  # in place
        self.capturing -= node.recursive
        node.iter = nodes.Filter(node.iter, _LOOP, [nodes.Const(cost)], [], None, None, lineno=node.lineno)
        return node

    def _capture(self, node: nodes.Node) -> nodes.Node:
        self.budgeted = True
        self.capturing += 1
        self.generic_visit(node)
        self.capturing -= 1
        return node

    visit_AssignBlock = _capture
    visit_FilterBlock = _capture

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        if self.capturing:
            node.nodes = [nodes.Filter(child, _OUTPUT, [], [], None, None, lineno=child.lineno) for child in node.nodes]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.budgeted = True
        self.generic_visit(node)
        return nodes.Filter(nodes.List(node.nodes, lineno=node.lineno), _CONCAT, [], [], None, None, lineno=node.lineno)

    def visit_Call(self, node: nodes.Node) -> nodes.Node:
        self.budgeted = True
        return self.generic_visit(node)

    def visit_Filter(self, node: nodes.Filter) -> nodes.Node:
        if node.name not in _UNBUDGETED_FILTERS:
            self.budgeted = True
        return self.generic_visit(node)

    def _operator(self, node: nodes.Node) -> nodes.Node:
        self.budgeted = True
        return self.generic_visit(node)

    visit_Mul = visit_Add = visit_Pow = visit_Mod = _operator


# Filters that neither loop nor build much: a template using only these needs no budget.
_UNBUDGETED_FILTERS = frozenset(
    {"abs", "capitalize", "count", "d", "default", "epoch_ms", "first", "float", "int", "last", "length"}
    | {"lower", "round", "split", "string", "title", "trim", "upper"}
)


def _size(body: list) -> int:
    """The nodes of a loop body, without the bodies of the loops inside it (which count
    their own iterations)."""
    total = 0
    pending = list(body)
    while pending:
        node = pending.pop()
        total += 1
        if isinstance(node, nodes.For):
            pending.extend(n for n in (node.target, node.iter, node.test) if n is not None)
        else:
            pending.extend(node.iter_child_nodes())
    return total


def guard(tree: nodes.Template) -> bool:
    """Rewrite ``tree`` in place (see :class:`_Guard`); True when its render needs a budget."""
    rewrite = _Guard()
    rewrite.visit(tree)
    return rewrite.budgeted


# ----------------------------------------------------------------------------------------
# Compile-time checks

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


def compile_template(text: str, *, variables: frozenset[str], config_fields: frozenset[str]) -> LazyTemplate:
    """Check a template (syntax, nesting, unknown variables, filters and tests, undeclared
    config fields); the Jinja template itself is compiled on first use (plain
    substitutions rarely need it)."""
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
    return LazyTemplate(text)


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


class LazyTemplate:
    """A checked template, compiled to Python by Jinja the first time it is rendered."""

    __slots__ = ("text", "_template", "_budgeted")

    def __init__(self, text: str):
        self.text = text
        self._template: jinja2.Template | None = None
        self._budgeted = False

    def _compile(self) -> jinja2.Template:
        tree = ENVIRONMENT.parse(self.text)
        self._budgeted = guard(tree)
        self._template = ENVIRONMENT.from_string(tree)
        return self._template

    def render(self, variables: dict) -> str:
        template = self._template
        if template is None:
            template = self._compile()
        if not self._budgeted:
            result = template.render(variables)
        else:
            token = start_render()
            try:
                result = _render_bounded(template, variables)
            finally:
                end_render(token)
        if len(result) > MAX_STRING_LENGTH:
            raise too_long("template result")
        return result


def _render_bounded(template: jinja2.Template, variables: dict) -> str:
    """Render, refusing as soon as the text is too long (a loop's output grows as it runs)."""
    pieces = []
    total = 0
    for piece in template.root_render_func(template.new_context(variables)):
        total += len(piece)
        if total > MAX_STRING_LENGTH:
            raise too_long("template result")
        pieces.append(piece)
    return "".join(pieces)


def compile_expression(source: str) -> tuple[TemplateExpression, bool]:
    """Jinja's ``compile_expression(source, undefined_to_none=False)``, with the tree
    rewritten by :func:`guard`; and whether evaluating it needs a budget."""
    parser = jinja2.parser.Parser(ENVIRONMENT, source, state="variable")
    expression = parser.parse_expression()
    if not parser.stream.eos:
        raise jinja2.TemplateSyntaxError("chunk after expression", parser.stream.current.lineno, None, None)
    expression.set_environment(ENVIRONMENT)
    tree = nodes.Template([nodes.Assign(nodes.Name("result", "store"), expression, lineno=1)], lineno=1)
    budgeted = guard(tree)
    return TemplateExpression(ENVIRONMENT.from_string(tree), False), budgeted


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
