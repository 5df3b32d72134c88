"""docs/j1ql.md stays honest: every example query in it runs against the four bundled runs, on
SQLite and PostgreSQL, and answers something; the grammar it shows is the parser's."""

from __future__ import annotations

import re

import pytest

from engine import query
from engine.query import parser
from tests.conftest import ROOT
from tests.test_query_helpers import bundled_runs, bundled_store  # noqa: F401 - the fixtures

DOC = ROOT / "docs" / "j1ql.md"
DEC_1 = 1796083200000  # 2026-12-01T00:00:00Z


def examples() -> list[str]:
    return [" ".join(block.split()) for block in re.findall(r"```j1ql\n(.*?)```", DOC.read_text(), re.S)]


def test_the_doc_has_an_example_of_every_construct():
    text = " ".join(examples()).upper()
    constructs = [
        "FIND UNIQUE", "FIND *", "(USER|", " AS ", " WITH ", "!=", "<", ">=", "~=", "^=", "$=", "!~=", "!^=",
        "!$=", "UNDEFINED", "TRUE", '"', "('SECURITY' OR 'FINANCE')", "AND 'WWW.EXAMPLE.COM')", "[TAG.",
        "DATE.NOW -", "DATE.NOW +", "DAYS", "YEAR", "YRS", "MONTHS", "HOURS", "DATE(2016-01-01)", "T08:00:00Z)",
        " THAT ", "SCANS", ">>", "<<", "(SCANS|PROVIDES)", "RELATES TO", "PROVIDES TO", "THAT !", " WHERE ",
        "U.EMAIL != P.EMAIL", "RETURN", ".*", "COUNT(", "MIN(", "MAX(", "AVG(", "SUM(", "RETURN TREE",
        "ORDER BY", "DESC", "SKIP", "LIMIT", "_VERSION", "_CREATEDON", "AS M ",
    ]  # fmt: skip
    missing = [c for c in constructs if c not in text]
    assert missing == []


@pytest.mark.parametrize("text", examples())
def test_every_example_runs_and_answers(bundled_store, text):  # noqa: F811
    answer = query.run(bundled_store, text, now=DEC_1)
    assert answer["totalCount"] > 0, text


def test_the_grammar_is_the_parsers():
    doc = re.search(r"## The grammar\n\n```\n(.*?)```", DOC.read_text(), re.S).group(1)
    rules = {line.split("=", 1)[0].strip() for line in doc.splitlines() if re.match(r"^[a-z]+ +=", line)}
    code = {line.split("=", 1)[0].strip() for line in parser.__doc__.splitlines() if re.match(r"^    [a-z]+ +=", line)}
    assert code == rules
    for name in code:
        parser_line = next(line for line in parser.__doc__.splitlines() if re.match(rf"^    {name} +=", line))
        doc_line = next(line for line in doc.splitlines() if re.match(rf"^{name} +=", line))
        assert " ".join(parser_line.split()) == " ".join(doc_line.split()), name
