"""Stage 4: turn a page body into records, and keep only the records a step wants."""

from __future__ import annotations

import difflib
import json
from typing import Any

from ..errors import RecordsError
from ..lang.values import Scope, Value, is_truthy


def select_records(selector: Value, body: Any, options) -> list:
    """Apply a step's ``records`` selector to a page body.

    A missing list (JMESPath null) is an empty page - some APIs omit the list
    key when there is nothing to list. An object is a single record. Anything else
    raises RecordsError.
    """
    try:
        found = selector.evaluate(Scope(body, {}, options))
    except Exception as exc:  # a JMESPath function given the wrong type by an odd body
        raise RecordsError(f"the records selector '{selector.source}' failed: {exc}") from None
    if found is None:
        return []
    if isinstance(found, list):
        return found
    if isinstance(found, dict):
        return [found]
    raise RecordsError(
        f"the records selector '{selector.source}' gives {_kind(found)} {json.dumps(found)[:80]}, not a list of records"
    )


MAX_KEYS_SHOWN = 10


def unmatched_selector(selector: Value, body: Any, options) -> str | None:
    """Why a page gave no records, when the likeliest reason is the ``records`` selector
    itself: it found nothing in a body that has other keys, or in a list. Names the keys it
    saw and the one it most likely meant. None when the page is simply empty: an empty list
    or object, a selector that found an empty list, or a records key that is there but null."""
    if not body or not isinstance(body, (dict, list)):
        return None
    try:
        if selector.evaluate(Scope(body, {}, options)) is not None:
            return None
    except Exception:  # select_records has reported it already
        return None
    said = f"`records: {selector.source}` matched nothing"
    if isinstance(body, list):
        return f"{said}; the body is a list of {len(body)}: its items are the records with `records: '@'` (the default)"
    missed = _where_it_missed(body, selector)
    if missed is None:
        return None
    where, node, missing = missed
    if not isinstance(node, dict):
        return f"{said}; `{where}` is {_kind(node)}, not an object"
    owner = f"`{where}`" if where else "the body"
    prefix = f"{where}." if where else ""
    names = [str(name) for name in node]
    shown = ", ".join(f"`{prefix}{name}`" for name in names[:MAX_KEYS_SHOWN])
    more = f" and {len(names) - MAX_KEYS_SHOWN} more" if len(names) > MAX_KEYS_SHOWN else ""
    meant = _likeliest(missing, node)
    hint = f" (did you mean `{prefix}{meant}`?)" if meant is not None else ""
    return f"{said}; {owner} has {shown}{more}{hint}"


def _where_it_missed(body: dict, selector: Value) -> tuple[str, Any, str] | None:
    """(the path walked, the value there, the name it lacks) for a selector that is a plain
    field path (``data.items``); None when the whole path is there (its value is null). For
    any other expression: the body, and the expression's text."""
    if selector.field_path is None:
        return "", body, str(selector.source)
    node: Any = body
    walked: list[str] = []
    for part in selector.field_path:
        if not isinstance(node, dict) or part not in node:
            return ".".join(walked), node, part
        node = node[part]
        walked.append(part)
    return None


def _likeliest(missing: str, node: dict) -> str | None:
    """The key of ``node`` the author most likely meant: the closest name, else the only
    key holding a list of records."""
    names = [str(name) for name in node]
    close = difflib.get_close_matches(missing, names, n=1, cutoff=0.6)
    if close:
        return close[0]
    lists = [str(name) for name, value in node.items() if isinstance(value, list) and value]
    return lists[0] if len(lists) == 1 else None


def keep_record(record_filter: Value | None, scope: Scope) -> bool:
    """The step's ``filter`` (a JMESPath predicate): keep the record when it is truthy."""
    return record_filter is None or is_truthy(record_filter.evaluate(scope))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__
