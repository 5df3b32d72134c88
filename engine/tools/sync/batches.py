"""Upload batches: objects encoded once, batches at most ``max_batch_bytes``, raw data truncated on 413."""

from __future__ import annotations

import json
import logging
from typing import Any

from .settings import TRUNCATED

log = logging.getLogger("etl.sync")


def encode(obj: Any) -> bytes:
    """Compact JSON, exactly as it is sent (so sizes computed from it are the sizes on the wire)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


_TRUNCATED_SIZE = len(encode(TRUNCATED))


class Item:
    """One graph object and its encoded form, kept in step."""

    __slots__ = ("obj", "data")

    def __init__(self, obj: dict):
        self.obj = obj
        self.data = encode(obj)

    def raw_entries(self) -> list[tuple[int, dict]]:
        """(encoded size, entry) of each ``_rawData`` entry not yet truncated."""
        entries = self.obj.get("_rawData")
        if not isinstance(entries, list):
            return []
        sized = [
            (len(encode(e["rawData"])), e)
            for e in entries
            if isinstance(e, dict) and "rawData" in e and e["rawData"] != TRUNCATED
        ]
        return [(size, e) for size, e in sized if size > _TRUNCATED_SIZE]  # truncating the rest gains nothing


def batch_body(collection: str, items: list[Item]) -> bytes:
    return b'{"' + collection.encode() + b'":[' + b",".join(i.data for i in items) + b"]}"


def batch_size(collection: str, items: list[Item]) -> int:
    return len(collection) + 7 + sum(len(i.data) for i in items) + max(len(items) - 1, 0)


def truncate_raw_data(items: list[Item], target: int, size: int) -> int:
    """Replace the largest ``_rawData`` entries of ``items`` with 'TRUNCATED', largest first,
    until the batch is at most ``target`` bytes (``size`` is its current size) or none is
    left. Returns how many objects changed."""
    entries = sorted(
        ((s, n, e, item) for n, item in enumerate(items) for s, e in item.raw_entries()), key=lambda t: (-t[0], t[1])
    )
    changed: dict[int, Item] = {}
    for entry_size, number, entry, item in entries:
        if size <= target:
            break
        entry["rawData"] = TRUNCATED
        size -= entry_size - _TRUNCATED_SIZE
        changed[number] = item
    for item in changed.values():
        item.data = encode(item.obj)
    return len(changed)
