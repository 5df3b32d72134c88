"""`etl query`: the README's questions run as written, the output formats, errors and exit codes."""

from __future__ import annotations

import csv
import io
import json
import re
import shlex

import click
import pytest

from tests.conftest import ROOT
from tests.storetools import store_url  # noqa: F401 - the fixture
from tests.test_query_helpers import bundled_runs, bundled_store  # noqa: F401 - the fixtures

README = ROOT / "README.md"


def readme_block(heading: str, language: str = "bash", number: int = 0) -> str:
    section = README.read_text(encoding="utf-8").split(heading, 1)[1]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)[number]


def readme_commands(heading: str) -> list[list[str]]:
    return [shlex.split(line) for line in readme_block(heading).splitlines() if line.strip()]


def test_the_readme_questions_are_answered_as_shown(etl, store_url, tmp_path):  # noqa: F811
    """The graph store's commands load the four bundled runs offline; the two queries print what
    the README shows (SQLite as written; PostgreSQL with its URL instead)."""

    def run(argv: list[str]) -> str:
        assert argv[0] == "etl"
        args = [str(ROOT / a) if a.startswith("mappings/") else a for a in argv[1:]]
        args = [store_url if a == "sqlite:///graph.db" else a for a in args]
        args = [str(tmp_path / a) if a.startswith(("runs/", "graph-export")) else a for a in args]
        result = etl(*args)
        assert result.exit_code == 0, (argv, result.stdout, result.stderr)
        return result.stdout

    for argv in readme_commands("## The graph store"):
        run(argv)
    printed = "".join(run(argv) for argv in readme_commands("### Query the graph"))
    assert printed == readme_block("### Query the graph", "text")
    expiring, people = readme_commands("### Query the graph")
    assert "expiresOn < date.now + 30 days" in expiring[2] and "!IS Person" in people[2]


def query_json(etl, store: str, text: str, *more: str) -> dict:
    result = etl("query", text, "--store", store, "--format", "json", *more)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_json_is_jupiterones_shape(etl, bundled_store):  # noqa: F811
    listed = query_json(etl, bundled_store, "FIND nowsecure_user WITH active = false")
    assert listed["type"] == "list" and listed["totalCount"] == 1
    (carol,) = listed["data"]
    assert (
        carol["_key"] == "nowsecure-user:115" and carol["_class"] == ["User"] and carol["email"] == "carol@example.com"
    )
    table = query_json(etl, bundled_store, "FIND Person AS p RETURN p.department, count(p) ORDER BY p.department")
    assert table == {
        "type": "table",
        "totalCount": 4,
        "data": [
            {"p.department": "Engineering", "count(p)": 2},
            {"p.department": "Executive", "count(p)": 1},
            {"p.department": "Finance", "count(p)": 1},
            {"p.department": "Security", "count(p)": 3},
        ],
    }
    tree = query_json(
        etl, bundled_store, "FIND nowsecure_user WITH email = 'bob@example.com' THAT IS Person RETURN tree"
    )
    assert tree["type"] == "tree" and tree["totalCount"] == 2
    assert [v["_key"] for v in tree["data"]["vertices"]] == ["hr_employee:E1002", "nowsecure-user:114"]
    assert [e["_key"] for e in tree["data"]["edges"]] == ["nowsecure-user:114|is|hr_employee:E1002"]


def test_table_and_csv(etl, bundled_store):  # noqa: F811
    text = "FIND dns_zone WITH public = true AS z RETURN z.name, z.nameservers, z.expiresOn ORDER BY z.name"
    table = etl("query", text, "--store", bundled_store)
    assert table.exit_code == 0
    assert table.stdout.splitlines() == [
        "z.name       z.nameservers                             z.expiresOn",
        "-----------  ----------------------------------------  -----------",
        "example.com  ns1.dns.example.net, ns2.dns.example.net  2027-08-13",
        "example.net  ns1.dns.example.net, ns2.dns.example.net  2027-04-02",
        "example.org  ns1.dns.example.net, ns2.dns.example.net  2027-01-20",
        "3 rows",
    ]
    rows = list(csv.reader(io.StringIO(etl("query", text, "--store", bundled_store, "--format", "csv").stdout)))
    assert rows[0] == ["z.name", "z.nameservers", "z.expiresOn"]
    assert rows[1] == ["example.com", '["ns1.dns.example.net", "ns2.dns.example.net"]', "1818115200000"]
    listed = etl("query", "FIND Team", "--store", bundled_store, "--format", "csv").stdout
    header, first, *_ = list(csv.reader(io.StringIO(listed)))
    assert header[:3] == ["_key", "_type", "_class"] and first[:3] == [
        "hr_department:D-01",
        "hr_department",
        '["Team"]',
    ]
    people = etl("query", "FIND Team", "--store", bundled_store).stdout.splitlines()
    assert people[0].split() == ["_type", "_key", "displayName"] and people[-1] == "4 entities"
    assert etl("query", "FIND Nothing", "--store", bundled_store).stdout == "No results.\n"


def test_long_cells_are_cut_in_a_table(etl, bundled_store):  # noqa: F811
    out = etl("query", "FIND nowsecure_finding AS f RETURN f.webLink LIMIT 1", "--store", bundled_store).stdout
    cell = out.splitlines()[2]
    assert len(cell) == 40 and cell.endswith("…")


def test_the_query_from_stdin_and_the_store_from_the_environment(etl, bundled_store):  # noqa: F811
    from click.testing import CliRunner

    from engine.cli import main

    result = CliRunner().invoke(
        main,
        ["query", "-", "--format", "json"],
        input="FIND Team\n  WITH name = 'Security'",
        env={"ETL_STORE": bundled_store},
    )
    assert result.exit_code == 0, result.output
    assert [e["_key"] for e in json.loads(result.stdout)["data"]] == ["hr_department:D-10"]


def test_as_of_sets_date_now(etl, bundled_store):  # noqa: F811
    text = "FIND digicert_certificate WITH active = true AND expiresOn < date.now"
    assert query_json(etl, bundled_store, text, "--as-of", "2025-01-01T00:00:00Z")["totalCount"] == 0
    assert query_json(etl, bundled_store, text, "--as-of", "2026-06-01")["totalCount"] == 2
    bad = etl("query", text, "--store", bundled_store, "--as-of", "soon")
    assert bad.exit_code == 2 and "--as-of: 'soon' is not an ISO-8601 time" in bad.stderr


def test_errors_and_exit_codes(etl, bundled_store, tmp_path):  # noqa: F811
    wrong = etl("query", "FIND * WITH = 1", "--store", bundled_store)
    assert wrong.exit_code == 2 and wrong.stderr == "etl: error: query:1:13: expected a property name, found '='\n"
    missing = etl("query", "FIND Host", "--store", f"sqlite:///{tmp_path / 'none.db'}")
    assert missing.exit_code == 5 and "does not exist" in missing.stderr
    no_store = etl("query", "FIND Host", env={"ETL_STORE": ""})
    assert no_store.exit_code == 2 and "--store" in no_store.stderr
    tree_csv = etl("query", "FIND Host RETURN tree", "--store", bundled_store, "--format", "csv")
    assert tree_csv.exit_code == 2 and "RETURN tree answers a graph" in tree_csv.stderr
    refused = etl("query", "FIND Host", "--store", "postgresql://etl:s3cret@127.0.0.1:1/nowhere")
    assert refused.exit_code == 5 and "s3cret" not in refused.stderr


def test_help_lists_exit_codes_and_every_option_has_help(etl):
    from engine.cli import main

    result = etl("query", "--help")
    assert result.exit_code == 0 and "Exit codes" in result.stdout and "70  internal error" in result.stdout
    assert "docs/j1ql.md" in result.stdout and "ETL_STORE" in result.stdout
    for param in main.commands["query"].params:
        if isinstance(param, click.Option):
            assert param.help, param.opts


@pytest.mark.parametrize("output_format", ["table", "json", "csv"])
def test_every_format_prints_an_empty_answer(etl, bundled_store, output_format):  # noqa: F811
    result = etl("query", "FIND Nothing AS n RETURN n.name", "--store", bundled_store, "--format", output_format)
    assert result.exit_code == 0
    expected = {"table": "No results.\n", "csv": "\n", "json": None}[output_format]
    if expected is None:
        assert json.loads(result.stdout) == {"type": "table", "totalCount": 0, "data": []}
    else:
        assert result.stdout == expected


def test_visualize_draws_the_answer_of_a_query(etl, bundled_store, tmp_path):  # noqa: F811
    """etl visualize --store --query: a page of just the answer (certificates and their Domains)."""
    page = tmp_path / "answer.html"
    result = etl(
        "visualize",
        "--store",
        bundled_store,
        "--query",
        "FIND Certificate THAT HAS Domain RETURN tree",
        "--output",
        page,
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(
        re.search(r'<script type="application/json" id="graph-data">(.*?)</script>', page.read_text(), re.S).group(1)
    )
    types = {node["type"] for node in data["nodes"]}
    assert "digicert_certificate" in types and types & {"dns_zone", "dns_subdomain"}
    assert data["edges"] and all(edge["label"] == "HAS" for edge in data["edges"])
    assert etl("visualize", "--store", bundled_store, "--query", "FIND Certificate WITH").exit_code == 2
    assert etl("visualize", "--query", "FIND Certificate", env={"ETL_STORE": ""}).exit_code == 2
    assert etl("visualize", tmp_path, "--store", bundled_store, "--query", "FIND *").exit_code == 2
