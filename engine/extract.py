"""Stage 4: turn a page body into records, and keep only the records a step wants."""

from __future__ import annotations

import json
from typing import Any

from .errors import FetchError
from .expressions import Scope, Value


def select_records(selector: Value, body: Any, options, where: str) -> list:
    """Apply a step's ``records`` selector to a page body.

    A missing list (JMESPath null) is an empty page - some APIs omit the list
    key when there is nothing to list. An object is a single record. Anything else is
    an error naming the request.
    """
    found = selector.evaluate(Scope(body, {}, options))
    if found is None:
        return []
    if isinstance(found, list):
        return found
    if isinstance(found, dict):
        return [found]
    raise FetchError(
        f"{where}: the records selector '{selector.source}' gives {_kind(found)} "
        f"{json.dumps(found)[:80]}, not a list of records",
        url=where,
    )


def keep_record(record_filter: Value | None, scope: Scope) -> bool:
    """The step's ``filter`` (a JMESPath predicate): keep the record when it is truthy."""
    return record_filter is None or is_truthy(record_filter.evaluate(scope))


def is_truthy(value: Any) -> bool:
    """JMESPath truthiness: null, false and empty strings, lists and objects are false."""
    if value is None or value is False:
        return False
    if isinstance(value, (str, list, dict)):
        return len(value) > 0
    return True


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__
