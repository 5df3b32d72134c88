"""An answer (``{"type", "totalCount", "data"}``) as text: JSON, an aligned table, or CSV.

* ``json``: the answer itself, indented (what the Python API returns).
* ``table``: for people. A list shows each entity's ``_type``, ``_key`` and ``displayName``; a
  table its columns; a tree its vertices, then its edges. Cells are cut at
  :data:`CELL_WIDTH` characters (``…``); a whole object shows as its ``displayName`` (or
  ``_key``), a list of values as ``a, b``, and a property named like a J1 timestamp
  (``...On``: ``createdOn``, ``expiresOn``) holding epoch milliseconds as an ISO time.
* ``csv``: for spreadsheets. A list has a column per property (``_key``, ``_type``, ``_class``
  first); a table a column per key; lists and objects are JSON in their cell. A tree has no
  rows, so it has no CSV (use json).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Any

FORMATS = ("table", "json", "csv")
CELL_WIDTH = 40
_MS_RANGE = (946684800000, 4102444800000)  # 2000-01-01 .. 2100-01-01: epoch ms, not a count


def render(answer: dict, output_format: str) -> str:
    if output_format == "json":
        return json.dumps(answer, indent=2, ensure_ascii=False)
    if output_format == "csv":
        return to_csv(answer)
    return to_table(answer)


# -- table -----------------------------------------------------------------------------------


def cell(value: Any, key: str = "") -> str:
    """A value as one short line of text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and key.endswith("On") and _MS_RANGE[0] <= value <= _MS_RANGE[1]:
        moment = datetime.fromtimestamp(value / 1000, UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ" if value % 86400000 else "%Y-%m-%d")
    if isinstance(value, dict):
        name = value.get("displayName", value.get("_key"))
        return cell(name) if name is not None else json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return ", ".join(cell(v) if not isinstance(v, (list, dict)) else json.dumps(v) for v in value)
    text = str(value)
    return " ".join(text.split()) if "\n" in text or "\t" in text else text


def clip(text: str, width: int = CELL_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def aligned(headers: list[str], rows: list[list[str]]) -> list[str]:
    cells = [[clip(h) for h in headers]] + [[clip(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _entity_rows(objects: list[dict]) -> list[list[str]]:
    return [[cell(o.get("_type")), cell(o.get("_key")), cell(o.get("displayName", o.get("name")))] for o in objects]


def _count(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def to_table(answer: dict) -> str:
    data = answer["data"]
    kind = answer["type"]
    if kind == "tree":
        vertices, edges = data["vertices"], data["edges"]
        if not vertices:
            return "No results."
        lines = aligned(["_type", "_key", "displayName"], _entity_rows(vertices))
        if edges:
            columns = ["_type", "_fromEntityKey", "_class", "_toEntityKey"]
            lines += [""] + aligned(columns, [[cell(e.get(c)) for c in columns] for e in edges])
        counts = f"{_count(len(vertices), 'vertex', 'vertices')}, {_count(len(edges), 'edge', 'edges')}"
        return "\n".join(lines + [counts])
    if not data:
        return "No results."
    if kind == "list":
        lines = aligned(["_type", "_key", "displayName"], _entity_rows(data))
        return "\n".join(lines + [_count(len(data), "entity", "entities")])
    headers = _keys(data)
    rows = [[cell(row.get(h), h.rsplit(".", 1)[-1]) for h in headers] for row in data]
    return "\n".join(aligned(headers, rows) + [_count(len(data), "row", "rows")])


def _keys(rows: list[dict], first: tuple[str, ...] = ()) -> list[str]:
    keys = dict.fromkeys(first)
    for row in rows:
        keys.update(dict.fromkeys(row))
    return list(keys)


# -- CSV -------------------------------------------------------------------------------------


def csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def to_csv(answer: dict) -> str:
    if answer["type"] == "tree":
        raise ValueError("a tree has no CSV form")
    rows = answer["data"]
    headers = _keys(rows, ("_key", "_type", "_class")) if answer["type"] == "list" else _keys(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    for row in rows:
        writer.writerow([csv_value(row.get(h)) for h in headers])
    return buffer.getvalue().rstrip("\n")
