"""What a page draws and what it drew: :class:`Limits` (``--type`` and ``--max-nodes``) and
:class:`PageSummary` (what was drawn and left out, per reason: the command's report, the page's
status line and its notice on how to narrow the view)."""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass, field

from ...errors import UsageError

DEFAULT_MAX_NODES = 2000  # what a browser lays out and draws in a few seconds
EDGES_PER_NODE = 5  # at most max_nodes * EDGES_PER_NODE edges
LISTED_TYPES = 8  # types named in the notice, most entities first
NO_DATA = "There was no data found to visualize."
LEFT_OUT_END = "an end is not drawn"  # an entity not drawn, or a node --type does not select
LEFT_OUT_NODES = "no room for the node an end needs"  # a placeholder or missing entity past --max-nodes
LEFT_OUT_EDGES = f"over the edge limit ({EDGES_PER_NODE} per node)"


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
