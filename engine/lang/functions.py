"""The engine's JMESPath functions, and the value helpers Jinja filters share with them.

``to_epoch_ms``, ``now_ms``, ``days_ago_ms``, ``split``, ``trim``... are added to JMESPath's
standard functions by :class:`EngineFunctions`; one instance per run carries the config
values and the run's clock (``--as-of``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any

import jmespath
from jmespath import functions

from ..errors import LimitExceeded, ValueProblem
from .jmespath_compiler import CompiledExpref
from .limits import MAX_ITEMS, MAX_STRING_LENGTH, MAX_VALUE_SIZE, check_join, check_replace, text_size


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
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


DAY_MS = 86_400_000


def split_text(value: str | None, separator: str) -> list[str] | None:
    """Split and trim, dropping empty parts. null stays null."""
    if value is None:
        return None
    if separator and value.count(separator) >= MAX_ITEMS:
        raise LimitExceeded(f"split() would give more than {MAX_ITEMS:,} parts")
    return [part.strip() for part in value.split(separator) if part.strip()]


def _strings(function: str, values: list) -> list:
    for value in values:
        if value.__class__ is not str:
            raise ValueProblem(f"{function}(): an array must hold only strings, not {value!r}")
    return values


def unique(values: list) -> list:
    """The first occurrence of each item (equal as Python compares them), in linear time."""
    seen: set = set()
    out = []
    for v in values:
        key = _hashable(v)
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out


_LIST, _OBJECT = object(), object()  # tags keeping a frozen list apart from a frozen object


def _hashable(value: Any) -> Any:
    """``value`` with its lists and objects frozen: two values are equal exactly when their
    frozen forms are (1 == 1.0 == true, as Python has it), and the frozen form hashes."""
    if isinstance(value, list):
        return (_LIST, tuple(_hashable(v) for v in value))
    if isinstance(value, dict):
        return (_OBJECT, frozenset((k, _hashable(v)) for k, v in value.items()))
    return value


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
        if not expref.amplifies:
            return [search(value, functions) for value in values]
        out, total = [], 0
        for value in values:
            result = search(value, functions)
            total += len(result) if result.__class__ is str else text_size(result, MAX_VALUE_SIZE - total)
            if total > MAX_VALUE_SIZE:
                raise LimitExceeded(f"map() would build more than {MAX_VALUE_SIZE:,} characters")
            out.append(result)
        return out

    @functions.signature({"types": []})
    def _func_to_string(self, value):
        """jmespath's to_string, without a JSON encoder for the usual text and integers, and
        refusing a list or object whose text would be too long before encoding it."""
        cls = value.__class__
        if cls is str:
            return value
        if cls is int:
            return str(value)
        if text_size(value, MAX_STRING_LENGTH) > MAX_STRING_LENGTH:
            raise LimitExceeded(f"to_string() would give more than {MAX_STRING_LENGTH:,} characters")
        return super()._func_to_string(value)

    @functions.signature({"types": ["string"]}, {"types": ["array-string"]})
    def _func_join(self, separator, values):
        """jmespath's join, refusing a result beyond the string limit before building it."""
        check_join(separator, values, "the result of join()")
        return separator.join(values)

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
        if value is None:
            return None
        check_replace(value, old, new)
        return value.replace(old, new)

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
        gone = {_hashable(v) for v in removed or ()}
        return [v for v in values if _hashable(v) not in gone]

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


FUNCTION_NAMES = frozenset(name.removeprefix("_func_") for name in dir(EngineFunctions) if name.startswith("_func_"))

BUILTIN_FUNCTION_NAMES = frozenset(
    name.removeprefix("_func_") for name in dir(functions.Functions) if name.startswith("_func_")
)
