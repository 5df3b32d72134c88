"""etl visualize: the data the page draws, the page itself (escaping, no network, its CSP), and
what headless Chromium actually shows once the page's script has run."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from engine.tools import visualize
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


def view_of(root: Path) -> dict:
    return visualize.build_view(*visualize.load_graph(root))


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
    title = visualize.render_page({"nodes": [], "edges": [], "types": []}, "etl graph: <b>dir</b>")
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
