"""JSON in and out, fast: orjson, with json for what orjson refuses but JSON allows
(integers beyond 64 bits). Pages, output files and summaries all go through here."""

from __future__ import annotations

import json
from typing import Any

import orjson


def decode_json(content: bytes | str) -> Any:
    """Parse JSON text; raises ValueError (or RecursionError, nested too deeply)."""
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return json.loads(content)


def shown(value: Any, limit: int = 80) -> str:
    """A value as messages show it: JSON (anything else as text), cut to ``limit`` characters."""
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def encode_json(value: Any, *, pretty: bool = False) -> bytes:
    """JSON bytes (UTF-8, not ASCII-escaped), indented by two spaces when ``pretty``."""
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2 if pretty else 0)
    except TypeError:
        return json.dumps(value, indent=2 if pretty else None, ensure_ascii=False).encode()
