"""etl visualize: the data the page draws, the page itself (escaping, no network, its CSP), and
what headless Chromium actually shows once the page's script has run."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from engine.tools import visualize
from engine.tools.visualize.limits import EDGES_PER_NODE
from engine.tools.visualize.page import render_page
from engine.tools.visualize.sources import DirectorySource
from tests.conftest import MAPPINGS

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless Chromium is not installed at /usr/bin/chromium (Debian: apt-get install -y chromium)",
)

HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=\"document.body.dataset.pwned='yes'\">"


@pytest.fixture(scope="module")
def digicert_output(tmp_path_factory) -> Path:
    from click.testing import CliRunner

    from engine.cli import main

    out = tmp_path_factory.mktemp("digicert") / "out"
    result = CliRunner().invoke(main, ["run", str(MAPPINGS / "digicert.yaml"), "--offline", "--output", str(out)])
    assert result.exit_code == 0, result.output
    return out


def write_graph(root: Path, entities: list[dict], relationships: list[dict] = ()) -> Path:
    (root / "graph" / "step" / "entities").mkdir(parents=True)
    (root / "graph" / "step" / "relationships").mkdir(parents=True)
    (root / "graph" / "step" / "entities" / "a.json").write_text(json.dumps({"entities": entities}))
    (root / "graph" / "step" / "relationships" / "a.json").write_text(
        json.dumps({"relationships": list(relationships)})
    )
    (root / "summary.json").write_text(
        json.dumps({"integrationStepResults": [], "metadata": {"partialDatasets": {"types": []}}})
    )
    return root


def ent(key: str, graph_type: str = "acme_host", classes=("Host",), **props) -> dict:
    return {"_key": key, "_type": graph_type, "_class": list(classes), "name": key, "displayName": key, **props}


def mapped(source: str, target: dict, filter_keys, direction: str = "FORWARD", cls: str = "HAS") -> dict:
    return {
        "_key": f"{source}|{cls.lower()}|{direction}:{json.dumps(target)}",
        "_type": f"acme_host_{cls.lower()}_x",
        "_class": cls,
        "displayName": cls,
        "_mapping": {
            "relationshipDirection": direction,
            "sourceEntityKey": source,
            "targetFilterKeys": filter_keys,
            "targetEntity": target,
        },
    }


def view_of(root: Path, **limits) -> dict:
    source = DirectorySource.open(root)
    return visualize.build_view(source.entities(), source.relationships(), **limits)


def node_by_key(view: dict, key: str) -> dict:
    (node,) = [n for n in view["nodes"] if n["key"] == key and n["kind"] == "entity" and not n["duplicate"]]
    return node


# -- the data ------------------------------------------------------------------------------


def test_digicert_view(digicert_output):
    view = view_of(digicert_output)
    kinds = [n["kind"] for n in view["nodes"]]
    assert kinds.count("entity") == 11 and kinds.count("missing") == 0
    placeholders = [n for n in view["nodes"] if n["kind"] == "placeholder"]
    domains = {
        "www.example.com",
        "example.com",
        "shop.example.com",
        "checkout.example.com",
        "pending.example.com",
        "example.org",
        "api.example.org",
        "old.example.net",
    }
    assert {n["label"] for n in placeholders} == domains  # one per distinct target, not per relationship
    assert {n["key"] for n in placeholders} == {f"_class=Domain, domainName={d}" for d in domains}
    assert {n["type"] for n in placeholders} == {"domain"}

    assert len(view["edges"]) == 19 and {e["label"] for e in view["edges"]} == {"HAS"}
    by_id = {n["id"]: n for n in view["nodes"]}
    mapped_edges = [e for e in view["edges"] if e["mapped"]]
    assert len(mapped_edges) == 9 and not any(e["resolved"] for e in mapped_edges)
    # REVERSE: the Domain HAS the certificate, so the edge starts at the placeholder.
    assert all(
        by_id[e["from"]]["kind"] == "placeholder" and by_id[e["to"]]["type"] == "digicert_certificate"
        for e in mapped_edges
    )
    user = node_by_key(view, "digicert_user:1234567:2000001")
    assert (user["label"], user["type"]) == ("alice.admin@example.com", "digicert_user")
    assert "_rawData" not in user["props"] and user["props"]["email"] == "alice.admin@example.com"

    legend = {t["type"]: (t["entities"], t["placeholders"]) for t in view["types"]}
    assert legend == {
        "digicert_account": (1, 0),
        "digicert_certificate": (5, 0),
        "digicert_user": (5, 0),
        "domain": (0, 8),
    }
    colors = [t["color"] for t in view["types"]]
    assert len(set(colors)) == 4 and all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colors)


def test_mapped_targets_resolve_to_real_nodes(tmp_path):
    entities = [
        ent("acme_host:1"),
        ent("acme_domain:example.com", "acme_domain", ("Domain", "Zone"), domainName="example.com"),
        ent("acme_user:alice", "acme_user", ("User",), email="alice@example.com"),
    ]
    relationships = [
        # _class matched as a subset; the edge follows the direction
        mapped("acme_host:1", {"_class": "Domain", "domainName": "example.com"}, [["_class", "domainName"]], "REVERSE"),
        # OR of AND-groups: the first group cannot be used (no _key), the second matches
        mapped("acme_host:1", {"_type": "acme_user", "email": "alice@example.com"}, [["_type", "_key"], ["email"]]),
        # the default filter keys are _type and _key
        {
            "_key": "acme_host:1|uses|acme_user:alice",
            "_type": "x",
            "_class": "USES",
            "_mapping": {
                "sourceEntityKey": "acme_host:1",
                "targetEntity": {"_type": "acme_user", "_key": "acme_user:alice"},
            },
        },
        # no match: a class the entity does not have
        mapped("acme_host:1", {"_class": "Host", "domainName": "example.com"}, [["_class", "domainName"]]),
    ]
    view = view_of(write_graph(tmp_path, entities, relationships))
    host, domain, user = (node_by_key(view, e["_key"])["id"] for e in entities)
    edges = view["edges"]
    assert (edges[0]["from"], edges[0]["to"], edges[0]["resolved"]) == (domain, host, True)
    assert (edges[1]["from"], edges[1]["to"], edges[1]["resolved"]) == (host, user, True)
    assert (edges[2]["from"], edges[2]["to"], edges[2]["label"]) == (host, user, "USES")
    assert edges[3]["resolved"] is False
    (placeholder,) = [n for n in view["nodes"] if n["kind"] == "placeholder"]
    assert edges[3]["to"] == placeholder["id"] and placeholder["key"] == "_class=Host, domainName=example.com"
    assert placeholder["label"] == "(mapped target)"


def test_duplicate_keys_and_dangling_relationships(tmp_path):
    entities = [ent("acme_host:1"), ent("acme_host:1", displayName="again"), ent("acme_host:2")]
    relationships = [
        {
            "_key": "acme_host:1|has|acme_host:2",
            "_type": "acme_host_has_host",
            "_class": "HAS",
            "_fromEntityKey": "acme_host:1",
            "_toEntityKey": "acme_host:2",
        },
        {
            "_key": "acme_host:2|has|acme_host:404",
            "_type": "acme_host_has_host",
            "_class": "HAS",
            "_fromEntityKey": "acme_host:2",
            "_toEntityKey": "acme_host:404",
        },
    ]
    view = view_of(write_graph(tmp_path, entities, relationships))
    first, second = [n for n in view["nodes"] if n["key"] == "acme_host:1"]
    assert (first["duplicate"], second["duplicate"], second["label"]) == (False, True, "again")
    assert view["edges"][0]["from"] == first["id"]
    (missing,) = [n for n in view["nodes"] if n["kind"] == "missing"]
    assert missing["key"] == "acme_host:404" and view["edges"][1]["to"] == missing["id"]
    assert [t["type"] for t in view["types"]] == ["acme_host"]


def test_the_graph_folder_itself_can_be_given(digicert_output):
    assert len(view_of(digicert_output / "graph")["nodes"]) == len(view_of(digicert_output)["nodes"])


# -- the page ------------------------------------------------------------------------------


def hostile_graph(root: Path) -> Path:
    return write_graph(
        root,
        [ent("acme_host:evil", displayName=HOSTILE, note="</script><script>alert(1)</script>"), ent("acme_host:ok")],
        [
            {
                "_key": "acme_host:evil|has|acme_host:ok",
                "_type": "acme_host_has_host",
                "_class": "HAS",
                "_fromEntityKey": "acme_host:evil",
                "_toEntityKey": "acme_host:ok",
            }
        ],
    )


def test_the_page_escapes_every_text(tmp_path):
    root = hostile_graph(tmp_path / "out")
    page_path = tmp_path / "page.html"
    visualize.write_page(root, page_path)
    page = page_path.read_text()
    assert HOSTILE not in page and "<img" not in page and "alert(1)</script>" not in page
    assert page.count("<script") == 2  # the data block and the page's own script, nothing else
    data = re.search(r'<script type="application/json" id="graph-data">(.*?)</script>', page, re.S).group(1)
    assert "<" not in data and ">" not in data and "&" not in data
    assert json.loads(data)["nodes"][0]["label"] == HOSTILE  # intact once parsed
    title = render_page({"nodes": [], "edges": [], "types": []}, "etl graph: <b>dir</b>")
    assert "<title>etl graph: &lt;b&gt;dir&lt;/b&gt;</title>" in title


def test_the_page_loads_nothing_and_allows_only_its_own_script(tmp_path, digicert_output):
    page_path = tmp_path / "page.html"
    visualize.write_page(digicert_output, page_path)
    page = page_path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page, re.I)
    assert not re.search(r"@import|url\(\s*['\"]?(https?:|//)", page, re.I)
    assert re.findall(r"https?://[^\s\"'<]+", page.split('id="graph-data"')[0]) == ["http://www.w3.org/2000/svg"]
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', page).group(1)
    script = re.search(r"<script>(.*?)</script>", page, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src &#x27;sha256-{digest}&#x27;" in csp and "default-src &#x27;none&#x27;" in csp


def test_no_data_gives_a_page_that_says_so(etl, tmp_path):
    (tmp_path / "empty").mkdir()
    result = etl("visualize", tmp_path / "empty", "--output", tmp_path / "page.html")
    assert result.exit_code == 0
    assert "there was no data found to visualize" in result.stderr
    page = (tmp_path / "page.html").read_text()
    assert f"{tmp_path / 'empty'}: There was no data found to visualize." in page
    assert "<script" not in page


def test_cli_writes_the_page_and_reports(etl, digicert_output, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(digicert_output, out)
    result = etl("visualize", out)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == (
        f"{out / 'index.html'}: 11 entities, 19 relationships, 8 mapped-target placeholders, 0 missing entities"
    )
    assert (out / "index.html").is_file()
    assert etl("visualize", out, "--output", tmp_path / "x" / "g.html").exit_code == 0
    assert (tmp_path / "x" / "g.html").is_file()


def test_cli_errors(etl, tmp_path):
    assert etl("visualize", tmp_path / "nowhere").exit_code == 2
    root = write_graph(tmp_path / "out", [ent("acme_host:1")])
    (root / "graph" / "step" / "entities" / "b.json").write_text('{"entities": [')
    result = etl("visualize", root, "--output", tmp_path / "page.html")
    assert result.exit_code == 5 and "b.json: cannot read it as JSON" in result.stderr
    assert not (tmp_path / "page.html").exists()


# -- at real sizes: --type, --max-nodes, streaming -------------------------------------------------


def page_data(page: Path) -> dict:
    text = page.read_text()
    return json.loads(re.search(r'<script type="application/json" id="graph-data">(.*?)</script>', text, re.S).group(1))


def has(source: str, target: str) -> dict:
    return {
        "_key": f"{source}|has|{target}",
        "_type": "acme_has",
        "_class": "HAS",
        "_fromEntityKey": source,
        "_toEntityKey": target,
    }


def write_hosts(root: Path, hosts: int, per_file: int = 500) -> Path:
    """``hosts`` hosts in several files, each HAS the next one, each mapped to its zone (a
    placeholder: one zone per ten hosts), and one relationship to a _key nothing has."""
    step = root / "graph" / "step"
    (step / "entities").mkdir(parents=True)
    (step / "relationships").mkdir(parents=True)
    for number, start in enumerate(range(0, hosts, per_file)):
        batch = [ent(f"acme_host:{i}", zone=f"z{i // 10}") for i in range(start, min(hosts, start + per_file))]
        (step / "entities" / f"{number:04d}.json").write_text(json.dumps({"entities": batch}))
        rels = [has(f"acme_host:{i}", f"acme_host:{(i + 1) % hosts}") for i in range(start, start + len(batch))]
        rels += [
            mapped(f"acme_host:{i}", {"_type": "acme_zone", "_class": "Zone", "zoneName": f"z{i // 10}"}, ["zoneName"])
            for i in range(start, start + len(batch))
        ]
        (step / "relationships" / f"{number:04d}.json").write_text(json.dumps({"relationships": rels}))
    dangling = [has("acme_host:0", "acme_host:nowhere")]
    (step / "relationships" / "dangling.json").write_text(json.dumps({"relationships": dangling}))
    (root / "summary.json").write_text(json.dumps({"integrationStepResults": [{"id": "step"}]}))
    return root


@pytest.fixture(scope="module")
def hosts_output(tmp_path_factory) -> Path:
    return write_hosts(tmp_path_factory.mktemp("hosts") / "out", 3000)


def test_max_nodes_limits_the_page_and_says_how_to_narrow(etl, hosts_output, tmp_path):
    page = tmp_path / "page.html"
    result = etl("visualize", hosts_output, "--max-nodes", 50, "--output", page)
    assert result.exit_code == 0, result.stderr
    data = page_data(page)
    assert 0 < len(data["nodes"]) <= 50 and len(data["edges"]) <= 50 * EDGES_PER_NODE
    ids = {n["id"] for n in data["nodes"]}
    assert all(e["from"] in ids and e["to"] in ids for e in data["edges"])
    kinds = Counter(n["kind"] for n in data["nodes"])
    # entities were cut and they map to zones: a quarter of the nodes is left for the targets
    assert kinds == {"entity": 38, "placeholder": 4, "missing": 1}
    # an entity that is not drawn is never shown as missing: the only missing node is the dangling key
    assert [n["key"] for n in data["nodes"] if n["kind"] == "missing"] == ["acme_host:nowhere"]
    assert result.stdout.strip() == (
        f"{page}: 38 of 3,000 entities, 76 of 6,001 relationships, 4 mapped-target placeholders, 1 missing entity"
    )
    notice = result.stderr.strip()
    assert notice.startswith(f"etl: {hosts_output} has 3,000 entities; --max-nodes 50 draws 38 of them")
    assert "Narrow it with --type TYPE (acme_host: 3,000; mapped targets: acme_zone)" in notice
    assert "raise --max-nodes (0: no limit)" in notice
    text = page.read_text()
    assert re.search(r'<p id="notice" class="notice">[^<]*has 3,000 entities; --max-nodes 50 draws 38', text)
    assert '<p id="status">38 of 3,000 entities, 76 of 6,001 relationships</p>' in text


def test_the_default_limit_and_no_limit(etl, hosts_output, tmp_path):
    page = tmp_path / "page.html"
    assert etl("visualize", hosts_output, "--output", page).exit_code == 0
    kinds = Counter(n["kind"] for n in page_data(page)["nodes"])
    assert kinds == {"entity": 1500, "placeholder": 150, "missing": 1}  # 2,000 nodes at most
    result = etl("visualize", hosts_output, "--max-nodes", 0, "--output", page)
    assert result.exit_code == 0 and result.stderr == ""
    data = page_data(page)
    assert Counter(n["kind"] for n in data["nodes"]) == {"entity": 3000, "placeholder": 300, "missing": 1}
    assert len(data["edges"]) == 6001
    assert result.stdout.strip().endswith(
        "3,000 entities, 6,001 relationships, 300 mapped-target placeholders, 1 missing entity"
    )


def test_type_selects_entities_and_the_relationships_among_them():
    entities = [
        ent("acme_host:1"),
        ent("acme_host:2"),
        ent("acme_user:alice", "acme_user", ("User",)),
        ent("acme_zone:z1", "acme_zone", ("Zone",), zoneName="z1"),
    ]
    relationships = [
        has("acme_host:1", "acme_host:2"),  # among hosts: drawn
        has("acme_user:alice", "acme_host:1"),  # to a user: left out, and alice is not "missing"
        has("acme_host:2", "acme_host:404"),  # dangling from a drawn host: a missing node
        has("acme_user:alice", "acme_user:404"),  # dangling from an entity not drawn: left out
        mapped("acme_host:1", {"_type": "acme_zone", "zoneName": "z1"}, ["zoneName"]),  # an entity not drawn
        mapped("acme_host:2", {"_type": "acme_domain", "domainName": "example.com"}, ["domainName"]),
    ]
    view = visualize.build_view(entities, relationships, types=["acme_host"])
    assert [(n["kind"], n["key"]) for n in view["nodes"]] == [
        ("entity", "acme_host:1"),
        ("entity", "acme_host:2"),
        ("missing", "acme_host:404"),
    ]
    assert [e["key"] for e in view["edges"]] == ["acme_host:1|has|acme_host:2", "acme_host:2|has|acme_host:404"]
    assert [(t["type"], t["entities"], t["total"]) for t in view["types"]] == [("acme_host", 2, 2)]

    # a mapped target's type brings its placeholders (and the zone entity its own node)
    view = visualize.build_view(entities, relationships, types=["acme_host", "acme_domain", "acme_zone"])
    by_id = {n["id"]: n for n in view["nodes"]}
    drawn = {(by_id[e["from"]]["key"], by_id[e["to"]]["key"], e.get("resolved")) for e in view["edges"]}
    assert ("acme_host:1", "acme_zone:z1", True) in drawn
    assert ("acme_host:2", "domainName=example.com", False) in drawn
    assert [t["type"] for t in view["types"]] == ["acme_domain", "acme_host", "acme_zone"]


def test_a_mapped_target_not_drawn_is_not_a_placeholder():
    target = {"_type": "acme_zone", "_class": "Zone", "zoneName": "z1"}
    relationships = [mapped("acme_host:1", target, [["_class", "zoneName"]])]
    zone = ent("acme_zone:z1", "acme_zone", ("Zone",), zoneName="z1")
    # the zone is cut by the limit: the relationship is left out, not drawn to a placeholder
    view = visualize.build_view([ent("acme_host:1"), zone], relationships, max_nodes=1)
    assert [n["key"] for n in view["nodes"]] == ["acme_host:1"] and view["edges"] == []
    # an entity of a type not drawn that matches (classes as a subset, as the mapper does): left out too
    other = ent("acme_other:z1", "acme_other", ("Zone", "Other"), zoneName="z1")
    view = visualize.build_view([ent("acme_host:1"), other], relationships, types=["acme_host", "acme_zone"])
    assert [n["kind"] for n in view["nodes"]] == ["entity"] and view["edges"] == []
    # one that does not match (no Zone class): the target is not in the graph, so a placeholder
    other["_class"] = ["Other"]
    view = visualize.build_view([ent("acme_host:1"), other], relationships, types=["acme_host", "acme_zone"])
    assert [(n["kind"], n["type"]) for n in view["nodes"]] == [("entity", "acme_host"), ("placeholder", "acme_zone")]
    assert [e["resolved"] for e in view["edges"]] == [False]


def test_a_duplicate_of_an_entity_not_drawn_is_still_marked():
    entities = [ent("acme_host:1", "acme_user"), ent("acme_host:1"), ent("acme_host:2")]
    view = visualize.build_view(entities, [], types=["acme_host"])
    assert [(n["key"], n["duplicate"]) for n in view["nodes"]] == [("acme_host:1", True), ("acme_host:2", False)]


def test_the_edge_limit(etl, tmp_path):
    relationships = [{**has("acme_host:1", "acme_host:2"), "_key": f"k{i}"} for i in range(12)]
    root = write_graph(tmp_path / "out", [ent("acme_host:1"), ent("acme_host:2")], relationships)
    result = etl("visualize", root, "--max-nodes", 2, "--output", tmp_path / "page.html")
    assert result.exit_code == 0
    assert len(page_data(tmp_path / "page.html")["edges"]) == 2 * EDGES_PER_NODE
    assert "and 10 of 12 relationships (2 more would pass the edge limit of 10)" in result.stderr


def test_an_unknown_type_is_a_usage_error(etl, digicert_output, tmp_path):
    result = etl("visualize", digicert_output, "--type", "digicert_cert", "--output", tmp_path / "page.html")
    assert result.exit_code == 2
    assert "--type digicert_cert: no entity or mapped target in" in result.stderr
    assert "did you mean digicert_certificate?" in result.stderr
    assert "digicert_certificate: 5, digicert_user: 5, digicert_account: 1; mapped targets: domain" in result.stderr
    assert not (tmp_path / "page.html").exists()
    assert etl("visualize", digicert_output, "--max-nodes", -1).exit_code == 2


def test_a_type_that_draws_nothing_says_why(etl, digicert_output, tmp_path):
    page = tmp_path / "page.html"
    result = etl("visualize", digicert_output, "--type", "domain", "--output", page)
    assert result.exit_code == 0
    assert "nothing of --type domain can be drawn (a mapped target is drawn only with an entity" in result.stderr
    assert "Nothing of --type domain can be drawn" in page.read_text() and "<script" not in page.read_text()
    result = etl("visualize", digicert_output, "--type", "domain", "--type", "digicert_certificate", "-o", page)
    assert result.stdout.strip().endswith(
        "5 of 11 entities, 9 of 19 relationships, 8 mapped-target placeholders, 0 missing entities"
    )


def test_write_page_for_draws_any_graph_objects(tmp_path):
    """The seam for other commands (e.g. a query's answer): iterables in, a page out."""
    entities = (ent(f"acme_host:{i}") for i in range(5))  # a generator: read once
    relationships = (has(f"acme_host:{i}", f"acme_host:{i + 1}") for i in range(5))  # read twice: spooled
    page = tmp_path / "answer" / "page.html"
    summary = visualize.write_page_for(entities, relationships, page, "query: <hosts>", max_nodes=3)
    assert (sum(summary.entities.values()), summary.edges, summary.relationships) == (3, 2, 5)
    assert summary.notice().startswith("query: <hosts> has 5 entities; --max-nodes 3 draws 3 of them")
    text = page.read_text()
    assert "<title>query: &lt;hosts&gt;</title>" in text
    assert [n["key"] for n in page_data(page)["nodes"]] == ["acme_host:0", "acme_host:1", "acme_host:2"]
    assert sorted(p.name for p in page.parent.iterdir()) == ["page.html"]  # no temporary file left


def test_the_page_has_no_inline_handlers(tmp_path, hosts_output):
    page = tmp_path / "page.html"
    visualize.write_page(hosts_output, page, max_nodes=20)
    text = page.read_text()
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", text, re.I)
    assert '<input id="search" type="search"' in text


# -- in a real browser -------------------------------------------------------------------------


class Dom(HTMLParser):
    """The rendered DOM as a flat list of elements: {"tag", "attrs", "text"} (text of the element itself)."""

    VOID = {"meta", "link", "br", "img", "input", "hr", "area", "base", "col", "embed", "source", "wbr"}

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[dict] = []
        self.stack: list[dict] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        element = {"tag": tag, "attrs": dict(attrs), "text": ""}
        self.elements.append(element)
        if tag not in self.VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag, attrs):
        self.elements.append({"tag": tag, "attrs": dict(attrs), "text": ""})

    def handle_endtag(self, tag):
        for index in range(len(self.stack) - 1, -1, -1):
            if self.stack[index]["tag"] == tag:
                del self.stack[index:]
                break

    def handle_data(self, data):
        if self.stack:
            self.stack[-1]["text"] += data

    def find(self, tag: str, cls: str | None = None) -> list[dict]:
        return [
            e for e in self.elements if e["tag"] == tag and (cls is None or cls in e["attrs"].get("class", "").split())
        ]


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def rendered(tmp_path: Path, page: Path) -> Dom:
    result = chromium(tmp_path, "--dump-dom", page.resolve().as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    return Dom(result.stdout)


@needs_chromium
def test_browser_draws_nodes_edges_and_legend(tmp_path, digicert_output):
    page = tmp_path / "page.html"
    visualize.write_page(digicert_output, page)
    assert 'class="node' not in page.read_text()  # everything below was drawn by the page's script
    dom = rendered(tmp_path, page)

    (body,) = dom.find("body")
    assert body["attrs"].get("data-rendered") == "19 nodes, 19 edges"
    nodes = dom.find("g", "node")
    assert len(nodes) == 19
    assert len(dom.find("g", "placeholder")) == 8 and len(dom.find("g", "entity")) == 11
    labels = {(e["attrs"]["class"], e["text"]) for e in dom.find("tspan")}
    assert {
        ("name", "alice.admin@example.com"),
        ("type", "[digicert_user]"),
        ("key", "digicert_user:1234567:2000001"),
        ("name", "DigiCert:1234567"),
        ("type", "[digicert_account]"),
        ("name", "www.example.com"),
        ("type", "[domain]"),
        ("key", "_class=Domain, domainName=www.example.com"),
    } <= labels
    edge_labels = [e["text"] for e in dom.find("text", "edge-label")]
    assert edge_labels == ["HAS"] * 19
    assert len(dom.find("g", "mapped")) == 9
    legend = {
        e["attrs"]["data-type"]: "".join(s["text"] for s in dom.elements[dom.elements.index(e) + 1 :][:2])
        for e in dom.find("li", "legend-entry")
    }
    assert legend == {
        "digicert_account": "digicert_account (1 entity)",
        "digicert_certificate": "digicert_certificate (5 entities)",
        "digicert_user": "digicert_user (5 entities)",
        "domain": "domain (8 placeholders)",
    }
    circles = [e for e in dom.elements if e["tag"] == "circle" and e["attrs"].get("fill")]
    assert len({c["attrs"]["fill"] for c in circles}) == 4  # coloured by _type
    (svg,) = [e for e in dom.find("svg") if e["attrs"].get("id") == "graph"]
    assert re.fullmatch(r"-?[\d.]+ -?[\d.]+ [\d.]+ [\d.]+", svg["attrs"]["viewbox"])  # fitted to the layout


@needs_chromium
def test_browser_shows_a_hostile_label_as_text(tmp_path):
    page = tmp_path / "page.html"
    visualize.write_page(hostile_graph(tmp_path / "out"), page)
    dom = rendered(tmp_path, page)

    (body,) = dom.find("body")
    assert body["attrs"].get("data-rendered") == "2 nodes, 1 edges"  # the page's own script ran...
    assert "data-pwned" not in body["attrs"]  # ...and nothing else did
    assert [t["text"] for t in dom.find("title")][0].startswith("etl graph:")
    assert dom.find("img") == [] and len(dom.find("script")) == 2
    names = [e["text"] for e in dom.find("tspan", "name")]
    assert any(n.startswith("<script>document.title='pwned'</script><img") for n in names)
    tooltips = [e["text"] for e in dom.find("title")]
    assert any(HOSTILE in t for t in tooltips)


@needs_chromium
def test_browser_shows_the_no_data_message(tmp_path):
    (tmp_path / "empty").mkdir()
    page = tmp_path / "page.html"
    visualize.write_page(tmp_path / "empty", page)
    dom = rendered(tmp_path, page)
    (message,) = [e for e in dom.find("p") if e["attrs"].get("id") == "empty"]
    assert message["text"] == f"{tmp_path / 'empty'}: There was no data found to visualize."


@needs_chromium
def test_browser_screenshot(tmp_path, digicert_output):
    page = tmp_path / "page.html"
    visualize.write_page(digicert_output, page)
    shot = tmp_path / "page.png"
    result = chromium(tmp_path, "--window-size=1280,800", f"--screenshot={shot}", page.resolve().as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 800)
    assert len(data) > 30_000  # a drawn graph, not a blank page (a blank one is a few KB)


@needs_chromium
def test_browser_search_and_type_toggles(tmp_path, digicert_output):
    """The search box and the legend's boxes, set from the page's address as a link would."""
    page = tmp_path / "page.html"
    visualize.write_page(digicert_output, page)
    result = chromium(tmp_path, "--dump-dom", page.resolve().as_uri() + "#search=Example.ORG&hide=domain")
    assert result.returncode == 0, result.stderr[-2000:]
    dom = Dom(result.stdout)

    def keys(cls: str) -> set[str]:
        return {e["attrs"]["data-key"] for e in dom.find("g", cls) if "node" in e["attrs"]["class"].split()}

    assert len(keys("hidden")) == 8 and all(k.startswith("_class=Domain") for k in keys("hidden"))
    assert keys("match") == {"digicert_certificate:100003"}  # *.example.org; its domains are hidden
    assert len(keys("unmatched")) == 18  # every other node, hidden ones too
    mapped_edges = [e for e in dom.find("g", "edge") if "mapped" in e["attrs"]["class"].split()]
    assert mapped_edges and all("hidden" in e["attrs"]["class"].split() for e in mapped_edges)
    (body,) = dom.find("body")
    assert body["attrs"]["data-matches"] == "1"
    (matches,) = [e for e in dom.find("p") if e["attrs"].get("id") == "matches"]
    assert matches["text"] == "1 of 19 nodes match; Enter: zoom to them."
    legend = {e["attrs"]["data-type"]: e["attrs"]["class"] for e in dom.find("li", "legend-entry")}
    assert legend["domain"] == "legend-entry off" and legend["digicert_user"] == "legend-entry"
    assert len(dom.find("input")) == 1 + 4  # the search box and a box per type


@needs_chromium
def test_browser_draws_a_limited_page(tmp_path, hosts_output):
    page = tmp_path / "page.html"
    visualize.write_page(hosts_output, page, max_nodes=50)
    dom = rendered(tmp_path, page)
    (body,) = dom.find("body")
    assert body["attrs"].get("data-rendered") == "43 nodes, 76 edges"
    (notice,) = [e for e in dom.find("p") if e["attrs"].get("id") == "notice"]
    assert "has 3,000 entities; --max-nodes 50 draws 38 of them" in notice["text"]
    legend = [e for e in dom.elements if e["tag"] == "span" and e["text"].startswith("acme_host (")]
    assert [e["text"] for e in legend] == ["acme_host (38 of 3,000 entities)"]


def test_no_room_for_placeholders_is_said_too(tmp_path):
    entities = [ent(f"acme_host:{i}") for i in range(3)]
    relationships = [mapped(f"acme_host:{i}", {"_class": "Zone", "zoneName": f"z{i}"}, ["zoneName"]) for i in range(3)]
    summary = visualize.write_page_for(entities, relationships, tmp_path / "page.html", "hosts", max_nodes=4)
    assert (summary.cut, dict(summary.placeholders), summary.edges) == (0, {"": 1}, 1)
    assert (
        summary.describe() == "3 of 3 entities, 1 of 3 relationships, 1 mapped-target placeholder, 0 missing entities"
    )
    assert summary.notice() == (
        "hosts has 3 entities; --max-nodes 4 draws 3 of them, with 1 node for the placeholders and missing entities they "
        "point at, and 1 of 3 relationships (2 left out for want of room for the placeholder or "
        "missing entity they point at). Narrow it with --type TYPE (acme_host: 3), or raise --max-nodes (0: no limit)."
    )
