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

  function countText(t) {
    var parts = [];
    if (t.entities) {
      var of = t.total > t.entities ? " of " + t.total.toLocaleString("en-US") : "";
      parts.push(t.entities.toLocaleString("en-US") + of + (t.entities === 1 && !of ? " entity" : " entities"));
    }
    if (t.placeholders) { parts.push(t.placeholders + " placeholder" + (t.placeholders === 1 ? "" : "s")); }
    return (t.type || "(no _type)") + " (" + parts.join(", ") + ")";
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
      html("span", countText(t), item);
      var box = html("input", undefined, item);
      box.type = "checkbox";
      box.title = "show " + (t.type || "(no _type)");
      box.checked = !hiddenTypes[t.type];
      item.classList.toggle("off", !box.checked);
      box.addEventListener("change", function () {
        hiddenTypes[t.type] = !box.checked;
        item.classList.toggle("off", !box.checked);
        applyFilters();
        saveState();
      });
      item.addEventListener("click", function (event) {  // the whole entry toggles its box
        if (event.target !== box) { box.click(); }
      });
    });
  }

  // -- search and type toggles (state kept in the address: #search=TEXT&hide=TYPE,TYPE) ---
  var hiddenTypes = {}, search = document.getElementById("search"), query = "";
  function nodeMatches(node, q) {
    return [node.key, node.label, node.type].some(function (s) { return String(s).toLowerCase().indexOf(q) >= 0; });
  }
  function applyFilters() {
    query = search.value.trim().toLowerCase();
    var count = 0;
    nodes.forEach(function (n) {
      n.hidden = n.kind !== "missing" && hiddenTypes[n.type] === true;
      n.match = !n.hidden && query !== "" && nodeMatches(n, query);
      if (n.match) { count++; }
      n.g.classList.toggle("hidden", n.hidden);
      n.g.classList.toggle("match", n.match);
      n.g.classList.toggle("unmatched", query !== "" && !n.match);
    });
    edges.forEach(function (e) {
      var a = byId[e.from], b = byId[e.to];
      e.g.classList.toggle("hidden", a.hidden || b.hidden);
      e.g.classList.toggle("unmatched", query !== "" && !a.match && !b.match);
    });
    document.getElementById("matches").textContent = query === "" ? "Enter: zoom to the matches." :
      count + " of " + nodes.length + " nodes match" + (count ? "; Enter: zoom to them." : ".");
    document.body.setAttribute("data-matches", String(count));
  }
  function saveState() {
    var parts = [];
    if (search.value) { parts.push("search=" + encodeURIComponent(search.value)); }
    var hidden = Object.keys(hiddenTypes).filter(function (t) { return hiddenTypes[t]; });
    if (hidden.length) { parts.push("hide=" + hidden.map(encodeURIComponent).join(",")); }
    try { history.replaceState(null, "", parts.length ? "#" + parts.join("&") : location.pathname); } catch (err) { /* a file: page may refuse */ }
  }
  function loadState() {
    location.hash.replace(/^#/, "").split("&").forEach(function (part) {
      var eq = part.indexOf("="), name = part.slice(0, eq), value;
      if (eq < 0) { return; }
      try { value = decodeURIComponent(part.slice(eq + 1)); } catch (err) { return; }
      if (name === "search") { search.value = value; }
      if (name === "hide") {
        part.slice(eq + 1).split(",").forEach(function (t) {
          try { hiddenTypes[decodeURIComponent(t)] = true; } catch (err) { /* ignored */ }
        });
      }
    });
  }
  search.addEventListener("input", function () { applyFilters(); saveState(); });
  search.addEventListener("keydown", function (event) {
    if (event.key !== "Enter") { return; }
    var found = nodes.filter(function (n) { return n.match; });
    if (found.length) { fit(found); }
  });

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
    var near = isNode ? neighbours(item) : {};
    nodes.forEach(function (n) { n.g.classList.toggle("dim", isNode && n !== item && !near[n.id]); });
    edges.forEach(function (e) { e.g.classList.toggle("dim", isNode ? (e.from !== item.id && e.to !== item.id) : e !== item); });
  }
  function neighbours(node) {
    var near = {};
    edges.forEach(function (e) {
      if (e.from === node.id) { near[e.to] = true; }
      if (e.to === node.id) { near[e.from] = true; }
    });
    return near;
  }
  function clearSelection() {
    if (selected) { selected.g.classList.remove("selected"); selected = null; }
    nodes.forEach(function (n) { n.g.classList.remove("dim"); });
    edges.forEach(function (e) { e.g.classList.remove("dim"); });
  }

  // -- pan, zoom, drag ---------------------------------------------------------------------
  var view = {x: 0, y: 0, w: 1, h: 1};
  function applyView() { svg.setAttribute("viewBox", view.x + " " + view.y + " " + view.w + " " + view.h); }
  function fit(shown) {
    var minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
    (shown || nodes).forEach(function (n) {
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
  loadState();
  legend();
  applyFilters();
  fit();
  document.body.setAttribute("data-rendered", nodes.length + " nodes, " + edges.length + " edges");
})();
