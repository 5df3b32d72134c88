"""Bodies other than JSON objects (a step's `response`), against a real local API
(tests/fakes/feeds.py): CSV typed by the mapping, XML by its documented convention, JSON Lines,
gzip and zip, chosen by the mapping or by the response's Content-Type and file name."""

from __future__ import annotations

import gzip
import io
import zipfile

import pytest

from tests.fakes.feeds import FeedApi, csv_of, xml_of
from tests.fakes.paging import EXAMPLES, ITEM_ENTITY, item_ids, item_mapping, partial_types, write_mapping
from tests.fakes.server import Response
from tests.graphtools import read_output

ALL = list(range(1, 24))


@pytest.fixture
def api():
    with FeedApi() as server:
        yield server


def run(etl, mapping, api, out, *extra):
    return etl("run", mapping, "--base-url", api.url, "--output", out, *extra)


def entities(out) -> list[dict]:
    return [e for e in read_output(out)["entities"] if e["_type"] == "example_item"]


def raw(entity: dict) -> dict:
    return entity["_rawData"][0]["rawData"]


def test_csv_example_types_its_columns(etl, api, tmp_path):
    result = run(etl, EXAMPLES / "format-csv.yaml", api, tmp_path / "out")
    assert result.exit_code == 0, result.stdout + result.stderr
    built = entities(tmp_path / "out")
    assert [e["itemId"] for e in built] == ALL
    assert raw(built[0]) == {
        "id": 1,
        "name": "item 1",
        "updated_at": "2026-01-01T00:00:00Z",
        "score": 0.5,
        "active": False,
    }
    assert built[1]["active"] is True and built[1]["score"] == 1


def test_xml_example_follows_the_convention(etl, api, tmp_path):
    result = run(etl, EXAMPLES / "format-xml.yaml", api, tmp_path / "out")
    assert result.exit_code == 0, result.stdout + result.stderr
    built = entities(tmp_path / "out")
    assert [e["itemId"] for e in built] == ALL
    assert raw(built[0]) == {"id": "1", "name": "item 1", "updated": "2026-01-01T00:00:00Z", "tag": ["a", "b"]}
    assert built[0]["tags"] == ["a", "b"]


def mapping_for(tmp_path, path: str, response: dict, records: str = "@", **step) -> object:
    data = item_mapping(request={"path": path}, records=records, step={"response": response, **step})
    return write_mapping(tmp_path / "m.yaml", data)


def serve(api, path: str, body: bytes, content_type: str = "application/octet-stream", **headers):
    api.route("GET", path, lambda request: Response(200, body, headers={"Content-Type": content_type, **headers}))
    api.routes.insert(0, api.routes.pop())


def test_xml_without_element_is_one_document(etl, api, tmp_path):
    mapping = mapping_for(tmp_path, "/items.xml", {"format": "xml"}, records="items.item")
    result = run(etl, mapping, api, tmp_path / "out")
    assert result.exit_code == 0, result.stdout
    assert [raw(e)["id"] for e in entities(tmp_path / "out")] == [str(i) for i in ALL]


def test_xml_options(etl, api, tmp_path):
    api.xml_body = (
        b'<r:report xmlns:r="urn:r"><r:hosts><r:host r:id="1" name="h">'
        b"<name>inner</name>text<r:ip>10.0.0.1</r:ip></r:host></r:hosts></r:report>"
    )
    response = {
        "format": "xml",
        "xml": {"element": "r:report/r:hosts/r:host", "namespaces": "keep", "attribute_prefix": "@", "text_key": "#"},
    }
    data = item_mapping(
        request={"path": "/items.xml"},
        step={"response": response, "entities": [{**ITEM_ENTITY, "key": "host-key:{{ record['@r:id'] }}"}]},
        records="@",
    )
    result = run(etl, write_mapping(tmp_path / "m.yaml", data), api, tmp_path / "out")
    assert result.exit_code == 0, result.stdout
    (built,) = entities(tmp_path / "out")
    assert raw(built) == {"@r:id": "1", "@name": "h", "name": "inner", "#": "text", "r:ip": "10.0.0.1"}


@pytest.mark.parametrize(
    "name, content_type, body",
    [
        ("/export.jsonl", "application/octet-stream", "jsonl"),
        ("/export", "application/x-ndjson", "jsonl"),
        ("/export", "text/csv", "csv"),
        ("/export", "application/xml", "xml"),
        ("/export.csv.gz", "application/octet-stream", "csv.gz"),
        ("/export", "application/gzip", "jsonl.gz"),
        ("/export.zip", "binary/octet-stream", "csv.zip"),
        ("/export", "application/octet-stream", "jsonl.gz"),  # the magic bytes, then the first lines
    ],
)
def test_auto_detection(etl, api, tmp_path, name, content_type, body):
    import json

    items = [{"id": i, "name": f"item {i}"} for i in ALL]
    plain = {
        "jsonl": "".join(json.dumps(i) + "\n" for i in items).encode(),
        "csv": csv_of(api.items).encode(),
        "xml": xml_of(api.items).encode(),
    }
    kind, _, packing = body.partition(".")
    data = plain[kind]
    if packing == "gz":
        data = gzip.compress(data)
    elif packing == "zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("items." + kind, data)
        data = buffer.getvalue()
    serve(api, name, data, content_type)
    records = "@"
    step: dict = {"response": {"xml": {"element": "item"}}}
    mapping = write_mapping(tmp_path / "m.yaml", item_mapping(request={"path": name}, records=records, step=step))
    result = run(etl, mapping, api, tmp_path / "out")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert sorted(int(e["itemId"]) for e in entities(tmp_path / "out")) == ALL


def test_content_disposition_names_the_file(etl, api, tmp_path):
    """The file name of Content-Disposition (items.csv.gz) says gzip, then CSV."""
    body = gzip.compress(csv_of(api.items).encode())
    serve(api, "/download", body, **{"Content-Disposition": 'attachment; filename="items.csv.gz"'})
    result = run(etl, mapping_for(tmp_path, "/download", {}), api, tmp_path / "out")
    assert result.exit_code == 0, result.stdout
    built = entities(tmp_path / "out")
    assert len(built) == 23 and raw(built[0])["name"] == "item 1" and raw(built[0])["id"] == "1"


def test_records_applies_to_each_line(etl, api, tmp_path):
    lines = b'{"page": 1, "items": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}\n{"page": 2, "items": [{"id": 3, "name": "c"}]}\n'
    serve(api, "/pages.jsonl", lines)
    result = run(
        etl, mapping_for(tmp_path, "/pages.jsonl", {"format": "jsonl"}, records="items"), api, tmp_path / "out"
    )
    assert result.exit_code == 0
    assert item_ids(read_output(tmp_path / "out")) == [1, 2, 3]


def test_csv_options(etl, api, tmp_path):
    serve(api, "/items.tsv", "id\tname\tmeta\n1\tcafé\t{\"a\": [1]}\n2\t'x\ty'\t\n".encode("latin-1"))
    response = {
        "format": "csv",
        "csv": {"delimiter": "\t", "quote": "'", "encoding": "latin-1", "columns": {"id": "integer", "meta": "json"}},
    }
    result = run(etl, mapping_for(tmp_path, "/items.tsv", response), api, tmp_path / "out")
    assert result.exit_code == 0, result.stdout
    assert [raw(e) for e in entities(tmp_path / "out")] == [
        {"id": 1, "name": "café", "meta": {"a": [1]}},
        {"id": 2, "name": "x\ty", "meta": None},
    ]


def test_csv_in_the_wrong_encoding_fails_naming_the_option(etl, api, tmp_path):
    serve(api, "/items.csv2", "id,name\n1,café\n".encode("latin-1"))
    result = run(etl, mapping_for(tmp_path, "/items.csv2", {"format": "csv"}), api, tmp_path / "out")
    assert result.exit_code == 1
    assert "is not utf-8-sig text" in result.stdout and "response.csv.encoding" in result.stdout


def test_a_column_typo_is_warned(etl, api, tmp_path):
    response = {"format": "csv", "csv": {"columns": {"scroe": "number"}}}
    result = run(etl, mapping_for(tmp_path, "/items.csv", response), api, tmp_path / "out", "-v")
    assert result.exit_code == 1
    assert "response.csv.columns names scroe, which the header row does not have" in result.stdout


def test_paginated_csv_pages_with_a_header_total(etl, api, tmp_path):
    """A paginated step decodes each page whole; the pagination reads the headers."""

    def page(request):
        offset, limit = int(request.query.get("offset", 0)), int(request.query["limit"])
        return Response(
            200,
            csv_of(api.items[offset : offset + limit]).encode(),
            headers={"Content-Type": "text/csv", "X-Total-Count": "23"},
        )

    api.route("GET", "/paged.csv", page)
    data = item_mapping(
        {"kind": "offset", "limit": 10, "total": {"header": "X-Total-Count"}},
        request={"path": "/paged.csv"},
        records="@",
        step={"response": {"csv": {"columns": {"id": "integer"}}}},
    )
    result = run(etl, write_mapping(tmp_path / "m.yaml", data), api, tmp_path / "out")
    assert result.exit_code == 0, result.stdout
    assert item_ids(read_output(tmp_path / "out")) == ALL
    assert [r.query.get("offset") for r in api.log] == ["0", "10", "20"]


def test_paginated_xml_reads_its_cursor_from_the_document(etl, api, tmp_path):
    def page(request):
        start = int(request.query.get("cursor") or 0)
        items = api.items[start : start + 10]
        following = f"<next>{start + 10}</next>" if start + 10 < 23 else "<next/>"
        rows = "".join(f'<item id="{i["id"]}"><name>{i["name"]}</name></item>' for i in items)
        return Response(200, f"<page>{rows}{following}</page>".encode(), headers={"Content-Type": "text/xml"})

    api.route("GET", "/paged.xml", page)
    data = item_mapping(
        {"kind": "cursor", "cursor": "page.next"},
        request={"path": "/paged.xml"},
        records="page.item",
        step={"response": {"format": "xml"}},
    )
    result = run(etl, write_mapping(tmp_path / "m.yaml", data), api, tmp_path / "out")
    assert result.exit_code == 0, result.stdout
    assert sorted(int(e["itemId"]) for e in entities(tmp_path / "out")) == ALL


def test_response_mistakes_are_located(etl, tmp_path):
    data = item_mapping(
        step={
            "response": {
                "format": "json",
                "compression": "gzip",
                "csv": {"encoding": "klingon", "delimiter": ";", "quote": ";"},
                "xml": {"element": "a//b"},
                "members": "*.csv",
            }
        }
    )
    result = etl("validate", write_mapping(tmp_path / "bad.yaml", data))
    assert result.exit_code == 3
    for said in (
        "steps[0].response.csv: 'csv' options are for format csv (or auto), not json",
        "steps[0].response.xml: 'xml' options are for format xml (or auto), not json",
        "steps[0].response.members: 'members' picks files of a zip archive; compression is gzip",
        "steps[0].response.csv.encoding: unknown text encoding 'klingon'",
        "steps[0].response.csv.quote: the quote character cannot be the delimiter",
        "steps[0].response.xml.element: 'a//b' is not an element name",
    ):
        assert said in result.stderr, result.stderr
    assert "bad.yaml:" in result.stderr


def test_partial_types_stay_empty_for_clean_files(etl, api, tmp_path):
    result = run(etl, EXAMPLES / "format-csv.yaml", api, tmp_path / "out")
    assert partial_types(read_output(tmp_path / "out")) == []
    assert result.exit_code == 0
