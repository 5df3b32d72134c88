"""The filters and globals the engine gives templates, all bounded (``limits.py``).

Jinja's filters that can build big values are replaced by ones that check their arguments
or results; ``map``, ``select`` and the like count each item as a step of the render. The
engine adds ``epoch_ms``, ``split`` and the helpers of signed requests (digests, HMAC,
base64, percent-encoding, time formats: ``functions.py``), and a bounded ``range``.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain
from typing import Any

from jinja2.exceptions import FilterArgumentError
from jinja2.filters import make_attrgetter
from jinja2.utils import pass_context

from ..errors import LimitExceeded
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
    MAX_ITEMS,
    MAX_STRING_LENGTH,
    MAX_VALUE_SIZE,
    check_join,
    check_percent,
    check_replace,
    check_value_size,
    check_width,
    counted,
    text_size,
    too_many_items,
    would_be_too_long,
)
from .template_sandbox import MappingSandbox, checked_result, materialize


def engine_filters(env: MappingSandbox) -> dict[str, Callable[..., Any]]:
    """The filters the engine adds to ``env`` or replaces in it (Jinja's own, bounded; and its own)."""
    return {**_bounded_builtins(env), "epoch_ms": _epoch_ms_filter, "split": split_text, **_signing_filters()}


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


def bounded_range(*args: int) -> range:
    """The ``range`` global: refused beyond MAX_ITEMS numbers."""
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
            return checked_result(original(value, *args, **kwargs), what)

        return text_filter

    def text_filter_with(first: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        if value.__class__ is not str:
            check_value_size(value, f"the value given to {name} is", MAX_STRING_LENGTH)
        return checked_result(original(first, value, *args, **kwargs), what)

    text_filter_with.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
    return text_filter_with


def _counting_filter(original: Callable[..., Any]) -> Callable[..., Any]:
    """``map``, ``select``...: each item they go through is a step of the render."""

    @pass_context
    def counting_filter(context: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        return counted(original(context, value, *args, **kwargs), FILTERED_ITEM_STEPS)

    return counting_filter


def _bounded_builtins(env: MappingSandbox) -> dict[str, Callable[..., Any]]:
    """Jinja's filters that can build big values or go through many items, bounded."""
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
        items = materialize(counted(value), "join")
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
        items = materialize(counted(iterable), "sum")
        if isinstance(start, (list, tuple)) and all(type(item) is type(start) for item in items):
            # Lists are concatenated once, not pairwise (which takes quadratic time).
            if len(start) + sum(len(item) for item in items) > MAX_ITEMS:
                raise too_many_items("the result of sum")
            return type(start)(chain(start, *items))
        return sum(items, start)

    bounded_sum.jinja_pass_arg = builtin["sum"].jinja_pass_arg  # type: ignore[attr-defined]

    def bounded_list(value: Any) -> list:
        return checked_result(list(counted(value)), "the result of list")

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
