"""The docs and the schema stay honest with each other and with the engine.

* every property the JSON Schema defines is named (in backticks) in the format reference;
* every schema property has a description (what editors show on hover);
* every complete mapping in the reference and in the guide passes `etl validate`;
* every relative link in those docs points at a file, and heading, that exists.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCS = ROOT / "docs"
REFERENCE = DOCS / "mapping-format.md"
GUIDE = DOCS / "writing-a-mapping.md"
CHECKED_DOCS = (REFERENCE, GUIDE)
SCHEMA = ROOT / "engine" / "schema" / "mapping.schema.json"

# Keywords whose value is one schema, a list of schemas, or a map of name -> schema.
_ONE_SCHEMA = ("items", "additionalProperties", "not", "if", "then", "else", "propertyNames", "contains")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_MAPS = ("definitions", "$defs", "patternProperties", "dependentSchemas")


def schema_properties(node: object = None, where: str = "") -> list[tuple[str, str, dict]]:
    """``(where, name, schema)`` of every property defined anywhere in the mapping schema:
    the root's, every definition's, and those of objects nested in them. ``where`` reads
    like ``source.rate_limits[].requests``."""
    if node is None:
        node = json.loads(SCHEMA.read_text(encoding="utf-8"))
    found: list[tuple[str, str, dict]] = []
    if not isinstance(node, dict):
        return found
    for name, sub in (node.get("properties") or {}).items():
        path = f"{where}.{name}" if where else name
        found.append((path, name, sub))
        found.extend(schema_properties(sub, path))
    for keyword in _ONE_SCHEMA:
        if isinstance(node.get(keyword), dict):
            found.extend(schema_properties(node[keyword], where + ("[]" if keyword == "items" else "")))
    for keyword in _SCHEMA_LISTS:
        for sub in node.get(keyword) or []:
            found.extend(schema_properties(sub, where))
    for keyword in _SCHEMA_MAPS:
        for name, sub in (node.get(keyword) or {}).items():
            found.extend(schema_properties(sub, name if keyword in ("definitions", "$defs") else where))
    return found


def undescribed_properties() -> list[str]:
    return [
        where
        for where, _, sub in schema_properties()
        if not (isinstance(sub, dict) and str(sub.get("description") or "").strip())
    ]


def test_schema_walk_finds_the_properties():
    names = {where for where, _, _ in schema_properties()}
    assert {
        "version",
        "steps",
        "source.base_url",
        "source.rate_limits[].requests",
        "auth.client_auth",
        "mappedRelationship.target.properties",
        "value.jmespath",
    } <= names


def test_every_schema_property_is_named_in_the_reference():
    text = REFERENCE.read_text(encoding="utf-8")
    missing = sorted({f"{name} ({where})" for where, name, _ in schema_properties() if f"`{name}`" not in text})
    assert missing == [], f"schema properties not mentioned in backticks in {REFERENCE.name}: {missing}"


def test_every_schema_property_has_a_description():
    """Editors show these descriptions on hover and in completion."""
    assert undescribed_properties() == []


# -- code blocks ------------------------------------------------------------------------------

FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def complete_mappings(doc: Path) -> list[tuple[int, str]]:
    """``(line, text)`` of every YAML block of ``doc`` that is a whole mapping (has top-level
    ``version:`` and ``steps:``)."""
    text = doc.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        body = match["body"]
        if (
            match["lang"] in ("yaml", "yml")
            and re.search(r"^version:", body, re.M)
            and re.search(r"^steps:", body, re.M)
        ):
            blocks.append((text.count("\n", 0, match.start()) + 1, body))
    return blocks


MAPPING_BLOCKS = [(doc, line, body) for doc in CHECKED_DOCS for line, body in complete_mappings(doc)]


@pytest.mark.parametrize("doc", CHECKED_DOCS, ids=lambda d: d.name)
def test_each_doc_has_a_complete_mapping(doc):
    assert complete_mappings(doc), f"{doc.name}: no complete mapping found; is the block detection broken?"


@pytest.mark.parametrize("doc, line, body", MAPPING_BLOCKS, ids=[f"{d.name}:{n}" for d, n, _ in MAPPING_BLOCKS])
def test_complete_mappings_in_the_docs_validate(etl, tmp_path, doc, line, body):
    path = tmp_path / "mappings" / f"{doc.stem}-line-{line}.yaml"
    path.parent.mkdir()
    path.write_text(body, encoding="utf-8")
    result = etl("validate", path)
    assert result.exit_code == 0, f"{doc.name}, the block at line {line}:\n{result.stderr}{result.stdout}"
    assert result.stdout.startswith(f"{path}: ok")


# -- links ------------------------------------------------------------------------------------

LINK = re.compile(r"(?<!!)\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code spans (which keep their lines)."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return INLINE_CODE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped (but '-' and '_'),
    spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link's text stays
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    for line in FENCE.sub("", doc.read_text(encoding="utf-8")).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = github_slug(heading.group(1))
            found.add(slug if slug not in counts else f"{slug}-{counts[slug]}")
            counts[slug] = counts.get(slug, 0) + 1
        found.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", line))
    return found


def relative_links(doc: Path) -> list[tuple[int, str]]:
    text = prose(doc.read_text(encoding="utf-8"))
    links = []
    for match in LINK.finditer(text):
        target = match["target"]
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
            continue
        links.append((text.count("\n", 0, match.start()) + 1, target))
    return links


def test_slugs_follow_github():
    assert github_slug("Order, `depends_on` and `--step`") == "order-depends_on-and---step"
    assert github_slug("16. Graph checks and partial datasets") == "16-graph-checks-and-partial-datasets"
    assert github_slug("`summary.json`") == "summaryjson"


@pytest.mark.parametrize("doc", CHECKED_DOCS, ids=lambda d: d.name)
def test_relative_links_resolve(doc):
    assert relative_links(doc), f"{doc.name}: no relative link found; is the link detection broken?"
    broken = []
    for line, target in relative_links(doc):
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            broken.append(f"{doc.name}:{line}: {target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{doc.name}:{line}: {target}: no heading '#{anchor}' in {file.name}")
    assert broken == []


def test_the_architecture_names_modules_that_exist():
    """docs/architecture.md and engine/__init__.py name real modules (and every package's map is whole)."""
    engine = ROOT / "engine"
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    text += (engine / "__init__.py").read_text(encoding="utf-8")
    named = set(re.findall(r"\b([a-z_]+/)?([a-z_]+\.py)\b", text))
    assert len(named) > 20
    for package, module in named:
        candidates = [engine / package / module] if package else list(engine.rglob(module))
        assert any(p.is_file() for p in candidates), f"{package}{module} is named but does not exist"
    pipeline_map = (engine / "pipeline" / "__init__.py").read_text(encoding="utf-8")
    for module in (engine / "pipeline").glob("*.py"):
        if module.name != "__init__.py" and not module.name.startswith("compile_"):
            assert module.name in pipeline_map, f"pipeline/__init__.py does not name {module.name}"


def test_the_fault_matrix_names_tests_that_exist():
    """docs/security.md's fault matrix points at test files that exist (and the README links it)."""
    text = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(test_[a-z0-9_]+\.py)`", text))
    assert len(named) >= 15
    assert sorted(name for name in named if not (ROOT / "tests" / name).is_file()) == []
    assert "docs/security.md" in (ROOT / "README.md").read_text(encoding="utf-8")
