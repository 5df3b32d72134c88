"""What the page draws, decided object by object (:class:`Drawing`, filled by :func:`draw`):
the entity nodes, the edges, and the placeholders and missing entities the edges need, within
the :class:`~.limits.Limits`; the legend and its colours. The nodes and edges are spooled to
temporary files as they are decided."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, Any

from ...output import RAW_DATA
from .identities import IdentityIndex, TargetGroups, as_text, key_identity, placeholder_identity, placeholder_pairs
from .limits import LEFT_OUT_EDGES, LEFT_OUT_END, LEFT_OUT_NODES, Limits, PageSummary
from .sources import GraphSource
from .spool import Spool, script_json

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
PLACEHOLDER_SHARE = 4  # when entities are cut, 1/PLACEHOLDER_SHARE of the nodes is kept for the targets they map to
BATCH = 1000  # objects decided together (their identities looked up in one go)


def _label(obj: dict) -> str:
    for name in ("displayName", "name", "_key"):
        if obj.get(name) not in (None, ""):
            return as_text(obj[name])
    return ""


def _props(obj: dict) -> dict[str, str]:
    out = {}
    for name, value in obj.items():
        if name == RAW_DATA:
            continue
        text = as_text(value)
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
        graph_type = as_text(entity.get("_type"))
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
                "key": as_text(entity.get("_key")),
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
            "label": as_text(relationship.get("_class") or relationship.get("displayName")),
            "type": as_text(relationship.get("_type")),
            "key": as_text(relationship.get("_key")),
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
        text = as_text(key)
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
            return self.limits.selects(as_text(target.get("_type")) if isinstance(target, dict) else "")
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
    return as_text(mapping.get("relationshipDirection")).upper() == "REVERSE"


def placeholder_node(node_id: str, mapping: dict) -> dict:
    """The dashed node of a mapped target no entity matches."""
    found = mapping.get("targetEntity")
    target: dict = found if isinstance(found, dict) else {}
    pairs = placeholder_pairs(mapping)
    props = {
        "targetFilterKeys": as_text(mapping.get("targetFilterKeys")),
        **{f"targetEntity.{k}": as_text(v) for k, v in target.items()},
    }
    return {
        "id": node_id,
        "kind": "placeholder",
        "type": as_text(target.get("_type")),
        "key": ", ".join(f"{k}={as_text(v)}" for k, v in pairs) or "(no target values)",
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
