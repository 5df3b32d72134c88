"""The canonical JSON text the store writes and compares (no SQLAlchemy: worker processes and
``etl visualize`` import it)."""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> str:
    """Canonical JSON text: keys sorted, no spaces, UTF-8 kept (not ASCII-escaped)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # an integer beyond 64 bits, say
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


canonical = dumps  # the same text compares values (the mapper's property equality)
