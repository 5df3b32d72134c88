"""The limits that keep hostile mappings cheap.

A mapping is code its author runs on someone's machine, so what its templates and
expressions can build, and how long they can loop, is bounded (docs/mapping-format.md,
"Limits"). Sizes are checked on results, and before the few operations that can build a
huge value in one step (``'a' * 10**9``, ``'x' | center(10**9)``, ``range(10**9)``), so
ordinary evaluation pays next to nothing. Each render of a template that loops or builds
has a :class:`Budget` (steps of work, characters built), kept in a context variable while it
renders. Going over a limit raises :class:`~engine.errors.LimitExceeded`, a value problem: the
record's value is left out with a warning, as for any value that fails.

How deeply expressions, templates and YAML may nest is checked when the mapping is compiled.
"""

from __future__ import annotations

import re
from contextvars import ContextVar, Token
from typing import Any

from ..errors import LimitExceeded

# -- what values may be -------------------------------------------------------------------

MAX_STRING_LENGTH = 1_000_000  # characters of a string a template or function builds
MAX_ITEMS = 100_000  # items of a list or range a template or function builds
MAX_INT_DIGITS = 4_000  # digits of a number built with * or ** (Python prints up to 4,300)
MAX_INT_BITS = MAX_INT_DIGITS * 3322 // 1000  # the same in bits (log2(10) = 3.322 bits a digit)
MAX_VALUE_SIZE = 10_000_000  # characters of the text form of a template's (or projection's) value

# -- what one render of a template may do ---------------------------------------------------

MAX_TEMPLATE_STEPS = 1_000_000  # loop iterations (each weighted by its body), filtered items, calls
FILTERED_ITEM_STEPS = 4  # an item going through map, select...: a filter call, as a loop body of a few nodes
MAX_TEMPLATE_BUILT = 10_000_000  # characters built in one render, in total
MAX_RECURSION = 50  # levels of recursive loops (``loop(children)``)

# -- how deeply mappings may nest (checked when the mapping is compiled) ----------------------

MAX_EXPRESSION_DEPTH = 64  # levels of a JMESPath expression's or a template's syntax tree
MAX_BRACKETS = 32  # nested (), [] and {} in a JMESPath expression or a template
MAX_BLOCKS = 16  # nested {% for %}, {% if %}, {% with %}... in a template
MAX_EXPRESSION_LENGTH = 100_000  # characters of one JMESPath expression (jmespath's lexer is slow on long literals)


def too_long(what: str) -> LimitExceeded:
    return LimitExceeded(f"{what} longer than {MAX_STRING_LENGTH:,} characters")


def would_be_too_long(what: str) -> LimitExceeded:
    return LimitExceeded(f"{what} would be longer than {MAX_STRING_LENGTH:,} characters")


def too_many_items(what: str) -> LimitExceeded:
    return LimitExceeded(f"{what} would have more than {MAX_ITEMS:,} items")


# ----------------------------------------------------------------------------------------
# Sizes


_NUMBER_SIZE = 24  # the text of a float, or of an ordinary integer


def text_size(value: Any, limit: int = MAX_VALUE_SIZE) -> int:
    """About how many characters ``value`` takes as text (JSON or Python's ``str``), counted
    without converting it and only until ``limit`` is passed. Shared items count every time
    they occur, as they would in the text: ``[x] * 1000`` is a thousand ``x``."""
    total = 0
    pending = [value]
    while pending:
        item = pending.pop()
        cls = item.__class__
        if cls is str or cls is bytes:
            total += len(item) + 2
        elif cls is list or cls is tuple:
            total += 2 * len(item) + 2
            pending.extend(item)
        elif cls is dict:
            total += 4 * len(item) + 2
            pending.extend(item.keys())
            pending.extend(item.values())
        elif cls is int:
            total += item.bit_length() // 3 + 2
        elif isinstance(item, (str, bytes)):
            total += len(item) + 2
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 2 * len(item) + 2
            pending.extend(item)
        elif isinstance(item, dict):
            total += 4 * len(item) + 2
            pending.extend(item.keys())
            pending.extend(item.values())
        else:
            total += _NUMBER_SIZE
        if total > limit:
            return total
    return total


def check_value_size(value: Any, what: str, limit: int = MAX_VALUE_SIZE) -> None:
    """Refuse a list or object whose text would be longer than ``limit`` characters."""
    if text_size(value, limit) > limit:
        raise LimitExceeded(f"{what} longer than {limit:,} characters as text")


def checked_length(value: Any, what: str) -> Any:
    """``value`` if it is a string, list or number within the limits; else the error."""
    cls = value.__class__
    if cls is str or cls is bytes or isinstance(value, (str, bytes)):
        if len(value) > MAX_STRING_LENGTH:
            raise too_long(what)
    elif cls is list or cls is tuple:
        if len(value) > MAX_ITEMS:
            raise LimitExceeded(f"{what} has more than {MAX_ITEMS:,} items")
    elif cls is int and value.bit_length() > MAX_INT_BITS:
        raise LimitExceeded(f"{what} is a number of more than {MAX_INT_DIGITS:,} digits")
    return value


# ----------------------------------------------------------------------------------------
# Operations that can build a huge value in one step: checked before they run


def _count(value: Any) -> int | None:
    """``value`` as a repeat count (an int or a bool), or None."""
    return value if isinstance(value, int) else None


def check_repeat(left: Any, right: Any, what: str = "the result of '*'") -> None:
    """``sequence * n``, ``n * sequence`` and ``int * int``."""
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise LimitExceeded(f"{what} would be a number of more than {MAX_INT_DIGITS:,} digits")
        return
    times = _count(right)
    sequence = left
    if times is None:
        times, sequence = _count(left), right
    if times is None or times <= 0 or not isinstance(sequence, (str, bytes, list, tuple)):
        return
    if isinstance(sequence, (str, bytes)):
        if len(sequence) * times > MAX_STRING_LENGTH:
            raise would_be_too_long(what)
        charge_built(len(sequence) * times)
        return
    if len(sequence) * times > MAX_ITEMS:
        raise too_many_items(what)
    # A list repeats references: its text (and what a join or tojson of it builds) is
    # times the text of the list.
    size = text_size(sequence, MAX_VALUE_SIZE)
    if size * times > MAX_VALUE_SIZE:
        raise LimitExceeded(f"{what} would be longer than {MAX_VALUE_SIZE:,} characters as text")
    charge_built(len(sequence) * times)


def check_power(base: Any, exponent: Any) -> None:
    """``int ** int``: the result's size is known before it is computed (floats overflow by
    themselves)."""
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and exponent > 0
        and exponent * (abs(base).bit_length() - 1) > MAX_INT_BITS  # at least that many bits
    ):
        raise LimitExceeded(f"the result of '**' would be a number of more than {MAX_INT_DIGITS:,} digits")


def check_concatenation(left: Any, right: Any) -> None:
    """``a + b`` of strings or lists."""
    if isinstance(left, (str, bytes)) and isinstance(right, (str, bytes)):
        if len(left) + len(right) > MAX_STRING_LENGTH:
            raise would_be_too_long("the result of '+'")
        charge_built(len(left) + len(right))
    elif isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        if len(left) + len(right) > MAX_ITEMS:
            raise too_many_items("the result of '+'")
        charge_built(len(left) + len(right))


def _too_big_number(digits: str) -> bool:
    return len(digits) > 7 or int(digits) > MAX_STRING_LENGTH


# A printf-style conversion: %[(name)][flags][width][.precision][length]type
_PERCENT_SPEC = re.compile(r"%(?:\(([^)]*)\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.)", re.DOTALL)


def check_percent(text: str, arguments: Any, what: str = "the result of '%'") -> None:
    """``'%10s' % x``: no width or precision beyond the string limit (given in the format or
    by ``*``), and arguments (those the format names, of a mapping) whose text fits."""
    star = False
    names = []
    for name, width, precision, _ in _PERCENT_SPEC.findall(text):
        names.append(name)
        for number in (width, precision):
            if number == "*":
                star = True
            elif number and _too_big_number(number):
                raise would_be_too_long(what)
    values = arguments if isinstance(arguments, tuple) else (arguments,)
    if star and any(isinstance(v, int) and abs(v) > MAX_STRING_LENGTH for v in values):
        raise would_be_too_long(what)
    if isinstance(arguments, dict):
        values = tuple(arguments.get(name) for name in names if name)
    total = len(text)
    for value in values:
        total += len(value) if isinstance(value, str) else text_size(value, MAX_STRING_LENGTH)
        if total > MAX_STRING_LENGTH:
            raise would_be_too_long(what)


_SPEC_NUMBER = re.compile(r"\d+")


def check_format_spec(spec: str, what: str) -> None:
    """A ``str.format`` field's spec (``>999999999``): no width or precision beyond the limit."""
    for number in _SPEC_NUMBER.findall(spec):
        if _too_big_number(number):
            raise would_be_too_long(what)


def check_width(width: Any, what: str) -> None:
    """``center(width)``, ``ljust``, ``rjust``, ``zfill``: a width beyond the limit."""
    if isinstance(width, int) and width > MAX_STRING_LENGTH:
        raise would_be_too_long(what)


def check_replace(text: str, old: str, new: str, count: Any = -1, what: str = "the result of replace()") -> None:
    """``text.replace(old, new)``: its length is known before it is computed."""
    if len(new) <= len(old):
        return
    occurrences = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        occurrences = min(occurrences, count)
    if len(text) + occurrences * (len(new) - len(old)) > MAX_STRING_LENGTH:
        raise would_be_too_long(what)


def check_join(separator: str, items: list | tuple, what: str = "the result of join()") -> None:
    """``separator.join(items)``, items already converted to text (or about to be)."""
    if len(items) > 1 and len(separator) * (len(items) - 1) > MAX_STRING_LENGTH:
        raise would_be_too_long(what)
    total = len(separator) * max(len(items) - 1, 0)
    for item in items:
        total += len(item) if isinstance(item, str) else text_size(item, MAX_STRING_LENGTH)
        if total > MAX_STRING_LENGTH:
            raise would_be_too_long(what)


# ----------------------------------------------------------------------------------------
# The budget of one render


class Budget:
    """What one render of a template has used so far."""

    __slots__ = ("steps", "built", "depth")

    def __init__(self) -> None:
        self.steps = 0
        self.built = 0
        self.depth = 0


_BUDGET: ContextVar[Budget | None] = ContextVar("etl_render_budget", default=None)


def start_render() -> Token:
    return _BUDGET.set(Budget())


def end_render(token: Token) -> None:
    _BUDGET.reset(token)


def current_budget() -> Budget | None:
    return _BUDGET.get()


def too_many_steps() -> LimitExceeded:
    return LimitExceeded(
        f"the template ran more than {MAX_TEMPLATE_STEPS:,} steps (loop iterations, filtered items, "
        f"calls) in one render"
    )


def charge_steps(count: int) -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.steps += count
        if budget.steps > MAX_TEMPLATE_STEPS:
            raise too_many_steps()


def charge_built(count: int) -> None:
    """Count ``count`` characters (or items) built by the render under way, if any."""
    budget = _BUDGET.get()
    if budget is not None:
        budget.built += count
        if budget.built > MAX_TEMPLATE_BUILT:
            raise LimitExceeded(f"the template built more than {MAX_TEMPLATE_BUILT:,} characters in one render")


class CountedIterator:
    """An iterable that charges ``cost`` steps per item to a render's budget."""

    __slots__ = ("iterator", "cost", "budget")

    def __init__(self, iterable: Any, cost: int, budget: Budget):
        self.iterator = iter(iterable)
        self.cost = cost
        self.budget = budget

    def __iter__(self) -> CountedIterator:
        return self

    def __next__(self) -> Any:
        item = next(self.iterator)
        budget = self.budget
        budget.steps += self.cost
        if budget.steps > MAX_TEMPLATE_STEPS:
            raise too_many_steps()
        return item


def counted(iterable: Any, cost: int = 1) -> Any:
    """``iterable``, charging ``cost`` steps per item to the render under way (if any)."""
    budget = _BUDGET.get()
    if budget is None:
        return iterable
    return CountedIterator(iterable, cost, budget)
