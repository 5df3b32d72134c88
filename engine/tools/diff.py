"""Compare two output directories: the entities and relationships added, removed and changed.

Objects are matched by ``_key``. A changed object lists, per property, its old and new
value. What is left out of the comparison:

* ``_rawData``: the API's own view of a record. Every property the graph carries is
  compared; raw data also holds counters and timestamps that move on every run (a
  "days remaining", an "updated at"), which would bury real changes. It is dropped as
  each file is read, so it is never held in memory.
* ``summary.json``: run metadata (step timings, statuses). It is only read for its
  partial types.
* Removals of a *partial* type: a type listed in ``metadata.partialDatasets.types`` of
  either run's ``summary.json`` is incomplete, so an object of that type missing from NEW
  may only be missing from the fetch. Such objects are counted, never reported as removed.

Memory: OLD is held (without raw data); NEW is streamed file by file against it.

The two sides need not be directories: anything with a ``path`` (its label), ``partial_types``
and ``all_objects()`` (an :class:`ObjectSource`) compares the same way. :func:`diff_store`
compares two points of a graph store's history for one instance (``etl diff --store``), with
:class:`engine.store.history.Snapshot` as the source: the same events, the same report.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import EXIT_DIFFERENT, EXIT_SAME, OutputDirError, UsageError
from ..output import COLLECTIONS, RAW_DATA, OutputDir

if TYPE_CHECKING:
    from ..store.connect import Store

ADDED, REMOVED, CHANGED, UNCHANGED = "added", "removed", "changed", "unchanged"


class ObjectSource(Protocol):
    """One side of a comparison: an output directory, or the store at a point in time."""

    @property
    def path(self) -> Any: ...  # what the report names it by

    @property
    def partial_types(self) -> frozenset[str]: ...

    def all_objects(self, drop: frozenset[str] = frozenset()) -> Iterator[tuple[str, dict]]: ...


# ----------------------------------------------------------------------------------------
# Comparing


def same(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1`` (as it is in Python); ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def changes_between(old: dict, new: dict) -> dict[str, dict[str, Any]]:
    """``{property: {"old": ..., "new": ...}}`` for every property that differs, sorted by
    name. An absent property reads as null."""
    out = {}
    for name in sorted(old.keys() | new.keys()):
        if name == "_key":
            continue
        before, after = old.get(name), new.get(name)
        if not same(before, after):
            out[name] = {"old": before, "new": after}
    return out


@dataclass(frozen=True)
class Event:
    """One object that differs between the runs (or, on request, one that does not)."""

    collection: str  # 'entities' | 'relationships'
    kind: str  # ADDED | REMOVED | CHANGED | UNCHANGED
    key: str
    old: dict | None
    new: dict | None
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def latest(self) -> dict:
        """The object as NEW has it, or as OLD had it when it was removed."""
        obj = self.new if self.new is not None else self.old
        assert obj is not None  # every event has an object on at least one side
        return obj

    @property
    def type(self) -> str:
        return self.latest["_type"]


class Comparison:
    """Iterate to get the :class:`Event`\\ s of OLD -> NEW. After iterating,
    :attr:`suppressed` counts, per partial type, the objects of OLD missing from NEW that
    were not reported as removed, and :attr:`types` holds every type seen in either run."""

    def __init__(self, old: ObjectSource, new: ObjectSource, *, ignore: Iterable[str] = (), unchanged: bool = False):
        self.old, self.new = old, new
        self.ignore = frozenset(ignore)
        self.unchanged = unchanged
        self.partial_types = old.partial_types | new.partial_types
        self.suppressed: Counter[str] = Counter()
        self.types: dict[str, set[str]] = {c: set() for c in COLLECTIONS}

    def __iter__(self) -> Iterator[Event]:
        drop = self.ignore | {RAW_DATA}
        held: dict[str, dict[str, dict]] = {c: {} for c in COLLECTIONS}
        for collection, obj in self.old.all_objects(drop):
            key = obj["_key"]
            if key in held[collection]:
                raise OutputDirError(f"{self.old.path}: two {collection} have the _key {key!r}")
            held[collection][key] = obj
            self.types[collection].add(obj["_type"])
        seen: dict[str, set[str]] = {c: set() for c in COLLECTIONS}
        for collection, obj in self.new.all_objects(drop):
            key = obj["_key"]
            if key in seen[collection]:
                raise OutputDirError(f"{self.new.path}: two {collection} have the _key {key!r}")
            seen[collection].add(key)
            self.types[collection].add(obj["_type"])
            before = held[collection].pop(key, None)
            if before is None:
                yield Event(collection, ADDED, key, None, obj)
                continue
            changes = changes_between(before, obj)
            if changes:
                yield Event(collection, CHANGED, key, before, obj, changes)
            elif self.unchanged:
                yield Event(collection, UNCHANGED, key, before, obj)
        del seen
        for collection in COLLECTIONS:
            for key in sorted(held[collection]):
                obj = held[collection][key]
                if obj["_type"] in self.partial_types:
                    self.suppressed[obj["_type"]] += 1
                    continue
                yield Event(collection, REMOVED, key, obj, None)


# ----------------------------------------------------------------------------------------
# The diff of two runs


@dataclass
class CollectionDiff:
    added: dict[str, str] = field(default_factory=dict)  # _key -> _type
    removed: dict[str, str] = field(default_factory=dict)
    changed: dict[str, tuple[str, dict]] = field(default_factory=dict)  # _key -> (_type, changes)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def to_json(self) -> dict:
        return {
            "added": sorted(self.added),
            "removed": sorted(self.removed),
            "changed": [{"_key": key, "changes": self.changed[key][1]} for key in sorted(self.changed)],
        }


@dataclass
class Diff:
    old: ObjectSource
    new: ObjectSource
    entities: CollectionDiff
    relationships: CollectionDiff
    partial_types: frozenset[str]
    suppressed: dict[str, int]  # partial type -> objects of OLD missing from NEW, not reported
    ignored: frozenset[str] = frozenset()

    @property
    def has_differences(self) -> bool:
        return bool(self.entities or self.relationships)

    @property
    def exit_code(self) -> int:
        return EXIT_DIFFERENT if self.has_differences else EXIT_SAME

    def to_json(self) -> dict:
        return {"entities": self.entities.to_json(), "relationships": self.relationships.to_json()}


def diff_outputs(old_path: Path, new_path: Path, *, ignore: Iterable[str] = ()) -> Diff:
    """Compare the output directories ``old_path`` and ``new_path``."""
    return compare(OutputDir.open(old_path, "OLD"), OutputDir.open(new_path, "NEW"), ignore=ignore)


def diff_store(store: Store, instance: str, since: int, until: int, *, ignore: Iterable[str] = ()) -> Diff:
    """Compare one instance of ``store`` as it was at ``since`` with how it was at ``until`` (epoch ms)."""
    from ..store.history import Snapshot

    if since > until:
        raise UsageError("--since is after --until: nothing to compare")
    return compare(Snapshot(store, instance, since), Snapshot(store, instance, until), ignore=ignore)


def parse_point(text: str, now: int, option: str) -> int:
    """A point in time given as ``option``: a duration ago (``30m``, ``6h``, ``1d``) or an
    ISO-8601 time, in epoch ms."""
    from ..pipeline.run import parse_time
    from .schedule import parse_interval

    try:
        return now - int(parse_interval(text) * 1000)
    except ValueError:
        pass
    try:
        value = parse_time(text, option)
    except UsageError:
        raise UsageError(f"{option}: {text!r} is neither a duration ago (30m, 6h, 1d) nor an ISO-8601 time") from None
    assert value is not None
    return value


def compare(old: ObjectSource, new: ObjectSource, *, ignore: Iterable[str] = ()) -> Diff:
    """The diff of two object sources (directories or store snapshots)."""
    comparison = Comparison(old, new, ignore=ignore)
    parts = {c: CollectionDiff() for c in COLLECTIONS}
    for event in comparison:
        part = parts[event.collection]
        if event.kind == ADDED:
            part.added[event.key] = event.type
        elif event.kind == REMOVED:
            part.removed[event.key] = event.type
        else:
            part.changed[event.key] = (event.type, event.changes)
    return Diff(
        old,
        new,
        parts["entities"],
        parts["relationships"],
        comparison.partial_types,
        dict(sorted(comparison.suppressed.items())),
        frozenset(ignore),
    )


def value_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def format_diff(diff: Diff) -> str:
    """The text report of ``etl diff``."""
    lines = [f"--- {diff.old.path}", f"+++ {diff.new.path}"]
    for title, part in (("Entities", diff.entities), ("Relationships", diff.relationships)):
        lines.append(f"{title}: {len(part.added)} added, {len(part.removed)} removed, {len(part.changed)} changed")
        rows: list[tuple[str, str, str, dict | None]] = [
            (key, "+", graph_type, None) for key, graph_type in part.added.items()
        ]
        rows += [(key, "-", graph_type, None) for key, graph_type in part.removed.items()]
        rows += [(key, "~", graph_type, changes) for key, (graph_type, changes) in part.changed.items()]
        for key, mark, graph_type, changes in sorted(rows, key=lambda r: (r[0], r[1])):
            lines.append(f"  {mark} {key}  ({graph_type})")
            for name, change in (changes or {}).items():
                lines.append(f"      {name}: {value_text(change['old'])} -> {value_text(change['new'])}")
    if diff.partial_types:
        described = []
        for graph_type in sorted(diff.partial_types):
            missing = diff.suppressed.get(graph_type, 0)
            described.append(f"{graph_type} ({missing} in OLD only, not reported)" if missing else graph_type)
        lines.append(f"Partial types (never reported as removed): {', '.join(described)}")
    else:
        lines.append("Partial types (never reported as removed): none")
    if diff.ignored:
        lines.append(f"Ignored properties: {', '.join(sorted(diff.ignored))} (and _rawData)")
    lines.append("Differences found." if diff.has_differences else "No differences.")
    return "\n".join(lines)
