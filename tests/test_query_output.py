"""An answer as JSON, an aligned table and CSV (engine/query/output.py), without a store."""

from __future__ import annotations

import json

import pytest

from engine.query.output import cell, clip, render

LIST = {
    "type": "list",
    "totalCount": 2,
    "data": [
        {"_key": "h:1", "_type": "acme_host", "_class": ["Host"], "displayName": "web", "tags": ["a", "b"]},
        {"_key": "h:2", "_type": "acme_host", "_class": ["Host"], "name": "db", "up": True},
    ],
}
TREE = {
    "type": "tree",
    "totalCount": 2,
    "data": {
        "vertices": LIST["data"],
        "edges": [{"_key": "h:1|connects|h:2", "_type": "acme_connects", "_class": "CONNECTS",
                   "_fromEntityKey": "h:1", "_toEntityKey": "h:2"}],
    },
}  # fmt: skip


def test_cells():
    assert cell(None) == "" and cell(True) == "true" and cell(False) == "false" and cell(3.5) == "3.5"
    assert cell(["a", 1, True, ["x"]]) == 'a, 1, true, ["x"]'
    assert cell({"_key": "k", "displayName": "Name"}) == "Name" and cell({"a": 1}) == '{"a": 1}'
    assert cell("two\nlines\tand a tab") == "two lines and a tab"
    assert cell(1802563200000, "expiresOn") == "2027-02-14"  # a J1 timestamp, at midnight: the date
    assert cell(1802563201000, "createdOn") == "2027-02-14T00:00:01Z"
    assert cell(1802563200000, "count") == "1802563200000"  # not a ...On property
    assert cell(42, "createdOn") == "42"  # not milliseconds of this century
    assert clip("x" * 41) == "x" * 39 + "…" and clip("x" * 40) == "x" * 40


def test_tables():
    assert render(LIST, "table").splitlines() == [
        "_type      _key  displayName",
        "---------  ----  -----------",
        "acme_host  h:1   web",
        "acme_host  h:2   db",
        "2 entities",
    ]
    assert render(TREE, "table").splitlines()[-4:] == [
        "_type          _fromEntityKey  _class    _toEntityKey",
        "-------------  --------------  --------  ------------",
        "acme_connects  h:1             CONNECTS  h:2",
        "2 vertices, 1 edge",
    ]
    rows = {"type": "table", "totalCount": 1, "data": [{"h.name": "web", "h": {"_key": "h:1", "displayName": "web"}}]}
    assert render(rows, "table").splitlines() == ["h.name  h", "------  ---", "web     web", "1 row"]
    assert render({"type": "tree", "totalCount": 0, "data": {"vertices": [], "edges": []}}, "table") == "No results."


def test_csv_and_json():
    assert render(LIST, "csv").splitlines() == [
        "_key,_type,_class,displayName,tags,name,up",
        'h:1,acme_host,"[""Host""]",web,"[""a"", ""b""]",,',
        'h:2,acme_host,"[""Host""]",,,db,true',
    ]
    assert json.loads(render(LIST, "json")) == LIST
    with pytest.raises(ValueError, match="no CSV"):
        render(TREE, "csv")
