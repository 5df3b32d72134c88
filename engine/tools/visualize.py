"""Draw an output directory's graph as one self-contained HTML page.

Like the JupiterOne SDK's ``j1-integration visualize``, without loading anything from the
internet: the graph is embedded as JSON, and a small script in the page lays it out
(force-directed, seeded, so the same data gives the same picture) and draws it in SVG.

* Nodes are entities, coloured by ``_type`` (see the legend), labelled with displayName,
  ``[_type]`` and ``_key``; a repeated ``_key`` gets its own node marked ``[DUPLICATE _KEY]``.
* Edges are relationships, labelled with their ``_class``, drawn from ``_fromEntityKey``
  to ``_toEntityKey``; an endpoint with no entity becomes a "missing entity" node.
* A mapped relationship's target is resolved against the entities with its
  ``targetFilterKeys`` (OR of ANDs; ``_class`` matched as a subset). When nothing
  matches, it points at a dashed placeholder node built from the target's filter-key
  values (one per distinct target). The edge follows ``relationshipDirection``.

Every text is escaped: the data is JSON with ``<``, ``>`` and ``&`` escaped, and the
script only ever sets ``textContent``. A Content-Security-Policy allows nothing but the
page's own script and style (by hash), so even a label that got through could not run.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from ..errors import OutputDirError, VisualizeError
from ..output import OutputDir
from ..store.targets import filter_key_groups  # the mapper's rules, shared with the store

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


# ----------------------------------------------------------------------------------------
# Reading


def load_graph(directory: Path) -> tuple[list[dict], list[dict]]:
    """Every entity and relationship of an output directory (or of its graph/ folder)."""
    try:
        output = OutputDir.open(directory, summary_required=False)
        return list(output.objects("entities")), list(output.objects("relationships"))
    except OutputDirError as exc:
        raise VisualizeError(str(exc)) from None


# ----------------------------------------------------------------------------------------
# The view: nodes, edges, types


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _label(obj: dict) -> str:
    for name in ("displayName", "name", "_key"):
        if obj.get(name) not in (None, ""):
            return _text(obj[name])
    return ""


def _props(obj: dict) -> dict[str, str]:
    out = {}
    for name, value in obj.items():
        if name == "_rawData":
            continue
        text = _text(value)
        out[name] = text if len(text) <= MAX_PROPERTY_CHARS else text[:MAX_PROPERTY_CHARS] + "..."
    return out


def _classes(value: Any) -> set[str]:
    if isinstance(value, list):
        return {str(v) for v in value}
    return set() if value is None else {str(value)}


def _norm(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


class TargetResolver:
    """Finds the entity a mapped relationship's target filter keys select."""

    def __init__(self, entities: list[tuple[str, dict]]):
        self.entities = entities  # (node id, entity), first occurrence of each _key
        self.indexes: dict[tuple[str, ...], dict[str, list[tuple[str, dict]]]] = {}

    def index(self, keys: tuple[str, ...]) -> dict[str, list[tuple[str, dict]]]:
        if keys not in self.indexes:
            index: dict[str, list[tuple[str, dict]]] = {}
            for node_id, entity in self.entities:
                if all(k in entity for k in keys):
                    index.setdefault(_norm([entity[k] for k in keys]), []).append((node_id, entity))
            self.indexes[keys] = index
        return self.indexes[keys]

    def resolve(self, mapping: dict) -> str | None:
        target = mapping.get("targetEntity")
        if not isinstance(target, dict):
            return None
        for group in filter_key_groups(mapping):
            if not group or not all(k in target for k in group):
                continue
            plain = tuple(k for k in group if k != "_class")
            candidates = self.index(plain).get(_norm([target[k] for k in plain]), []) if plain else self.entities
            wanted = _classes(target.get("_class")) if "_class" in group else set()
            for node_id, entity in candidates:
                if wanted <= _classes(entity.get("_class")):
                    return node_id
        return None


def build_view(entities: list[dict], relationships: list[dict]) -> dict:
    """The data the page draws: ``{"nodes": [...], "edges": [...], "types": [...]}``."""
    nodes: list[dict] = []
    by_key: dict[str, str] = {}
    firsts: list[tuple[str, dict]] = []
    for entity in entities:
        key = _text(entity.get("_key"))
        node_id = f"n{len(nodes)}"
        duplicate = key in by_key
        if not duplicate:
            by_key[key] = node_id
            firsts.append((node_id, entity))
        nodes.append(
            {
                "id": node_id,
                "kind": "entity",
                "type": _text(entity.get("_type")),
                "key": key,
                "label": _label(entity),
                "duplicate": duplicate,
                "props": _props(entity),
            }
        )
    resolver = TargetResolver(firsts)
    placeholders: dict[str, str] = {}
    missing: dict[str, str] = {}

    def endpoint(key: Any) -> str:
        key = _text(key)
        if key in by_key:
            return by_key[key]
        if key not in missing:
            missing[key] = f"m{len(missing)}"
            nodes.append(
                {
                    "id": missing[key],
                    "kind": "missing",
                    "type": "",
                    "key": key,
                    "label": "missing entity",
                    "duplicate": False,
                    "props": {"_key": key},
                }
            )
        return missing[key]

    def placeholder(mapping: dict) -> str:
        found = mapping.get("targetEntity")
        target: dict = found if isinstance(found, dict) else {}
        usable = [g for g in filter_key_groups(mapping) if g and all(k in target for k in g)]
        pairs = [(k, target[k]) for k in usable[0]] if usable else sorted(target.items())
        identity = _norm(pairs)
        if identity not in placeholders:
            placeholders[identity] = f"p{len(placeholders)}"
            shown = ", ".join(f"{k}={_text(v)}" for k, v in pairs) or "(no target values)"
            props = {
                "targetFilterKeys": _text(mapping.get("targetFilterKeys")),
                **{f"targetEntity.{k}": _text(v) for k, v in target.items()},
            }
            nodes.append(
                {
                    "id": placeholders[identity],
                    "kind": "placeholder",
                    "type": _text(target.get("_type")),
                    "key": shown,
                    "label": _label(target) if (target.get("displayName") or target.get("name")) else "(mapped target)",
                    "duplicate": False,
                    "props": props,
                }
            )
        return placeholders[identity]

    edges = []
    for relationship in relationships:
        label = _text(relationship.get("_class") or relationship.get("displayName"))
        mapping = relationship.get("_mapping")
        edge = {
            "label": label,
            "type": _text(relationship.get("_type")),
            "key": _text(relationship.get("_key")),
            "mapped": isinstance(mapping, dict),
            "props": _props(relationship),
        }
        if isinstance(mapping, dict):
            source = endpoint(mapping.get("sourceEntityKey"))
            target = resolver.resolve(mapping)
            edge["resolved"] = target is not None
            target = target or placeholder(mapping)
            reverse = _text(mapping.get("relationshipDirection")).upper() == "REVERSE"
            edge["from"], edge["to"] = (target, source) if reverse else (source, target)
        else:
            edge["from"] = endpoint(relationship.get("_fromEntityKey"))
            edge["to"] = endpoint(relationship.get("_toEntityKey"))
        edges.append(edge)

    return {"nodes": nodes, "edges": edges, "types": type_legend(nodes)}


def type_legend(nodes: Iterable[dict]) -> list[dict]:
    counts: dict[str, list[int]] = {}
    for node in nodes:
        if node["kind"] == "missing":
            continue
        slot = counts.setdefault(node["type"], [0, 0])
        slot[0 if node["kind"] == "entity" else 1] += 1
    legend = []
    for number, graph_type in enumerate(sorted(counts)):
        entities, placeholders = counts[graph_type]
        legend.append(
            {
                "type": graph_type,
                "color": color_for(graph_type, number),
                "entities": entities,
                "placeholders": placeholders,
            }
        )
    return legend


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
    """The page template, its style sheet and its script (package data under tools/assets/)."""
    assets = resources.files("engine.tools").joinpath("assets")
    environment = jinja2.Environment(autoescape=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    page = environment.from_string(assets.joinpath("visualize.html.j2").read_text(encoding="utf-8"))
    style = assets.joinpath("visualize.css").read_text(encoding="utf-8")
    script = assets.joinpath("visualize.js").read_text(encoding="utf-8")
    return page, style, script


def render_page(view: dict, title: str, *, empty_message: str | None = None) -> str:
    """The HTML page: ``view`` embedded as JSON, the style and script allowed by their hashes."""
    page, style, script = _assets()
    if empty_message is None and not view["nodes"]:
        empty_message = "There was no data found to visualize."
    if empty_message is not None:
        csp = f"default-src 'none'; style-src {_csp_hash(style)}; base-uri 'none'; form-action 'none'"
    else:
        csp = (
            f"default-src 'none'; script-src {_csp_hash(script)}; style-src {_csp_hash(style)}; "
            f"img-src data:; base-uri 'none'; form-action 'none'"
        )
    entity_count = sum(1 for n in view["nodes"] if n["kind"] == "entity")
    return page.render(
        csp=Markup(html.escape(csp, quote=True)),
        title=title,
        style=Markup(style),
        script=Markup(script),
        data=Markup(script_json(view)),
        status=f"{entity_count} entities, {len(view['edges'])} relationships",
        empty_message=empty_message,
    )


def write_page(directory: Path, output: Path) -> dict:
    """Write the page for ``directory`` to ``output``; returns the view (empty when there is no data)."""
    entities, relationships = load_graph(directory)
    view = build_view(entities, relationships)
    title = f"etl graph: {directory}"
    empty = None if view["nodes"] else f"{directory}: There was no data found to visualize."
    page = render_page(view, title, empty_message=empty)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        temporary = output.with_name(f".{output.name}.tmp")
        temporary.write_text(page, encoding="utf-8")
        temporary.replace(output)
    except OSError as exc:
        raise VisualizeError(f"cannot write {output}: {exc.strerror}") from None
    return view
