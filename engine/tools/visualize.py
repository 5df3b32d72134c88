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
from pathlib import Path
from typing import Any

from ..errors import OutputDirError, VisualizeError
from ..output import OutputDir

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


def filter_key_groups(mapping: dict) -> list[tuple[str, ...]]:
    """``targetFilterKeys`` as a list of AND-groups; the SDK's default is ``[['_type', '_key']]``."""
    keys = mapping.get("targetFilterKeys")
    if not isinstance(keys, list) or not keys:
        return [("_type", "_key")]
    groups = []
    for group in keys:
        if isinstance(group, str):  # the flat form: each key its own group (OR)
            groups.append((group,))
        elif isinstance(group, list):
            groups.append(tuple(str(k) for k in group))
    return groups


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
        target = mapping.get("targetEntity") if isinstance(mapping.get("targetEntity"), dict) else {}
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


def render_page(view: dict, title: str, *, empty_message: str | None = None) -> str:
    style, script = STYLE, SCRIPT
    csp = (
        f"default-src 'none'; script-src {_csp_hash(script)}; style-src {_csp_hash(style)}; "
        f"img-src data:; base-uri 'none'; form-action 'none'"
    )
    if empty_message is not None or not view["nodes"]:
        body = (
            f'<p id="empty" class="empty">{html.escape(empty_message or "There was no data found to visualize.")}</p>'
        )
        csp = f"default-src 'none'; style-src {_csp_hash(style)}; base-uri 'none'; form-action 'none'"
    else:
        entity_count = sum(1 for n in view["nodes"] if n["kind"] == "entity")
        status = f"{entity_count} entities, {len(view['edges'])} relationships"
        body = (
            BODY.replace("%STATUS%", html.escape(status))
            .replace("%DATA%", script_json(view))
            .replace("%SCRIPT%", script)
        )
    return (
        PAGE.replace("%CSP%", html.escape(csp, quote=True))
        .replace("%TITLE%", html.escape(title))
        .replace("%STYLE%", style)
        .replace("%BODY%", body)
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


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="%CSP%">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%TITLE%</title>
<style>%STYLE%</style>
</head>
<body>
<header><h1>%TITLE%</h1></header>
%BODY%
</body>
</html>
"""

BODY = """<main>
<svg id="graph" xmlns="http://www.w3.org/2000/svg" aria-label="graph">
<defs>
<marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#666"/></marker>
</defs>
</svg>
<aside id="side">
<p id="status">%STATUS%</p>
<p class="hint">Drag to pan, wheel to zoom, drag a node to move it, click a node or edge for its properties.</p>
<h2>Legend</h2>
<ul id="legend"></ul>
<ul id="styles">
<li><svg width="28" height="16"><circle cx="14" cy="8" r="6" class="swatch-placeholder"/></svg>dashed node: mapped relationship target not in this graph (placeholder)</li>
<li><svg width="28" height="16"><circle cx="14" cy="8" r="6" class="swatch-missing"/></svg>grey node: a relationship points at a _key with no entity</li>
<li><svg width="28" height="16"><line x1="2" y1="8" x2="26" y2="8" class="swatch-mapped"/></svg>dashed edge: mapped relationship</li>
</ul>
<div id="details"><h2>Details</h2><p class="hint">Nothing selected.</p></div>
</aside>
</main>
<script type="application/json" id="graph-data">%DATA%</script>
<script>%SCRIPT%</script>"""

STYLE = """
html, body { margin: 0; height: 100%; font: 13px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #222; background: #fafafa; }
header { padding: 6px 12px; border-bottom: 1px solid #ddd; background: #fff; }
h1 { font-size: 15px; margin: 0; font-weight: 600; word-break: break-all; }
h2 { font-size: 13px; margin: 12px 0 4px; }
main { display: flex; height: calc(100% - 34px); }
#graph { flex: 1; min-width: 0; height: 100%; cursor: grab; background: #fff; }
#graph.panning { cursor: grabbing; }
#side { width: 320px; overflow: auto; padding: 8px 12px; border-left: 1px solid #ddd; }
#status { font-weight: 600; margin: 0; }
.hint { color: #777; margin: 4px 0; }
ul { list-style: none; padding: 0; margin: 0; }
li { margin: 2px 0; display: flex; align-items: center; gap: 6px; overflow-wrap: anywhere; }
li svg { flex: none; }
.swatch { display: inline-block; flex: none; width: 12px; height: 12px; border-radius: 50%; border: 1px solid #555; }
.swatch-placeholder { fill: #fff; stroke: #555; stroke-width: 1.5; stroke-dasharray: 3 2; }
.swatch-missing { fill: #ccc; stroke: #888; stroke-width: 1.5; stroke-dasharray: 3 2; }
.swatch-mapped { stroke: #666; stroke-width: 1.5; stroke-dasharray: 5 3; }
.empty { padding: 24px; font-size: 15px; }
.edge path { fill: none; stroke: #999; stroke-width: 1.4; }
.edge.mapped path { stroke-dasharray: 6 4; }
.edge text { font-size: 10px; fill: #555; paint-order: stroke; stroke: #fff; stroke-width: 3px; }
.node { cursor: pointer; }
.node circle { stroke: #333; stroke-width: 1.5; }
.node.placeholder circle { fill-opacity: 0.35; stroke-dasharray: 4 3; }
.node.missing circle { stroke: #888; stroke-dasharray: 4 3; }
.node text { font-size: 11px; paint-order: stroke; stroke: #fff; stroke-width: 3px; }
.node .name { font-weight: 600; }
.node .type, .node .key { fill: #555; font-size: 10px; }
.node.duplicate circle { stroke: #d00; stroke-width: 3; }
.selected circle, .edge.selected path { stroke: #d62728; stroke-width: 3; }
.dim { opacity: 0.25; }
#details table { border-collapse: collapse; width: 100%; }
#details td { border-top: 1px solid #eee; padding: 2px 4px; vertical-align: top; word-break: break-all; }
#details td:first-child { color: #555; white-space: nowrap; word-break: normal; }
"""

SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("graph-data").textContent);
  var NS = "http://www.w3.org/2000/svg";
  var nodes = data.nodes, edges = data.edges, byId = {}, colors = {};
  var RADIUS = 14;
  nodes.forEach(function (n) { byId[n.id] = n; });
  data.types.forEach(function (t) { colors[t.type] = t.color; });

  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
    if (parent) { parent.appendChild(e); }
    return e;
  }
  function html(name, text, parent) {
    var e = document.createElement(name);
    if (text !== undefined) { e.textContent = text; }
    if (parent) { parent.appendChild(e); }
    return e;
  }
  function short(text, max) {
    text = String(text);
    return text.length > max ? text.slice(0, max - 1) + "\u2026" : text;
  }

  // -- layout: seeded force-directed, started from one cluster per _type ------------------
  var seed = 1;
  function random() {
    seed = (seed + 0x6D2B79F5) | 0;
    var t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  function layout() {
    var n = nodes.length, groups = {}, order = [];
    nodes.forEach(function (node) {
      var g = node.kind === "missing" ? "" : node.type;
      if (!Object.prototype.hasOwnProperty.call(groups, g)) { groups[g] = []; order.push(g); }
      groups[g].push(node);
    });
    var ring = order.length > 1 ? 90 * Math.sqrt(n) : 0;
    order.forEach(function (g, i) {
      var angle = 2 * Math.PI * i / order.length;
      groups[g].forEach(function (node, j) {
        var r = 50 * Math.sqrt(j), a = j * 2.39996;
        node.x = ring * Math.cos(angle) + r * Math.cos(a) + random();
        node.y = ring * Math.sin(angle) + r * Math.sin(a) + random();
      });
    });
    var links = [];
    edges.forEach(function (e) {
      var a = byId[e.from], b = byId[e.to];
      if (a && b && a !== b) { links.push([a, b]); }
    });
    var k = 150, gravity = 0.04;
    var iterations = Math.max(10, Math.min(400, Math.floor(4e7 / Math.max(1, n * n))));
    var temperature = 200;
    for (var it = 0; it < iterations; it++) {
      var i, j, a, b, dx, dy, d2, d, f;
      for (i = 0; i < n; i++) { nodes[i].dx = 0; nodes[i].dy = 0; }
      for (i = 0; i < n; i++) {
        a = nodes[i];
        for (j = i + 1; j < n; j++) {
          b = nodes[j]; dx = a.x - b.x; dy = a.y - b.y; d2 = dx * dx + dy * dy;
          if (d2 < 0.01) { dx = random() - 0.5; dy = random() - 0.5; d2 = 0.01; }
          f = k * k / d2;
          a.dx += dx * f; a.dy += dy * f; b.dx -= dx * f; b.dy -= dy * f;
        }
      }
      for (i = 0; i < links.length; i++) {
        a = links[i][0]; b = links[i][1]; dx = a.x - b.x; dy = a.y - b.y;
        d = Math.sqrt(dx * dx + dy * dy) || 0.01; f = d / k;
        a.dx -= dx * f; a.dy -= dy * f; b.dx += dx * f; b.dy += dy * f;
      }
      for (i = 0; i < n; i++) {
        a = nodes[i];
        a.dx -= a.x * gravity * k / 10; a.dy -= a.y * gravity * k / 10;
        d = Math.sqrt(a.dx * a.dx + a.dy * a.dy);
        if (d > 0) { f = Math.min(d, temperature) / d; a.x += a.dx * f; a.y += a.dy * f; }
      }
      temperature = Math.max(2, temperature * 0.97);
    }
  }

  // -- drawing -----------------------------------------------------------------------------
  var svg = document.getElementById("graph");
  var viewport = el("g", {id: "viewport"}, svg);
  var edgeLayer = el("g", {id: "edges"}, viewport);
  var nodeLayer = el("g", {id: "nodes"}, viewport);

  function edgePath(e) {
    var a = byId[e.from], b = byId[e.to];
    if (a === b) {
      return "M" + (a.x - 8) + "," + (a.y - RADIUS + 2) + " C" + (a.x - 50) + "," + (a.y - 80) + " " +
        (a.x + 50) + "," + (a.y - 80) + " " + (a.x + 8) + "," + (a.y - RADIUS + 2);
    }
    var dx = b.x - a.x, dy = b.y - a.y, d = Math.sqrt(dx * dx + dy * dy) || 1;
    var ux = dx / d, uy = dy / d;
    return "M" + (a.x + ux * RADIUS) + "," + (a.y + uy * RADIUS) + " L" + (b.x - ux * (RADIUS + 2)) + "," +
      (b.y - uy * (RADIUS + 2));
  }
  function placeEdge(e) {
    var a = byId[e.from], b = byId[e.to];
    e.path.setAttribute("d", edgePath(e));
    var mx = (a.x + b.x) / 2, my = (a.y + b.y) / 2 - (a === b ? 62 : 4);
    e.text.setAttribute("x", mx); e.text.setAttribute("y", my);
  }
  function placeNode(node) {
    node.g.setAttribute("transform", "translate(" + node.x + "," + node.y + ")");
  }

  function draw() {
    edges.forEach(function (e) {
      var g = el("g", {"class": "edge" + (e.mapped ? " mapped" : ""), "data-key": e.key}, edgeLayer);
      e.path = el("path", {"marker-end": "url(#arrow)"}, g);
      e.text = el("text", {"class": "edge-label", "text-anchor": "middle"}, g);
      e.text.textContent = e.label;
      el("title", {}, g).textContent = e.label + " (" + e.type + ")\n" + e.key;
      e.g = g;
      g.addEventListener("click", function (event) { event.stopPropagation(); select(e, false); });
    });
    nodes.forEach(function (node) {
      var classes = "node " + node.kind + (node.duplicate ? " duplicate" : "");
      var g = el("g", {"class": classes, "data-key": node.key, "data-type": node.type}, nodeLayer);
      var circle = el("circle", {r: RADIUS}, g);
      circle.setAttribute("fill", node.kind === "missing" ? "#cccccc" : (colors[node.type] || "#cccccc"));
      var text = el("text", {"text-anchor": "middle", y: RADIUS + 13}, g);
      var lines = [
        ["name", (node.duplicate ? "[DUPLICATE _KEY] " : "") + node.label],
        ["type", node.kind === "missing" ? "[no entity]" : "[" + node.type + "]"],
        ["key", node.key]
      ];
      lines.forEach(function (line, i) {
        var span = el("tspan", {"class": line[0], x: 0, dy: i === 0 ? 0 : 13}, text);
        span.textContent = short(line[1], 48);
      });
      el("title", {}, g).textContent = lines.map(function (l) { return l[1]; }).join("\n");
      node.g = g;
      placeNode(node);
      g.addEventListener("pointerdown", function (event) { startDrag(event, node); });
      g.addEventListener("click", function (event) { event.stopPropagation(); if (!moved) { select(node, true); } });
    });
    edges.forEach(placeEdge);
  }

  function legend() {
    var list = document.getElementById("legend");
    data.types.forEach(function (t) {
      var item = html("li", undefined, list);
      item.className = "legend-entry";
      item.setAttribute("data-type", t.type);
      var swatch = html("span", undefined, item);
      swatch.className = "swatch";
      swatch.style.backgroundColor = t.color;
      var parts = [];
      if (t.entities) { parts.push(t.entities + (t.entities === 1 ? " entity" : " entities")); }
      if (t.placeholders) { parts.push(t.placeholders + " placeholder" + (t.placeholders === 1 ? "" : "s")); }
      html("span", (t.type || "(no _type)") + " (" + parts.join(", ") + ")", item);
    });
  }

  // -- selection and details ---------------------------------------------------------------
  var selected = null;
  function select(item, isNode) {
    if (selected) { selected.g.classList.remove("selected"); }
    selected = item;
    item.g.classList.add("selected");
    var details = document.getElementById("details");
    while (details.firstChild) { details.removeChild(details.firstChild); }
    html("h2", isNode ? (item.kind === "placeholder" ? "Placeholder (mapped target)" :
      item.kind === "missing" ? "Missing entity" : "Entity") : (item.mapped ? "Mapped relationship" : "Relationship"),
      details);
    var table = html("table", undefined, details);
    Object.keys(item.props || {}).forEach(function (name) {
      var row = html("tr", undefined, table);
      html("td", name, row);
      html("td", item.props[name], row);
    });
    nodes.forEach(function (n) { n.g.classList.toggle("dim", isNode && n !== item && !linked(n, item)); });
    edges.forEach(function (e) { e.g.classList.toggle("dim", isNode ? (e.from !== item.id && e.to !== item.id) : e !== item); });
  }
  function linked(a, b) {
    return edges.some(function (e) { return (e.from === a.id && e.to === b.id) || (e.to === a.id && e.from === b.id); });
  }
  function clearSelection() {
    if (selected) { selected.g.classList.remove("selected"); selected = null; }
    nodes.forEach(function (n) { n.g.classList.remove("dim"); });
    edges.forEach(function (e) { e.g.classList.remove("dim"); });
  }

  // -- pan, zoom, drag ---------------------------------------------------------------------
  var view = {x: 0, y: 0, w: 1, h: 1};
  function applyView() { svg.setAttribute("viewBox", view.x + " " + view.y + " " + view.w + " " + view.h); }
  function fit() {
    var minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
    nodes.forEach(function (n) {
      minX = Math.min(minX, n.x - 130); maxX = Math.max(maxX, n.x + 130);
      minY = Math.min(minY, n.y - 40); maxY = Math.max(maxY, n.y + 60);
    });
    var w = Math.max(maxX - minX, 700), h = Math.max(maxY - minY, 450);
    view = {x: (minX + maxX - w) / 2, y: (minY + maxY - h) / 2, w: w, h: h};
    applyView();
  }
  function toGraph(event) {
    var rect = svg.getBoundingClientRect();
    var scale = Math.max(view.w / rect.width, view.h / rect.height);
    var ox = view.x + (view.w - rect.width * scale) / 2, oy = view.y + (view.h - rect.height * scale) / 2;
    return {x: ox + (event.clientX - rect.left) * scale, y: oy + (event.clientY - rect.top) * scale, scale: scale};
  }
  var drag = null, moved = false;
  function startDrag(event, node) {
    event.stopPropagation();
    var p = toGraph(event);
    drag = {node: node, x: p.x, y: p.y, cx: event.clientX, cy: event.clientY};
    moved = false;
  }
  svg.addEventListener("pointerdown", function (event) {
    var p = toGraph(event);
    drag = {node: null, x: event.clientX, y: event.clientY, cx: event.clientX, cy: event.clientY,
            vx: view.x, vy: view.y, scale: p.scale};
    moved = false;
    svg.classList.add("panning");
  });
  window.addEventListener("pointermove", function (event) {
    if (!drag) { return; }
    if (Math.abs(event.clientX - drag.cx) + Math.abs(event.clientY - drag.cy) > 3) { moved = true; }
    if (!moved) { return; }
    if (drag.node) {
      var p = toGraph(event);
      drag.node.x += p.x - drag.x; drag.node.y += p.y - drag.y; drag.x = p.x; drag.y = p.y;
      placeNode(drag.node);
      edges.forEach(function (e) { if (e.from === drag.node.id || e.to === drag.node.id) { placeEdge(e); } });
    } else {
      view.x = drag.vx - (event.clientX - drag.x) * drag.scale;
      view.y = drag.vy - (event.clientY - drag.y) * drag.scale;
      applyView();
    }
  });
  window.addEventListener("pointerup", function () { drag = null; svg.classList.remove("panning"); });
  svg.addEventListener("click", function () { if (!moved) { clearSelection(); } });
  svg.addEventListener("wheel", function (event) {
    event.preventDefault();
    var p = toGraph(event), factor = event.deltaY > 0 ? 1.15 : 1 / 1.15;
    view.x = p.x - (p.x - view.x) * factor; view.y = p.y - (p.y - view.y) * factor;
    view.w *= factor; view.h *= factor;
    applyView();
  }, {passive: false});

  layout();
  draw();
  legend();
  fit();
  document.body.setAttribute("data-rendered", nodes.length + " nodes, " + edges.length + " edges");
})();
"""
