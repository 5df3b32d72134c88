"""Stage 4: turn a page body into records, and keep only the records a step wants."""

from __future__ import annotations

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


def keep_record(record_filter: Value | None, scope: Scope) -> bool:
    """The step's ``filter`` (a JMESPath predicate): keep the record when it is truthy."""
    return record_filter is None or is_truthy(record_filter.evaluate(scope))


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__
