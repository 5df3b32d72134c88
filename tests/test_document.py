"""`etl document`: JupiterOne's "Data Model" documentation section, generated from a mapping
exactly as `j1-integration document` writes it, and the docs/ files kept up to date with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from engine.errors import EXIT_INVALID_MAPPING, EXIT_RUN_FAILED
from engine.pipeline.compile import compile_file
from engine.tools.document import (
    MARKER_END,
    MARKER_START,
    DataModel,
    DocumentationMarkerError,
    EntityRow,
    MappedRelationshipRow,
    RelationshipRow,
    data_model,
    document_plan,
    generated_section,
    markdown_table,
    read_text,
    render_section,
    replace_section,
)
from tests.conftest import MAPPINGS, ROOT

SEEDS = Path(__file__).parent / "snapshots" / "seeds"  # the Data Model part of each vendor's J1 page
DOCS = ROOT / "docs"
DIGICERT = MAPPINGS / "digicert.yaml"
NOWSECURE = MAPPINGS / "nowsecure.yaml"

# A mapping with no vendor behind it, declaring what the sort and dedup rules are about.
EXAMPLE_MAPPING = """\
version: 1
integration: {id: example, name: Example}
sources:
  api: {base_url: "https://api.example.com"}
steps:
  - id: fetch-users
    depends_on: [fetch-account]
    request: {path: /users}
    entities:
      - {resource: alpha users, type: example_user, class: User, key: "u:{{ record.id }}", properties: {name: name}}
    relationships:
      - {class: HAS, from: {type: example_account}, to: example_user}
    mapped_relationships:
      - {class: IS, source: example_user, target: {type: employee, class: User, properties: {email: email}},
         filter_keys: [[_class, email]]}
  - id: fetch-account
    request: {path: /account}
    entities:
      - {resource: Zeta Account, type: example_account, class: Account, key: "a:{{ record.id }}", properties: {name: name}}
  - id: fetch-hosts
    depends_on: [fetch-account]
    request: {path: /hosts}
    entities:
      - {resource: Beta Host, type: example_host, class: [Host, Device], key: "h:{{ record.id }}", properties: {name: name}}
    relationships:
      - {class: MONITORS, from: {type: example_account}, to: example_host}
      - {class: HAS, from: {type: example_account}, to: example_host}
      - {class: HAS, from: {type: example_account}, to: example_host}
      - {class: HAS, from: example_host, to: {type: example_account}}
    mapped_relationships:
      - {class: HAS, source: example_host, direction: REVERSE, target: {type: domain, class: Domain, properties: {domainName: name}}, filter_keys: [[_class, domainName]]}
      - {class: HAS, source: example_host, direction: FORWARD, target: {type: domain, class: Domain, properties: {domainName: name}}, filter_keys: [[_class, domainName]]}
      - {class: HAS, source: example_host, target: {type: domain, class: Domain, properties: {domainName: name}}, filter_keys: [[_class, domainName]]}
      - {class: PROTECTS, source: example_host, type: example_host_protects_network, target: {class: Network, properties: {name: name}}, filter_keys: [[_class, name]]}
"""


@pytest.fixture
def example(tmp_path) -> Path:
    path = tmp_path / "example.yaml"
    path.write_text(EXAMPLE_MAPPING, encoding="utf-8")
    return path


def marked_section(text: str) -> str:
    section = generated_section(text)
    assert section is not None, "no generated section between the markers"
    return section


def without_subsection(section: str, title: str) -> str:
    """The section with one '### title' subsection (and the blank lines before it) cut out."""
    return re.sub(rf"\n\n### {re.escape(title)}\n.*?(?=\n\n(### |<!--))", "", section, flags=re.S)


def table_rows(text: str, heading: str, occurrence: int = 0) -> list[tuple[str, ...]]:
    """The body rows (cells stripped) of the n-th table after '### heading'."""
    after = text.split(f"### {heading}\n", 1)[1]
    tables = re.findall(r"((?:^\|.*\|\n?)+)", after, flags=re.M)
    lines = tables[occurrence].strip("\n").split("\n")[2:]
    return [tuple(cell.strip() for cell in line.strip("|").split("|")) for line in lines]


# -- tables --------------------------------------------------------------------------------


def test_table_pads_every_column_to_its_widest_cell():
    assert markdown_table([("A", "Long header"), ("wide cell", "x")]) == (
        "| A         | Long header |\n| --------- | ----------- |\n| wide cell | x           |"
    )


def test_table_separator_is_at_least_three_dashes():
    assert markdown_table([("a", "bc"), ("", "d")]) == ("| a   | bc  |\n| --- | --- |\n|     | d   |")


def test_section_layout_is_the_sdk_template():
    model = DataModel(
        entities=(EntityRow("Thing", "t_thing", ("Entity",)),),
        relationships=(RelationshipRow("t_a", "HAS", "t_thing", "t_a_has_thing"),),
        mapped_relationships=(MappedRelationshipRow("t_thing", "IS", "person", "FORWARD", "t_is_person"),),
    )
    assert (
        render_section(model)
        == """\
<!-- {J1_DOCUMENTATION_MARKER_START} -->
<!--
********************************************************************************
NOTE: ALL OF THE FOLLOWING DOCUMENTATION IS GENERATED USING THE
"j1-integration document" COMMAND. DO NOT EDIT BY HAND! PLEASE SEE THE DEVELOPER
DOCUMENTATION FOR USAGE INFORMATION:

https://github.com/JupiterOne/sdk/blob/main/docs/integrations/development.md
********************************************************************************
-->

## Data Model

### Entities

The following entities are created:

| Resources | Entity `_type` | Entity `_class` |
| --------- | -------------- | --------------- |
| Thing     | `t_thing`      | `Entity`        |

### Relationships

The following relationships are created:

| Source Entity `_type` | Relationship `_class` | Target Entity `_type` |
| --------------------- | --------------------- | --------------------- |
| `t_a`                 | **HAS**               | `t_thing`             |

### Mapped Relationships

The following mapped relationships are created:

| Source Entity `_type` | Relationship `_class` | Target Entity `_type` | Direction |
| --------------------- | --------------------- | --------------------- | --------- |
| `t_thing`             | **IS**                | `*person*`            | FORWARD   |

<!--
********************************************************************************
END OF GENERATED DOCUMENTATION AFTER BELOW MARKER
********************************************************************************
-->
<!-- {J1_DOCUMENTATION_MARKER_END} -->"""
    )


def test_sections_without_rows_are_omitted():
    entities_only = DataModel((EntityRow("Thing", "t_thing", ("Entity",)),), (), ())
    section = render_section(entities_only)
    assert "### Entities" in section
    assert "### Relationships" not in section and "### Mapped Relationships" not in section
    assert section.endswith(
        "`Entity`        |\n\n<!--\n"
        + "*" * 80
        + "\nEND OF GENERATED DOCUMENTATION AFTER BELOW MARKER\n"
        + "*" * 80
        + f"\n-->\n{MARKER_END}"
    )

    relationships_only = DataModel((), (RelationshipRow("t_a", "HAS", "t_b", "t_a_has_b"),), ())
    section = render_section(relationships_only)
    assert "### Entities" not in section and "### Mapped Relationships" not in section
    assert "## Data Model\n\n### Relationships\n" in section


def test_renderer_reproduces_the_sdk_output_byte_for_byte():
    """The rows JupiterOne's own generator had for its NowSecure integration give back its text."""
    model = DataModel(
        entities=(
            EntityRow("Account", "nowsecure_account", ("Account",)),
            EntityRow("Finding", "nowsecure_finding", ("Finding",)),
            EntityRow("Mobile Applications", "mobile_app", ("Application",)),
            EntityRow("Service", "nowsecure_service", ("Service",)),
            EntityRow("User", "nowsecure_user", ("User",)),
        ),
        relationships=(
            RelationshipRow("mobile_app", "HAS", "nowsecure_finding", ""),
            RelationshipRow("nowsecure_account", "HAS", "mobile_app", ""),
            RelationshipRow("nowsecure_account", "HAS", "nowsecure_user", ""),
            RelationshipRow("nowsecure_account", "PROVIDES", "nowsecure_service", ""),
            RelationshipRow("nowsecure_service", "SCANS", "mobile_app", ""),
        ),
        mapped_relationships=(),
    )
    seed = (SEEDS / "nowsecure-data-model.md").read_text(encoding="utf-8")
    assert render_section(model) == marked_section(seed)


# -- rows: dedup and sort --------------------------------------------------------------------


def test_entities_are_sorted_by_resource_name_like_javascript(example):
    rows = data_model(compile_file(example)).entities
    # Code-unit order, as the SDK's `a > b` comparison: capitals before lower case.
    assert [r.resource for r in rows] == ["Beta Host", "Zeta Account", "alpha users"]
    assert rows[0] == EntityRow("Beta Host", "example_host", ("Host", "Device"))


def test_multi_class_entity_lists_every_class():
    section = document_plan_text(EntityRow("Host", "x_host", ("Host", "Device")))
    assert "| Host      | `x_host`       | `Host`, `Device` |" in section


def document_plan_text(*entities: EntityRow) -> str:
    return render_section(DataModel(tuple(entities), (), ()))


def test_relationships_are_deduplicated_and_sorted_by_relationship_type(example):
    """By `_type`, as the SDK release that generated the published docs (the NowSecure seed
    needs it: account HAS user before account PROVIDES service); not by source, target, class."""
    rows = data_model(compile_file(example)).relationships
    assert [(r.type, r.source_type, r.relationship_class, r.target_type) for r in rows] == [
        ("example_account_has_host", "example_account", "HAS", "example_host"),
        ("example_account_has_user", "example_account", "HAS", "example_user"),
        ("example_account_monitors_host", "example_account", "MONITORS", "example_host"),
        ("example_host_has_account", "example_host", "HAS", "example_account"),
    ]


def test_mapped_relationships_are_deduplicated_and_sorted_by_type_then_direction(example):
    section = document_plan(compile_file(example))
    assert table_rows(section, "Mapped Relationships") == [
        ("`example_host`", "**PROTECTS**", "`*Network*`", "FORWARD"),  # target given by class only
        ("`example_host`", "**HAS**", "`*domain*`", "FORWARD"),  # mapping_source_has_domain
        ("`example_host`", "**HAS**", "`*domain*`", "REVERSE"),
        ("`example_user`", "**IS**", "`*employee*`", "FORWARD"),  # mapping_source_is_employee
    ]


# -- documentation files ---------------------------------------------------------------------


SECTION = f"{MARKER_START}\nnew\n{MARKER_END}"


def test_replace_keeps_everything_outside_the_markers_byte_identical():
    before = "# Title\r\n\r\nintro  \n\n"
    after = "\n\n[1]: https://example.com/\r\n"
    old = f"{before}{MARKER_START}\nold text\n| a |\n{MARKER_END}{after}"
    assert replace_section(old, SECTION) == before + SECTION + after


def test_append_after_a_blank_line_without_the_start_marker():
    assert replace_section("# Title\n", SECTION) == "# Title\n\n\n" + SECTION
    assert replace_section("", SECTION) == "\n\n" + SECTION


def test_start_marker_without_end_marker_is_an_error():
    with pytest.raises(DocumentationMarkerError, match="end marker"):
        replace_section(f"# Title\n{MARKER_START}\nsomething\n", SECTION, name="docs/x.md")
    # An end marker only before the start marker does not count.
    with pytest.raises(DocumentationMarkerError):
        replace_section(f"{MARKER_END}\n{MARKER_START}\n", SECTION)


def test_cli_prints_the_section_without_output(etl, example):
    result = etl("document", example)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == document_plan(compile_file(example)) + "\n"


def test_cli_updates_only_between_the_markers(etl, example, tmp_path):
    doc = tmp_path / "docs" / "example.md"
    doc.parent.mkdir()
    doc.write_bytes(f"# Example\r\n\r\n{MARKER_START}\nstale\n{MARKER_END}\n\n[1]: https://x/\n".encode())
    result = etl("document", example, "--output", doc)
    assert result.exit_code == 0, result.stderr
    section = document_plan(compile_file(example))
    assert doc.read_bytes() == f"# Example\r\n\r\n{section}\n\n[1]: https://x/\n".encode()
    assert "updated" in result.stdout
    assert "already up to date" in etl("document", example, "--output", doc).stdout


def test_cli_appends_to_a_file_without_markers_and_creates_a_missing_file(etl, example, tmp_path):
    section = document_plan(compile_file(example))
    doc = tmp_path / "doc.md"
    doc.write_text("# Example\n", encoding="utf-8")
    assert etl("document", example, "-o", doc).exit_code == 0
    assert read_text(doc) == "# Example\n\n\n" + section

    new = tmp_path / "new" / "doc.md"
    assert etl("document", example, "-o", new).exit_code == 0
    assert read_text(new) == section + "\n"


def test_cli_missing_end_marker_exits_5_and_writes_nothing(etl, example, tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(f"# Example\n{MARKER_START}\nhand-written\n", encoding="utf-8")
    result = etl("document", example, "--output", doc)
    assert result.exit_code == EXIT_RUN_FAILED == 5
    assert str(doc) in result.stderr and "end marker" in result.stderr
    assert read_text(doc) == f"# Example\n{MARKER_START}\nhand-written\n"


def test_cli_invalid_mapping_exits_3(etl, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(EXAMPLE_MAPPING.replace("class: User, key", "class: Usr, key"), encoding="utf-8")
    result = etl("document", broken)
    assert result.exit_code == EXIT_INVALID_MAPPING == 3
    assert "Usr" in result.stderr


def test_check_changes_nothing_and_fails_when_stale(etl, example, tmp_path):
    doc = tmp_path / "doc.md"
    stale = f"# Example\n\n{MARKER_START}\nstale\n{MARKER_END}\n"
    doc.write_text(stale, encoding="utf-8")
    result = etl("document", example, "--output", doc, "--check")
    assert result.exit_code == 1
    assert str(doc) in result.stderr and "not up to date" in result.stderr
    assert read_text(doc) == stale

    assert etl("document", example, "--output", doc).exit_code == 0
    result = etl("document", example, "--output", doc, "--check")
    assert result.exit_code == 0, result.stderr
    assert "up to date" in result.stdout


def test_check_fails_for_a_missing_file_without_creating_it(etl, example, tmp_path):
    result = etl("document", example, "--output", tmp_path / "missing.md", "--check")
    assert result.exit_code == 1
    assert "missing.md" in result.stderr
    assert not (tmp_path / "missing.md").exists()


def test_check_needs_output(etl, example):
    result = etl("document", example, "--check")
    assert result.exit_code == 2
    assert "--output" in result.stderr


# -- the real mappings --------------------------------------------------------------------------


def test_digicert_rows_equal_the_seed():
    section = document_plan(compile_file(DIGICERT))
    seed = (SEEDS / "digicert-data-model.md").read_text(encoding="utf-8")
    assert table_rows(section, "Entities") == table_rows(seed, "Entities")
    assert table_rows(section, "Relationships") == table_rows(seed, "Relationships")
    assert table_rows(section, "Mapped Relationships") == [
        ("`digicert_certificate`", "**HAS**", "`*domain*`", "REVERSE"),
    ]


@pytest.mark.skipif(not NOWSECURE.exists(), reason="mappings/nowsecure.yaml is not written yet")
def test_nowsecure_entities_and_relationships_are_byte_identical_to_the_seed():
    section = document_plan(compile_file(NOWSECURE))
    seed = marked_section((SEEDS / "nowsecure-data-model.md").read_text(encoding="utf-8"))
    assert without_subsection(section, "Mapped Relationships") == seed


def integration_id(mapping: Path) -> str:
    """Read without compiling, so that a broken mapping fails its own test, not collection."""
    try:
        return yaml.safe_load(mapping.read_text(encoding="utf-8"))["integration"]["id"]
    except Exception:
        return mapping.stem


def documented_mappings() -> list[tuple[Path, Path]]:
    pairs = []
    for mapping in sorted(MAPPINGS.glob("*.yaml")):
        doc = DOCS / f"{integration_id(mapping)}.md"
        if doc.exists():
            pairs.append((mapping, doc))
    return pairs


def test_digicert_doc_is_checked():
    assert (DIGICERT, DOCS / "digicert.md") in documented_mappings()


@pytest.mark.parametrize("mapping, doc", documented_mappings(), ids=lambda p: p.name)
def test_docs_are_regenerated_after_mapping_changes(mapping, doc):
    """Fails when a mapping changed but `etl document MAPPING --output docs/<id>.md` was not rerun."""
    assert marked_section(doc.read_text(encoding="utf-8")) == document_plan(compile_file(mapping)), (
        f"{doc.relative_to(ROOT)} is out of date: run "
        f"etl document {mapping.relative_to(ROOT)} --output {doc.relative_to(ROOT)}"
    )
