"""Draw a graph as one self-contained HTML page: an output directory's (``etl visualize``), or
any entities and relationships a caller has (:func:`write_page_for`, e.g. a query's answer).

Like the JupiterOne SDK's ``j1-integration visualize``, without loading anything from the
internet: the graph is embedded as JSON, and a small script in the page lays it out
(force-directed, seeded, so the same data gives the same picture) and draws it in SVG, with
a search box and a type toggle per legend entry.

* Nodes are entities, coloured by ``_type`` (see the legend), labelled with displayName,
  ``[_type]`` and ``_key``; a repeated ``_key`` gets its own node marked ``[DUPLICATE _KEY]``.
* Edges are relationships, labelled with their ``_class``, drawn from ``_fromEntityKey``
  to ``_toEntityKey``; an endpoint with no entity becomes a "missing entity" node.
* A mapped relationship's target is resolved against the entities with its
  ``targetFilterKeys`` (OR of ANDs; ``_class`` matched as a subset). When nothing
  matches, it points at a dashed placeholder node built from the target's filter-key
  values (one per distinct target). The edge follows ``relationshipDirection``.

What is drawn (:class:`Limits`): only entities of the ``types`` asked for (none: every type),
and at most ``max_nodes`` nodes - entities first, in the input's order, then the placeholders
and missing entities the drawn relationships need - and ``EDGES_PER_NODE`` times as many edges.
A relationship is drawn when both its ends are; an end that is an entity left out leaves the
relationship out (it is never shown as "missing"). Everything left out is counted
(:class:`PageSummary`), and the page and the command say how to narrow the view.

Memory stays flat in the size of the input: the objects are read as a stream (an output
directory one file at a time, with :mod:`engine.output`); what the relationships need to know
about every entity - which node it is drawn as, or that it exists but is not drawn - lives in a
private temporary SQLite database (:class:`IdentityIndex`), and the nodes and edges are
written to temporary files as they are made and copied into the page at the end.

Every text is escaped: the data is JSON with ``<``, ``>`` and ``&`` escaped, and the
script only ever sets ``textContent``. A Content-Security-Policy allows nothing but the
page's own script and style (by hash), so even a label that got through could not run; the
script attaches its listeners itself (no inline handlers).
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import html
import json
import os
import shutil
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from itertools import islice
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from ..errors import OutputDirError, UsageError, VisualizeError
from ..jsonio import decode_json, encode_json
from ..output import RAW_DATA, OutputDir, read_graph_file
from ..store.jsontext import canonical
from ..store.targets import class_set, filter_key_groups  # the mapper's rules, shared with the store

if TYPE_CHECKING:
    import jinja2

PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#86bcb6",
    "#d37295",
    "#a0cbe8",
    "#8cd17d",
    "#f1ce63",
    "#bab0ac",
    "#fabfd2",
)
MAX_PROPERTY_CHARS = 2000  # per property shown in the details panel
DEFAULT_MAX_NODES = 2000  # what a browser lays out and draws in a few seconds
EDGES_PER_NODE = 5  # at most max_nodes * EDGES_PER_NODE edges
PLACEHOLDER_SHARE = 4  # when entities are cut, 1/PLACEHOLDER_SHARE of the nodes is kept for the targets they map to
LISTED_TYPES = 8  # types named in the notice, most entities first
NO_DATA = "There was no data found to visualize."
BATCH = 1000  # objects decided together (their identities looked up in one go)
LOOKUP_BATCH = 500  # identities per SQL statement
LEFT_OUT_END = "an end is not drawn"  # an entity not drawn, or a node --type does not select
LEFT_OUT_NODES = "no room for the node an end needs"  # a placeholder or missing entity past --max-nodes
LEFT_OUT_EDGES = f"over the edge limit ({EDGES_PER_NODE} per node)"


# ----------------------------------------------------------------------------------------
# What to draw, and what was drawn


@dataclass(frozen=True)
class Limits:
    """What a page draws: entities of ``types`` only (empty: every type), at most ``max_nodes``
    nodes (0: no limit) and ``EDGES_PER_NODE`` times as many edges."""

    types: frozenset[str] = frozenset()
    max_nodes: int = DEFAULT_MAX_NODES

    def selects(self, graph_type: str) -> bool:
        """Whether nodes of ``graph_type`` may be drawn."""
        return not self.types or graph_type in self.types

    def room(self, used: int, wanted: int = 1) -> bool:
        """Whether ``wanted`` more nodes fit beside ``used``."""
        return not self.max_nodes or used + wanted <= self.max_nodes

    def edge_room(self, used: int) -> bool:
        """Whether one more edge fits beside ``used``."""
        return not self.max_nodes or used < self.max_nodes * EDGES_PER_NODE


@dataclass
class PageSummary:
    """What a page shows, and what it leaves out (per reason)."""

    limits: Limits
    where: str  # what was drawn, for messages: the directory, or the caller's title
    entities: Counter[str] = field(default_factory=Counter)  # drawn entity nodes per _type
    entity_totals: Counter[str] = field(default_factory=Counter)  # every entity of the input per _type
    placeholders: Counter[str] = field(default_factory=Counter)  # placeholder nodes per target _type
    target_types: set[str] = field(default_factory=set)  # the _type of every mapped target ("" when none)
    missing: int = 0
    edges: int = 0
    relationships: int = 0  # in the input
    cut: int = 0  # entities of a selected type left out by the node limit
    left_out: Counter[str] = field(default_factory=Counter)  # relationships not drawn, per reason

    @property
    def nodes(self) -> int:
        return sum(self.entities.values()) + sum(self.placeholders.values()) + self.missing

    @property
    def complete(self) -> bool:
        """Whether the page shows the whole input."""
        return not self.cut and not self.limits.types and self.edges == self.relationships

    def describe(self) -> str:
        """One line: what the page shows, e.g. ``11 entities, 19 relationships, ...``."""
        placeholders = sum(self.placeholders.values())
        return (
            f"{self.status()}, {_count(placeholders, 'mapped-target placeholder')}, "
            f"{_count(self.missing, 'missing entity', 'missing entities')}"
        )

    def status(self) -> str:
        """What the page shows, e.g. ``11 entities, 19 relationships`` or ``1,500 of 200,000 entities, ...``."""
        drawn, total = sum(self.entities.values()), sum(self.entity_totals.values())
        if self.complete:
            return f"{_count(drawn, 'entity', 'entities')}, {_count(self.edges, 'relationship')}"
        entities = _count(total, "entity", "entities", shown=f"{drawn:,} of {total:,}")
        relationships = _count(self.relationships, "relationship", shown=f"{self.edges:,} of {self.relationships:,}")
        return f"{entities}, {relationships}"

    def empty_reason(self) -> str:
        """Why the page draws nothing, e.g. ``there was no data found to visualize``."""
        if not self.entity_totals and not self.relationships:
            return NO_DATA[0].lower() + NO_DATA[1:].rstrip(".")
        names = ", ".join(sorted(self.limits.types))
        return (
            f"nothing of --type {names} can be drawn (a mapped target is drawn only with an entity "
            "that maps to it: add that entity's --type too)"
        )

    def empty_message(self) -> str:
        """The page's sentence when it draws nothing."""
        reason = self.empty_reason()
        return f"{self.where}: {reason[0].upper()}{reason[1:]}."

    def notice(self) -> str | None:
        """What the limits left out and how to narrow the view; None when they left nothing out."""
        over_edges, no_room = self.left_out[LEFT_OUT_EDGES], self.left_out[LEFT_OUT_NODES]
        if not self.cut and not over_edges and not no_room:
            return None
        max_nodes = self.limits.max_nodes
        selected = " of the selected types" if self.limits.types else ""
        total = sum(n for t, n in self.entity_totals.items() if self.limits.selects(t))
        drawn, others = sum(self.entities.values()), sum(self.placeholders.values()) + self.missing
        text = f"{self.where} has {total:,} entities{selected}; --max-nodes {max_nodes} draws {drawn:,} of them"
        if others:
            text += f", with {_count(others, 'node')} for the placeholders and missing entities they point at,"
        text += f" and {self.edges:,} of {self.relationships:,} relationships"
        if no_room:
            text += f" ({no_room:,} left out for want of room for the placeholder or missing entity they point at)"
        if over_edges:
            text += f" ({over_edges:,} more would pass the edge limit of {max_nodes * EDGES_PER_NODE:,})"
        return f"{text}. Narrow it with --type TYPE ({self.type_list()}), or raise --max-nodes (0: no limit)."

    def type_list(self) -> str:
        """The input's types, most entities first, for a message."""
        ranked = sorted(self.entity_totals.items(), key=lambda item: (-item[1], item[0]))
        shown = ", ".join(f"{t or '(no _type)'}: {n:,}" for t, n in ranked[:LISTED_TYPES])
        if len(ranked) > LISTED_TYPES:
            shown += f", and {len(ranked) - LISTED_TYPES:,} more"
        targets = sorted(t for t in self.target_types if t and t not in self.entity_totals)
        if targets:
            shown += "; mapped targets: " + ", ".join(targets[:LISTED_TYPES])
        return shown or "there are no types"

    def check_types(self) -> None:
        """Every --type must name a type of the input (an entity's, or a mapped target's)."""
        known = sorted(t for t in set(self.entity_totals) | self.target_types if t)
        for name in sorted(self.limits.types - set(known)):
            close = sorted((t for t in known if name in t), key=len) or difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise UsageError(
                f"--type {name}: no entity or mapped target in {self.where} has this _type; "
                f"{hint}its types: {self.type_list()}"
            )


def _count(number: int, singular: str, plural: str = "", *, shown: str = "") -> str:
    """``1 entity``, ``2 entities``; ``shown`` replaces the number (``5 of 11 entities``)."""
    return f"{shown or f'{number:,}'} {singular if number == 1 else plural or singular + 's'}"


# ----------------------------------------------------------------------------------------
# Reading


class GraphSource(Protocol):
    """Entities and relationships that can each be read more than once."""

    def entities(self) -> Iterable[dict]: ...

    def relationships(self) -> Iterable[dict]: ...

    def mappings(self) -> Iterable[dict]:
        """The ``_mapping`` of each mapped relationship (read before the entities)."""
        ...


@dataclass(frozen=True)
class DirectorySource:
    """An output directory (or its graph/ folder), read one file at a time."""

    output: OutputDir

    @classmethod
    def open(cls, directory: Path) -> DirectorySource:
        return cls(OutputDir.open(directory, summary_required=False))

    def entities(self) -> Iterable[dict]:
        return self.output.objects("entities")

    def relationships(self) -> Iterable[dict]:
        return self.output.objects("relationships")

    def mappings(self) -> Iterator[dict]:
        """Parses only the files that mention ``"_mapping"`` (one that cannot be read is
        reported when the relationships are read)."""
        for path in self.output.files("relationships"):
            try:
                if b'"_mapping"' not in path.read_bytes():
                    continue
            except OSError:
                continue
            for relationship in read_graph_file(path, "relationships"):
                if isinstance(relationship.get("_mapping"), dict):
                    yield relationship["_mapping"]


class IterableSource:
    """A caller's iterables: the entities are read once; the relationships twice - as they
    are when they are a collection (a list, say), else from a temporary file written as
    they are first read."""

    def __init__(self, entities: Iterable[dict], relationships: Iterable[dict], scratch: Path | None):
        self._entities = entities
        self._relationships = relationships
        self._scratch = scratch
        self._copy: IO[bytes] | None = None

    def entities(self) -> Iterable[dict]:
        return self._entities

    def relationships(self) -> Iterator[dict]:
        if isinstance(self._relationships, Collection):
            yield from self._relationships
        elif self._copy is None:
            self._copy = tempfile.TemporaryFile(dir=self._scratch)  # noqa: SIM115 - closed by close()
            for relationship in self._relationships:
                self._copy.write(encode_json(relationship) + b"\n")
                yield relationship
        else:
            self._copy.seek(0)
            for line in self._copy:
                yield decode_json(line)

    def mappings(self) -> Iterator[dict]:
        for relationship in self.relationships():
            if isinstance(relationship.get("_mapping"), dict):
                yield relationship["_mapping"]

    def close(self) -> None:
        if self._copy is not None:
            self._copy.close()


# ----------------------------------------------------------------------------------------
# What a relationship can find: identities of entities


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _identity(keys: tuple[str, ...], values: list, classes: tuple[str, ...] | None) -> bytes:
    """What a mapped target finds an entity by: ``g:`` and a digest of the filter keys, their
    values and the classes asked for (collisions: 2**-128)."""
    return b"g:" + hashlib.blake2b(canonical([list(keys), values, classes]).encode(), digest_size=16).digest()


def key_identity(key: Any) -> bytes:
    """What a relationship's end finds an entity by: ``k:`` and its ``_key``."""
    return b"k:" + _text(key).encode()


@dataclass
class TargetGroups:
    """The filter-key groups mapped relationships find their targets by, each with the class
    sets its targets ask for (only for groups with ``_class``); read from the relationships
    before the entities, so that each entity is indexed under what will be looked up."""

    groups: dict[tuple[str, ...], set[tuple[str, ...]]] = field(default_factory=dict)
    plain: dict[tuple[str, ...], tuple[str, ...]] = field(default_factory=dict)  # each group without _class
    target_types: set[str] = field(default_factory=set)
    mapped: int = 0

    @classmethod
    def scan(cls, mappings: Iterable[dict]) -> TargetGroups:
        found = cls()
        for mapping in mappings:
            found.add(mapping)
        return found

    def add(self, mapping: dict) -> None:
        self.mapped += 1
        target = mapping.get("targetEntity")
        target = target if isinstance(target, dict) else {}
        self.target_types.add(_text(target.get("_type")))
        for group in filter_key_groups(mapping):
            if not group:
                continue
            if group not in self.groups:
                self.groups[group] = set()
                self.plain[group] = tuple(k for k in group if k != "_class")
            if "_class" in group and all(k in target for k in group):
                self.groups[group].add(tuple(sorted(class_set(target.get("_class")))))

    def entity_identities(self, entity: dict) -> list[bytes]:
        """Every identity a mapped target can find ``entity`` by, besides its ``_key``."""
        found = []
        for group, wanted in self.groups.items():
            plain = self.plain[group]
            if not all(k in entity for k in plain):
                continue
            if "_class" not in group:
                found.append(_identity(plain, [entity[k] for k in plain], None))
            elif wanted:
                values, classes = [entity[k] for k in plain], class_set(entity.get("_class"))
                found.extend(_identity(plain, values, w) for w in wanted if classes.issuperset(w))
        return found

    @staticmethod
    def target_identities(mapping: dict) -> Iterator[bytes]:
        """The identities a mapped relationship's target is looked up by, one per usable group, in order."""
        target = mapping.get("targetEntity")
        if not isinstance(target, dict):
            return
        for group in filter_key_groups(mapping):
            if not group or not all(k in target for k in group):
                continue
            plain = tuple(k for k in group if k != "_class")
            classes = tuple(sorted(class_set(target.get("_class")))) if "_class" in group else None
            yield _identity(plain, [target[k] for k in plain], classes)


class IdentityIndex:
    """Where each identity of the input's entities leads: the number of the node the entity is
    drawn as, or NULL for an entity that is not drawn. The first entity with an identity keeps
    it. A private temporary SQLite database (on disk past a small cache), so memory does not
    grow with the input."""

    def __init__(self) -> None:
        self.db = sqlite3.connect("")
        self.db.execute("PRAGMA journal_mode = OFF")
        self.db.execute("PRAGMA synchronous = OFF")
        self.db.execute("CREATE TABLE ids (id BLOB PRIMARY KEY, node INTEGER) WITHOUT ROWID")

    def add(self, rows: list[tuple[bytes, int | None]]) -> None:
        """Record ``(identity, node number or None)`` rows; an identity already recorded keeps its node."""
        self.db.executemany("INSERT OR IGNORE INTO ids VALUES (?, ?)", rows)

    def find(self, identities: Iterable[bytes]) -> dict[bytes, int | None]:
        """The identities an entity has, each with the number of its node (None: not drawn)."""
        wanted = list(identities)
        found: dict[bytes, int | None] = {}
        for start in range(0, len(wanted), LOOKUP_BATCH):
            part = wanted[start : start + LOOKUP_BATCH]
            marks = ",".join("?" * len(part))
            found.update(self.db.execute(f"SELECT id, node FROM ids WHERE id IN ({marks})", part))
        return found

    def undraw(self, first: int) -> None:
        """Entities drawn as node ``first`` and after are not drawn after all."""
        self.db.execute("UPDATE ids SET node = NULL WHERE node >= ?", (first,))

    def close(self) -> None:
        self.db.close()


class Spool:
    """JSON values for the page (escaped for a <script> element), comma-separated in a
    temporary file, so the page's data never has to be held."""

    def __init__(self, scratch: Path | None):
        self.file = tempfile.TemporaryFile(dir=scratch)  # noqa: SIM115 - closed by close()
        self.count = 0

    def add(self, value: Any) -> int:
        """Append ``value``; returns the offset it starts at."""
        offset = self.file.tell()
        self.file.write((b"," if self.count else b"") + script_json(value).encode("ascii"))
        self.count += 1
        return offset

    def cut(self, offset: int, count: int) -> None:
        """Keep the first ``count`` values (those before ``offset``)."""
        self.file.truncate(offset)
        self.file.seek(offset)
        self.count = count

    def copy_to(self, out: IO[bytes]) -> None:
        self.file.seek(0)
        shutil.copyfileobj(self.file, out)
        self.file.seek(0, os.SEEK_END)

    def values(self) -> list:
        self.file.seek(0)
        text = self.file.read()
        self.file.seek(0, os.SEEK_END)
        return json.loads(b"[" + text + b"]")

    def close(self) -> None:
        self.file.close()


# ----------------------------------------------------------------------------------------
# The drawing: nodes and edges, as they are decided


def _label(obj: dict) -> str:
    for name in ("displayName", "name", "_key"):
        if obj.get(name) not in (None, ""):
            return _text(obj[name])
    return ""


def _props(obj: dict) -> dict[str, str]:
    out = {}
    for name, value in obj.items():
        if name == RAW_DATA:
            continue
        text = _text(value)
        out[name] = text if len(text) <= MAX_PROPERTY_CHARS else text[:MAX_PROPERTY_CHARS] + "..."
    return out


@dataclass
class End:
    """One end of a relationship: a node already drawn, an entity not drawn, or a node to add
    (a missing entity or a placeholder) if the relationship is drawn."""

    node: str | None = None  # the id of the node it is drawn as
    exists: bool = False  # an entity of the input (drawn or not)
    new: tuple[str, Any, Any] | None = None  # ("missing", key, None) or ("placeholder", identity, mapping)

    @property
    def hidden(self) -> bool:
        """An entity of the input that is not drawn."""
        return self.node is None and self.exists


class Drawing:
    """Decides, object by object, what the page draws; spools the nodes and edges it draws and
    counts what it leaves out (:attr:`summary`). Entities first (:meth:`add_entities`, then
    :meth:`end_entities`), then relationships (:meth:`add_relationships`)."""

    def __init__(self, limits: Limits, groups: TargetGroups, where: str, scratch: Path | None):
        self.limits = limits
        self.groups = groups
        self.summary = PageSummary(limits, where, target_types=set(groups.target_types))
        self.index = IdentityIndex()
        self.nodes = Spool(scratch)
        self.edges = Spool(scratch)
        self.drawn: list[tuple[int, str]] = []  # (spool offset, _type) of each entity node, while limited
        self.missing: dict[str, str] = {}  # key -> node id
        self.placeholders: dict[bytes, str] = {}  # identity -> node id

    def close(self) -> None:
        self.index.close()
        self.nodes.close()
        self.edges.close()

    # -- entities

    def add_entities(self, entities: Iterable[dict]) -> None:
        """Draw or index each entity, a batch at a time."""
        for batch in _batches(entities):
            keys = [key_identity(entity.get("_key")) for entity in batch]
            seen = set(self.index.find(keys))
            rows: list[tuple[bytes, int | None]] = []
            for entity, key in zip(batch, keys, strict=True):
                node = self._add_entity(entity, duplicate=key in seen)
                if key not in seen:  # a duplicate _key is not indexed: the first entity keeps it
                    seen.add(key)
                    rows.append((key, node))
                    rows.extend((identity, node) for identity in self.groups.entity_identities(entity))
            self.index.add(rows)

    def _add_entity(self, entity: dict, *, duplicate: bool) -> int | None:
        """Draw ``entity`` if its type is selected and there is room; the number of its node, or None."""
        graph_type = _text(entity.get("_type"))
        self.summary.entity_totals[graph_type] += 1
        if not self.limits.selects(graph_type):
            return None
        if not self.limits.room(self.nodes.count):
            self.summary.cut += 1
            return None
        number = self.nodes.count
        offset = self.nodes.add(
            {
                "id": f"n{number}",
                "kind": "entity",
                "type": graph_type,
                "key": _text(entity.get("_key")),
                "label": _label(entity),
                "duplicate": duplicate,
                "props": _props(entity),
            }
        )
        self.summary.entities[graph_type] += 1
        if self.limits.max_nodes:
            self.drawn.append((offset, graph_type))
        return number

    def end_entities(self) -> None:
        """Check the --type names; when entities were cut and the drawn ones map to targets that
        may be drawn, give back a share of the nodes for those targets."""
        self.summary.check_types()
        if not self.summary.cut or not any(self.limits.selects(t) for t in self.groups.target_types):
            return
        keep = self.limits.max_nodes - self.limits.max_nodes // PLACEHOLDER_SHARE
        if len(self.drawn) <= keep:
            return
        for _, graph_type in self.drawn[keep:]:
            self.summary.entities[graph_type] -= 1
        self.summary.cut += len(self.drawn) - keep
        self.nodes.cut(self.drawn[keep][0], keep)
        self.index.undraw(keep)
        del self.drawn[keep:]

    # -- relationships

    def add_relationships(self, relationships: Iterable[dict]) -> None:
        """Draw each relationship whose ends can be drawn, a batch at a time: the source (or
        from) ends are looked up first, the other ends only where the first can be drawn."""
        for batch in _batches(relationships):
            firsts = [key_identity(_first_key(relationship)) for relationship in batch]
            found = self.index.find(set(firsts))
            others = [
                None if found.get(f, 0) is None else self._other_identities(r)
                for f, r in zip(firsts, batch, strict=True)
            ]
            found.update(self.index.find({i for other in others if other for i in other}))
            for relationship, first, other in zip(batch, firsts, others, strict=True):
                self.summary.relationships += 1
                if other is None:  # its first end is an entity not drawn
                    self.summary.left_out[LEFT_OUT_END] += 1
                else:
                    self._add_relationship(relationship, first, other, found)

    def _other_identities(self, relationship: dict) -> list[bytes]:
        """What the second end is found by: the mapped target's identities, or to's key."""
        mapping = relationship.get("_mapping")
        if isinstance(mapping, dict):
            return list(self.groups.target_identities(mapping))
        return [key_identity(relationship.get("_toEntityKey"))]

    def _add_relationship(self, relationship: dict, first: bytes, other: list[bytes], found: dict) -> None:
        mapping = relationship.get("_mapping")
        if isinstance(mapping, dict):
            source = self._key_end(mapping.get("sourceEntityKey"), first, found)
            target = self._target_end(mapping, other, found)
            origin, destination = (target, source) if _reverse(mapping) else (source, target)
            ends = [source, target]
        else:
            origin = self._key_end(relationship.get("_fromEntityKey"), first, found)
            destination = self._key_end(relationship.get("_toEntityKey"), other[0], found)
            ends = [origin, destination]
        reason = self._admit(ends)
        if reason is not None:
            self.summary.left_out[reason] += 1
            return
        edge = {
            "label": _text(relationship.get("_class") or relationship.get("displayName")),
            "type": _text(relationship.get("_type")),
            "key": _text(relationship.get("_key")),
            "mapped": isinstance(mapping, dict),
            "props": _props(relationship),
        }
        if isinstance(mapping, dict):
            edge["resolved"] = ends[1].exists
        edge["from"], edge["to"] = origin.node, destination.node
        self.edges.add(edge)
        self.summary.edges += 1

    def _key_end(self, key: Any, identity: bytes, found: dict) -> End:
        if identity in found:
            node = found[identity]
            return End(node=None if node is None else f"n{node}", exists=True)
        text = _text(key)
        if text in self.missing:
            return End(node=self.missing[text])
        return End(new=("missing", text, None))

    def _target_end(self, mapping: dict, identities: list[bytes], found: dict) -> End:
        for identity in identities:
            if identity in found:
                node = found[identity]
                return End(node=None if node is None else f"n{node}", exists=True)
        name = placeholder_identity(mapping)
        if name in self.placeholders:
            return End(node=self.placeholders[name])
        return End(new=("placeholder", name, mapping))

    def _admit(self, ends: list[End]) -> str | None:
        """Why the relationship between ``ends`` is not drawn; None when it is (the nodes it
        needs are added, and each end gets its node)."""
        if any(end.hidden for end in ends):
            return LEFT_OUT_END
        new = {end.new[:2]: end.new for end in ends if end.new is not None}
        if self.limits.types and not all(self._selected(spec, ends) for spec in new.values()):
            return LEFT_OUT_END
        if not self.limits.room(self.nodes.count, len(new)):
            return LEFT_OUT_NODES
        if not self.limits.edge_room(self.summary.edges):
            return LEFT_OUT_EDGES
        made = {key: self._add_node(spec) for key, spec in new.items()}
        for end in ends:
            if end.new is not None:
                end.node = made[end.new[:2]]
        return None

    def _selected(self, spec: tuple[str, Any, Any], ends: list[End]) -> bool:
        """With --type: a placeholder is drawn when its target's _type is selected; a missing
        entity when the relationship's other end is a drawn node."""
        kind, _, mapping = spec
        if kind == "placeholder":
            target = mapping.get("targetEntity")
            return self.limits.selects(_text(target.get("_type")) if isinstance(target, dict) else "")
        return all(end.node is not None for end in ends if end.new != spec)

    def _add_node(self, spec: tuple[str, Any, Any]) -> str:
        kind, name, mapping = spec
        if kind == "missing":
            node_id = self.missing[name] = f"m{len(self.missing)}"
            node = {"id": node_id, "kind": "missing", "type": "", "key": name, "label": "missing entity"}
            self.nodes.add({**node, "duplicate": False, "props": {"_key": name}})
            self.summary.missing += 1
            return node_id
        node_id = self.placeholders[name] = f"p{len(self.placeholders)}"
        node = placeholder_node(node_id, mapping)
        self.nodes.add(node)
        self.summary.placeholders[node["type"]] += 1
        return node_id

    # -- the result

    def legend(self) -> list[dict]:
        """One entry per drawn type: its colour, its nodes, and its entities in the input."""
        drawn = sorted(t for t in set(self.summary.entities) | set(self.summary.placeholders) if self._has_nodes(t))
        return [
            {
                "type": graph_type,
                "color": color_for(graph_type, number),
                "entities": self.summary.entities[graph_type],
                "placeholders": self.summary.placeholders[graph_type],
                "total": self.summary.entity_totals[graph_type],
            }
            for number, graph_type in enumerate(drawn)
        ]

    def _has_nodes(self, graph_type: str) -> bool:
        return self.summary.entities[graph_type] > 0 or self.summary.placeholders[graph_type] > 0

    def write_data(self, out: IO[bytes]) -> None:
        """The page's data, ``{"nodes": [...], "edges": [...], "types": [...]}``, from the spools."""
        out.write(b'{"nodes":[')
        self.nodes.copy_to(out)
        out.write(b'],"edges":[')
        self.edges.copy_to(out)
        out.write(b'],"types":' + script_json(self.legend()).encode("ascii") + b"}")

    def view(self) -> dict:
        """The page's data as one dict (it holds every drawn node and edge: for small graphs and tests)."""
        return {"nodes": self.nodes.values(), "edges": self.edges.values(), "types": self.legend()}


def _batches(objects: Iterable[dict]) -> Iterator[list[dict]]:
    iterator = iter(objects)
    while batch := list(islice(iterator, BATCH)):
        yield batch


def _first_key(relationship: dict) -> Any:
    """The key of a relationship's first end: a mapped relationship's source, else its from."""
    mapping = relationship.get("_mapping")
    return mapping.get("sourceEntityKey") if isinstance(mapping, dict) else relationship.get("_fromEntityKey")


def _reverse(mapping: dict) -> bool:
    return _text(mapping.get("relationshipDirection")).upper() == "REVERSE"


def placeholder_identity(mapping: dict) -> bytes:
    """What names a placeholder: the target's first usable group's values, else all its values."""
    return hashlib.blake2b(canonical(_placeholder_pairs(mapping)).encode(), digest_size=16).digest()


def _placeholder_pairs(mapping: dict) -> list[tuple[str, Any]]:
    found = mapping.get("targetEntity")
    target: dict = found if isinstance(found, dict) else {}
    usable = [g for g in filter_key_groups(mapping) if g and all(k in target for k in g)]
    return [(k, target[k]) for k in usable[0]] if usable else sorted(target.items())


def placeholder_node(node_id: str, mapping: dict) -> dict:
    """The dashed node of a mapped target no entity matches."""
    found = mapping.get("targetEntity")
    target: dict = found if isinstance(found, dict) else {}
    pairs = _placeholder_pairs(mapping)
    props = {
        "targetFilterKeys": _text(mapping.get("targetFilterKeys")),
        **{f"targetEntity.{k}": _text(v) for k, v in target.items()},
    }
    return {
        "id": node_id,
        "kind": "placeholder",
        "type": _text(target.get("_type")),
        "key": ", ".join(f"{k}={_text(v)}" for k, v in pairs) or "(no target values)",
        "label": _label(target) if (target.get("displayName") or target.get("name")) else "(mapped target)",
        "duplicate": False,
        "props": props,
    }


def color_for(graph_type: str, number: int) -> str:
    if number < len(PALETTE):
        return PALETTE[number]
    digest = hashlib.sha256(graph_type.encode()).digest()
    hue, light = digest[0] * 360 // 256, 45 + digest[1] % 20
    return _hsl_to_hex(hue, 0.55, light / 100)


def _hsl_to_hex(h: float, s: float, lightness: float) -> str:
    c = (1 - abs(2 * lightness - 1)) * s
    x = c * (1 - abs((h / 60) % 2 - 1))
    m = lightness - c / 2
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h // 60) % 6]
    return "#" + "".join(f"{round((v + m) * 255):02x}" for v in (r, g, b))


def draw(source: GraphSource, limits: Limits, where: str, scratch: Path | None) -> Drawing:
    """Read ``source`` (its relationships' target groups, its entities, its relationships) into a
    :class:`Drawing`; the caller closes it."""
    drawing = Drawing(limits, TargetGroups.scan(source.mappings()), where, scratch)
    try:
        drawing.add_entities(source.entities())
        drawing.end_entities()
        drawing.add_relationships(source.relationships())
    except BaseException:
        drawing.close()
        raise
    return drawing


# ----------------------------------------------------------------------------------------
# The page


def script_json(data: Any) -> str:
    """JSON safe inside a <script> element: no '<', '>' or '&' (they are \\u-escaped in strings)."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


@lru_cache(maxsize=1)
def _assets() -> tuple[jinja2.Template, str, str]:
    """The page template, its style sheet and its script (package data under tools/assets/).
    Jinja is imported here, not with the module: the command line imports this module to
    build its options, and every command would pay for it."""
    import jinja2

    assets = resources.files("engine.tools").joinpath("assets")
    environment = jinja2.Environment(autoescape=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    page = environment.from_string(assets.joinpath("visualize.html.j2").read_text(encoding="utf-8"))
    style = assets.joinpath("visualize.css").read_text(encoding="utf-8")
    script = assets.joinpath("visualize.js").read_text(encoding="utf-8")
    return page, style, script


DATA_MARK = "\x00graph-data\x00"  # where the data goes; never in the template, nor in escaped text


def page_frame(
    title: str, status: str, *, notice: str | None = None, empty_message: str | None = None
) -> tuple[str, str]:
    """The page before and after its data (no data, and no script, with an ``empty_message``)."""
    from markupsafe import Markup

    page, style, script = _assets()
    if empty_message is not None:
        csp = f"default-src 'none'; style-src {_csp_hash(style)}; base-uri 'none'; form-action 'none'"
    else:
        csp = (
            f"default-src 'none'; script-src {_csp_hash(script)}; style-src {_csp_hash(style)}; "
            f"img-src data:; base-uri 'none'; form-action 'none'"
        )
    text = page.render(
        csp=Markup(html.escape(csp, quote=True)),
        title=title,
        style=Markup(style),
        script=Markup(script),
        data=Markup(DATA_MARK),
        status=status,
        notice=notice,
        empty_message=empty_message,
    )
    before, _, after = text.partition(DATA_MARK)
    return before, after


def render_page(view: dict, title: str, *, empty_message: str | None = None) -> str:
    """The whole page of a small view held in memory (``{"nodes", "edges", "types"}``)."""
    if empty_message is None and not view["nodes"]:
        empty_message = NO_DATA
    entities = sum(1 for n in view["nodes"] if n["kind"] == "entity")
    before, after = page_frame(
        title, f"{entities} entities, {len(view['edges'])} relationships", empty_message=empty_message
    )
    return before + (script_json(view) if empty_message is None else "") + after


def _write_page(drawing: Drawing, output: Path, title: str) -> None:
    """Write the page to ``output`` in pieces, through a temporary file beside it."""
    summary = drawing.summary
    empty = summary.empty_message() if not summary.nodes else None
    before, after = page_frame(title, summary.status(), notice=summary.notice(), empty_message=empty)
    temporary = output.with_name(f".{output.name}.tmp")
    try:
        with temporary.open("wb") as out:
            out.write(before.encode("utf-8"))
            if empty is None:
                drawing.write_data(out)
            out.write(after.encode("utf-8"))
        temporary.replace(output)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise VisualizeError(f"cannot write {output}: {exc.strerror}") from None


def _prepare(output: Path) -> Path:
    """Make ``output``'s folder; it also holds the temporary files of the page's data."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VisualizeError(f"cannot write {output}: {exc.strerror}") from None
    return output.parent


def write_page(
    directory: Path, output: Path, *, types: Iterable[str] = (), max_nodes: int = DEFAULT_MAX_NODES
) -> PageSummary:
    """Write the page of the output directory ``directory`` (or of its graph/ folder) to
    ``output``: what ``etl visualize`` does. A graph file that cannot be read, or a page that
    cannot be written: :class:`VisualizeError`; a ``types`` name no object has: :class:`UsageError`."""
    limits = Limits(frozenset(types), max_nodes)
    try:
        source = DirectorySource.open(directory)
        drawing = draw(source, limits, str(directory), _prepare(output))
    except OutputDirError as exc:
        raise VisualizeError(str(exc)) from None
    try:
        _write_page(drawing, output, f"etl graph: {directory}")
    finally:
        drawing.close()
    return drawing.summary


def write_page_for(
    entities: Iterable[dict],
    relationships: Iterable[dict],
    output: Path,
    title: str,
    *,
    types: Iterable[str] = (),
    max_nodes: int = DEFAULT_MAX_NODES,
) -> PageSummary:
    """Write the page of any graph objects - e.g. a query's answer - to ``output``, titled
    ``title``, with the same limits, look and safety as ``etl visualize``.

    ``entities`` is read once. ``relationships`` is read twice (the targets' filter keys, then
    the edges): as it is when it is a collection (a list), else once into a temporary file
    beside ``output``. Each object is a graph object as an output directory holds it (``_key``,
    ``_type``, ``_class``, ...; relationships with ``_fromEntityKey``/``_toEntityKey`` or a
    ``_mapping``). Returns what was drawn and left out; the caller shows
    :meth:`PageSummary.notice` when it is not None. A page that cannot be written:
    :class:`VisualizeError`; a ``types`` name no object has: :class:`UsageError`."""
    limits = Limits(frozenset(types), max_nodes)
    source = IterableSource(entities, relationships, _prepare(output))
    try:
        drawing = draw(source, limits, title, output.parent)
        try:
            _write_page(drawing, output, title)
        finally:
            drawing.close()
    finally:
        source.close()
    return drawing.summary


def build_view(
    entities: Iterable[dict], relationships: Iterable[dict], *, types: Iterable[str] = (), max_nodes: int = 0
) -> dict:
    """The data a page would draw, ``{"nodes": [...], "edges": [...], "types": [...]}``, as one
    dict (it holds everything drawn: for small graphs and tests). No node limit by default."""
    source = IterableSource(entities, relationships, None)
    try:
        drawing = draw(source, Limits(frozenset(types), max_nodes), "the graph", None)
        try:
            return drawing.view()
        finally:
            drawing.close()
    finally:
        source.close()
