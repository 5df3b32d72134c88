"""The sandbox mapping templates run in, and the checks of what one step of a template builds.

:class:`MappingSandbox` is Jinja's immutable sandbox, stricter (dict keys before attributes,
no methods of dicts and lists) and bounded (``limits.py``): operators, calls and
``str.format`` check their results, and, where one step can build a huge value, their
arguments. The filters the engine adds are in ``template_filters.py``; the environment built
from both, in ``template_environment.py``.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from itertools import islice
from typing import Any

from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
from markupsafe import Markup

from ..errors import LimitExceeded, ValueProblem
from .limits import (
    MAX_INT_BITS,
    MAX_INT_DIGITS,
    MAX_ITEMS,
    MAX_RECURSION,
    MAX_STRING_LENGTH,
    MAX_TEMPLATE_STEPS,
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
    current_budget,
    text_size,
    too_long,
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
        return checked_result(super().call(context, obj, *args, **kwargs), "the result of a call")

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
            items = materialize(args[0], f"{name}()")
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


def materialize(iterable: Any, what: str) -> list | tuple:
    """An iterable as a list of at most MAX_ITEMS items."""
    if isinstance(iterable, (list, tuple)):
        items = iterable
    else:
        items = list(islice(iter(iterable), MAX_ITEMS + 1))
    if len(items) > MAX_ITEMS:
        raise LimitExceeded(f"{what} of more than {MAX_ITEMS:,} items")
    return items


def checked_result(value: Any, what: str) -> Any:
    """``value`` (``what`` names it), refused if it is beyond the limits; text and lists are
    counted as built."""
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


def finalize(value: Any) -> Any:
    """Jinja's ``finalize``: a value a template outputs, refused if it is null, bytes, or a
    list or object whose text would be too long."""
    if value is None:
        raise ValueProblem("a template expression is null (use `| default('', true)` to allow that)")
    if value.__class__ is bytes:
        raise ValueProblem("a template expression gives bytes: encode them (`| base64_encode`, or a digest's 'hex')")
    if value.__class__ in _CONTAINERS:  # about to become text: refuse one whose text would be huge
        check_value_size(value, "a list or object in the text is", MAX_STRING_LENGTH)
    return value
