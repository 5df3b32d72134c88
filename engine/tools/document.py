"""``etl document``: the "Data Model" section of an integration's documentation.

Generated from the compiled :class:`~engine.plan.Plan` alone (no API call), byte for byte
as JupiterOne's ``j1-integration document`` writes it:

* entity types are deduplicated by ``_type`` and sorted by resource name;
* relationships are deduplicated by class, ``_type``, source and target type (mapped
  relationships by direction too) and sorted by relationship ``_type``, the order of
  the SDK release that generated the published integration docs (the newest SDK sorts
  by source type, target type, class instead, which reorders them: ``a_has_user``
  would come after ``a_provides_service``). Ties on ``_type`` are broken by source type,
  target type, class and direction, so the order never depends on the order of steps;
* strings compare by code point, as JavaScript's ``<`` does (capitals first);
* tables are padded like the ``markdown-table`` package (every column as wide as its
  widest cell, the separator dashes as wide too);
* a section with no rows is left out;
* in a documentation file, only the text between the two markers is replaced; a file
  without the start marker gets the section appended after a blank line.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DocumentationMarkerError
from ..pipeline.plan import Plan

MARKER_START = "<!-- {J1_DOCUMENTATION_MARKER_START} -->"
MARKER_END = "<!-- {J1_DOCUMENTATION_MARKER_END} -->"

BANNER_START = """\
<!--
********************************************************************************
NOTE: ALL OF THE FOLLOWING DOCUMENTATION IS GENERATED USING THE
"j1-integration document" COMMAND. DO NOT EDIT BY HAND! PLEASE SEE THE DEVELOPER
DOCUMENTATION FOR USAGE INFORMATION:

https://github.com/JupiterOne/sdk/blob/main/docs/integrations/development.md
********************************************************************************
-->"""

BANNER_END = """\
<!--
********************************************************************************
END OF GENERATED DOCUMENTATION AFTER BELOW MARKER
********************************************************************************
-->"""

ENTITY_HEADER = ("Resources", "Entity `_type`", "Entity `_class`")
RELATIONSHIP_HEADER = ("Source Entity `_type`", "Relationship `_class`", "Target Entity `_type`")
MAPPED_RELATIONSHIP_HEADER = (*RELATIONSHIP_HEADER, "Direction")


# ----------------------------------------------------------------------------------------
# Rows


@dataclass(frozen=True)
class EntityRow:
    resource: str
    type: str
    classes: tuple[str, ...]


@dataclass(frozen=True)
class RelationshipRow:
    source_type: str
    relationship_class: str
    target_type: str
    type: str  # not shown; the sort and deduplication key, as in the SDK


@dataclass(frozen=True)
class MappedRelationshipRow:
    source_type: str
    relationship_class: str
    target_type: str
    direction: str
    type: str


@dataclass(frozen=True)
class DataModel:
    entities: tuple[EntityRow, ...]
    relationships: tuple[RelationshipRow, ...]
    mapped_relationships: tuple[MappedRelationshipRow, ...]

    @property
    def is_empty(self) -> bool:
        """Nothing to document (the SDK looks at entities and direct relationships only)."""
        return not self.entities and not self.relationships


def data_model(plan: Plan) -> DataModel:
    """The deduplicated, sorted rows of the plan's steps (walked in dependency order)."""
    return DataModel(
        entities=tuple(sorted(entity_rows(plan), key=lambda r: r.resource)),
        relationships=tuple(
            sorted(
                relationship_rows(plan),
                key=lambda r: (r.type, r.source_type, r.target_type, r.relationship_class),
            )
        ),
        mapped_relationships=tuple(
            sorted(
                mapped_relationship_rows(plan),
                key=lambda r: (r.type, r.source_type, r.target_type, r.relationship_class, r.direction),
            )
        ),
    )


def entity_rows(plan: Plan) -> list[EntityRow]:
    """One row per entity ``_type``; the first declaration (in dependency order) wins."""
    rows = (EntityRow(e.resource, e.type, e.classes) for step in plan.steps for e in step.entities)
    return _first_of_each(rows, key=lambda r: r.type)


def relationship_rows(plan: Plan) -> list[RelationshipRow]:
    rows = (
        RelationshipRow(r.source.type, r.relationship_class, r.target.type, r.type)
        for step in plan.steps
        for r in step.relationships
    )
    return _first_of_each(rows, key=lambda r: r)


def mapped_relationship_rows(plan: Plan) -> list[MappedRelationshipRow]:
    """Mapped relationships; a target given by class only is shown by its class."""
    rows = (
        MappedRelationshipRow(
            m.source_type, m.relationship_class, m.target_type or m.target_class or "", m.direction, m.type
        )
        for step in plan.steps
        for m in step.mapped_relationships
    )
    return _first_of_each(rows, key=lambda r: r)


def _first_of_each(rows: Iterable, key) -> list:
    seen: dict = {}
    for row in rows:
        seen.setdefault(key(row), row)
    return list(seen.values())


# ----------------------------------------------------------------------------------------
# Rendering


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    """A table as the ``markdown-table`` package writes it: the first row is the header,
    every cell is padded with spaces to its column's widest cell, and the separator
    row's dashes are as wide (at least 3)."""
    widths = [max(3, *(len(row[i]) for row in rows)) for i in range(len(rows[0]))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + " |"

    separator = line(["-" * width for width in widths])
    return "\n".join([line(rows[0]), separator, *(line(row) for row in rows[1:])])


def code(text: str) -> str:
    return f"`{text}`"


def entity_table(rows: Sequence[EntityRow]) -> str:
    return markdown_table(
        [
            ENTITY_HEADER,
            *((r.resource, code(r.type), ", ".join(code(c) for c in r.classes)) for r in rows),
        ]
    )


def relationship_table(rows: Sequence[RelationshipRow]) -> str:
    return markdown_table(
        [
            RELATIONSHIP_HEADER,
            *((code(r.source_type), f"**{r.relationship_class}**", code(r.target_type)) for r in rows),
        ]
    )


def mapped_relationship_table(rows: Sequence[MappedRelationshipRow]) -> str:
    return markdown_table(
        [
            MAPPED_RELATIONSHIP_HEADER,
            *(
                (code(r.source_type), f"**{r.relationship_class}**", code(f"*{r.target_type}*"), r.direction)
                for r in rows
            ),
        ]
    )


def _subsection(title: str, sentence: str, table: str) -> str:
    return f"\n\n### {title}\n\n{sentence}\n\n{table}"


def render_section(model: DataModel) -> str:
    """The whole generated section, from the start marker to the end marker (no final newline)."""
    body = "## Data Model"
    if model.entities:
        body += _subsection("Entities", "The following entities are created:", entity_table(model.entities))
    if model.relationships:
        body += _subsection(
            "Relationships", "The following relationships are created:", relationship_table(model.relationships)
        )
    if model.mapped_relationships:
        body += _subsection(
            "Mapped Relationships",
            "The following mapped relationships are created:",
            mapped_relationship_table(model.mapped_relationships),
        )
    return f"{MARKER_START}\n{BANNER_START}\n\n{body}\n\n{BANNER_END}\n{MARKER_END}"


def document_plan(plan: Plan) -> str:
    return render_section(data_model(plan))


# ----------------------------------------------------------------------------------------
# Documentation files


def generated_section(text: str) -> str | None:
    """The section between the markers (markers included), or None when there is none."""
    start = text.find(MARKER_START)
    if start == -1:
        return None
    end = text.find(MARKER_END, start)
    if end == -1:
        return None
    return text[start : end + len(MARKER_END)]


def replace_section(text: str, section: str, *, name: str = "the documentation file") -> str:
    """``text`` with the generated section replaced (or appended after a blank line when
    the start marker is missing). Everything outside the markers is kept as it was."""
    start = text.find(MARKER_START)
    if start == -1:
        return text + "\n\n" + section
    end = text.find(MARKER_END, start)
    if end == -1:
        raise DocumentationMarkerError(
            f"{name}: could not generate documentation: the start marker {MARKER_START} was found "
            f"but no end marker {MARKER_END} after it; add the end marker where the generated "
            f"section should stop"
        )
    return text[:start] + section + text[end + len(MARKER_END) :]


def read_text(path: Path) -> str | None:
    """The file's text with its line endings untouched, or None when it does not exist."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def updated_text(path: Path, section: str) -> str:
    """What ``path`` should contain; a new file holds just the section."""
    old = read_text(path)
    if old is None:
        return section + "\n"
    return replace_section(old, section, name=str(path))


def is_up_to_date(path: Path, section: str) -> bool:
    return read_text(path) == updated_text(path, section)


def write_document(path: Path, section: str) -> bool:
    """Update or create ``path``; returns whether it changed. Written atomically."""
    new = updated_text(path, section)
    if read_text(path) == new:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(new)
        os.chmod(staging, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
