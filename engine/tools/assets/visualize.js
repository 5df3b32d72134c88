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
