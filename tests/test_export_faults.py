"""Faults of export jobs and of bodies in other formats, against real local APIs: a failed job, a
job that never finishes, a truncated download, a malformed CSV row and a malformed XML record
(a per-record warning, the rest kept), XML bombs and external entities refused, a decompression
bomb refused, and a failed incremental run (its state not advanced). None of them is an
internal error: each is a step failure or a warning naming what went wrong."""

from __future__ import annotations

import gzip
import json

import pytest

from tests.fakes.exports import API_KEY, ExportApi
from tests.fakes.feeds import FeedApi, csv_of
from tests.fakes.paging import EXAMPLES, item_ids, partial_types, step_status
from tests.fakes.server import Response
from tests.graphtools import read_output

ALL = list(range(1, 24))


@pytest.fixture
def exports():
    with ExportApi() as server:
        yield server


@pytest.fixture
def feed():
    with FeedApi() as server:
        yield server


def export_run(etl, api, out, example="export-job-chunks.yaml"):
    return etl("run", EXAMPLES / example, "--base-url", api.url, "--output", out, "--config", f"apiKey={API_KEY}")


def run(etl, mapping, api, out, *extra):
    return etl("run", mapping, "--base-url", api.url, "--output", out, *extra)


# -- export jobs ------------------------------------------------------------------------------------


def test_a_failed_job_fails_the_step_naming_the_job_and_its_status(etl, exports, tmp_path):
    exports.fail_job = True
    result = export_run(etl, exports, tmp_path / "out")
    assert result.exit_code == 1
    assert (
        "error: export job \"e-1\" failed (export.failed: status == 'ERROR' || status == 'CANCELLED'); its last "
        f'status (GET {exports.url}/exports/e-1): {{"status": "ERROR", "error": "the export ran out of disk"}}'
    ) in result.stdout
    output = read_output(tmp_path / "out")
    assert step_status(output, "fetch-items") == "failure"
    assert partial_types(output) == ["example_item"]
    assert not any("/chunks/" in r.path for r in exports.log)


def test_a_job_that_never_finishes_times_out(etl, exports, tmp_path, sleeps):
    exports.never_ready = True
    result = export_run(etl, exports, tmp_path / "out")
    assert result.exit_code == 1
    assert 'export job "e-1" was not ready after 1800s' in result.stdout
    assert '{"status": "PROCESSING"}' in result.stdout and "raise export.poll.timeout" in result.stdout
    assert sum(sleeps) == 1800  # the waits went through the clock, and stopped at the timeout
    assert max(sleeps) == 30
    assert step_status(read_output(tmp_path / "out"), "fetch-items") == "failure"


def test_a_failed_job_on_the_report_api(etl, exports, tmp_path):
    exports.fail_job = True
    result = export_run(etl, exports, tmp_path / "out", "export-job-presigned-url.yaml")
    assert result.exit_code == 1
    assert 'export job "/reports/r-1" failed' in result.stdout and '{"state": "failed"}' in result.stdout


def test_a_truncated_download_is_retried_then_fails_naming_the_file(etl, exports, tmp_path):
    body = gzip.compress(b"".join(json.dumps(i).encode() + b"\n" for i in exports.items[10:20]))
    truncated = Response(200, body, headers={"Content-Type": "application/octet-stream"}, drop=True)
    exports.fail_next("/exports/e-1/chunks/2", truncated, truncated, truncated, truncated, truncated)
    result = export_run(etl, exports, tmp_path / "out")
    assert result.exit_code == 1
    assert "export file 2 (2): GET" in result.stdout and "/exports/e-1/chunks/2 failed after" in result.stdout
    output = read_output(tmp_path / "out")
    # The other chunks were read; nothing of the broken one was used.
    assert item_ids(output) == list(range(1, 11)) + list(range(21, 24))
    assert step_status(output, "fetch-items") == "failure"
    assert partial_types(output) == ["example_item"]


def test_a_truncated_download_that_comes_whole_on_a_retry(etl, exports, tmp_path):
    body = gzip.compress(b"".join(json.dumps(i).encode() + b"\n" for i in exports.items[10:20]))
    exports.fail_next("/exports/e-1/chunks/2", Response(200, body, drop=True))
    result = export_run(etl, exports, tmp_path / "out")
    assert result.exit_code == 0, result.stdout
    assert item_ids(read_output(tmp_path / "out")) == ALL


def test_a_decompression_bomb_is_refused(etl, exports, tmp_path):
    exports.chunk_body = lambda items: gzip.compress(b"\n" * 5_000_000)
    text = (
        (EXAMPLES / "export-job-chunks.yaml")
        .read_text()
        .replace("    auth: {kind: api_key", "    max_response_bytes: 1000000\n    auth: {kind: api_key")
    )
    mapping = tmp_path / "small.yaml"
    mapping.write_text(text)
    result = etl(
        "run", mapping, "--base-url", exports.url, "--output", tmp_path / "out", "--config", f"apiKey={API_KEY}"
    )
    assert result.exit_code == 1
    assert "inflates to more than the limit of 1000000 bytes; refused" in result.stdout


# -- rows and records that cannot be read --------------------------------------------------------------


def test_a_malformed_csv_row_is_a_warning_and_the_rest_are_kept(etl, feed, tmp_path):
    lines = csv_of(feed.items).splitlines(keepends=True)
    lines.insert(5, "x-not-a-number,bad row,2026-01-01,1,true\n")
    lines.insert(9, "too,few\n")
    lines.insert(12, '12,"bad"quote,2026,1,true\n')
    feed.csv_body = "".join(lines).encode()
    result = run(etl, EXAMPLES / "format-csv.yaml", feed, tmp_path / "out")
    assert result.exit_code == 1, result.stdout
    output = read_output(tmp_path / "out")
    assert step_status(output, "fetch-items") == "success"
    assert partial_types(output) == ["example_item"]  # rows were lost: nothing is deleted downstream
    kept = item_ids(output)
    assert kept[:10] == list(range(1, 11)) and 23 in kept
    assert "line 6: column 'id': 'x-not-a-number' is not an integer; row skipped" in result.stdout
    assert sorted(kept) == ALL
    assert result.stdout.count("3 warning(s)") == 1


def test_a_malformed_xml_record_is_a_warning_and_the_rest_are_kept(etl, feed, tmp_path):
    records = "".join(
        f'<item id="{i}"><name>item {i}</name></item>\n' if i != 5 else '<item id="5"><name>a & b</nam></item>\n'
        for i in ALL
    )
    feed.xml_body = f"<items>\n{records}</items>\n".encode()
    result = run(etl, EXAMPLES / "format-xml.yaml", feed, tmp_path / "out")
    assert result.exit_code == 1, result.stdout
    output = read_output(tmp_path / "out")
    assert sorted(int(e["itemId"]) for e in output["entities"]) == [i for i in ALL if i != 5]
    assert partial_types(output) == ["example_item"]
    assert "line 6: the <item> record starting at line 6 is malformed XML" in result.stdout


@pytest.mark.parametrize(
    "document, declared",
    [
        (
            '<?xml version="1.0"?><!DOCTYPE items [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">'
            '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;">]><items><item id="1"><name>&lol3;</name></item></items>',
            "lol",
        ),
        (
            '<?xml version="1.0"?><!DOCTYPE items [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
            '<items><item id="1"><name>&xxe;</name></item></items>',
            "xxe",
        ),
        (
            '<?xml version="1.0"?><!DOCTYPE items [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/x.dtd"> %remote;]>'
            '<items><item id="1"><name>a</name></item></items>',
            "remote",
        ),
    ],
    ids=["billion-laughs", "external-entity", "parameter-entity"],
)
def test_xml_bombs_and_entities_are_refused(etl, feed, tmp_path, document, declared):
    feed.xml_body = document.encode()
    result = run(etl, EXAMPLES / "format-xml.yaml", feed, tmp_path / "out")
    assert result.exit_code == 1, result.stdout
    assert f"refused to read {feed.url}/items.xml as XML: it declares the entity '{declared}'" in result.stdout
    assert step_status(read_output(tmp_path / "out"), "fetch-items") == "failure"


def test_xml_that_is_not_well_formed_before_any_record_fails_the_step(etl, feed, tmp_path):
    feed.xml_body = b"<items><<item></items>"
    result = run(etl, EXAMPLES / "format-xml.yaml", feed, tmp_path / "out")
    assert result.exit_code == 1
    assert "is not well-formed XML: line 1" in result.stdout


def test_a_malformed_json_line_is_a_warning(etl, exports, tmp_path):
    def body(items):
        lines = [json.dumps(i) for i in items]
        if len(lines) > 3:
            lines[3] = f'{{"id": {items[3]["id"]}, "name": '
        return gzip.compress("\n".join(lines).encode())

    exports.chunk_body = body
    result = export_run(etl, exports, tmp_path / "out")
    assert result.exit_code == 1
    assert sorted(item_ids(read_output(tmp_path / "out"))) == [i for i in ALL if i not in (4, 14)]
    assert "line 4 is not JSON" in result.stdout


# -- incremental state ------------------------------------------------------------------------------


def test_a_failed_incremental_run_does_not_advance_the_state(etl, feed, tmp_path):
    out = tmp_path / "out"
    assert run(etl, EXAMPLES / "incremental.yaml", feed, out).exit_code == 0
    state_file = tmp_path / ".out.state.json"
    saved = state_file.read_bytes()
    feed.items.append({"id": 24, "name": "item 24", "updated_at": "2026-01-24T00:00:00Z"})
    feed.fail_next("/items", Response(200, b"{not json", headers={"Content-Type": "application/json"}))
    result = run(etl, EXAMPLES / "incremental.yaml", feed, out)
    assert result.exit_code == 1
    assert step_status(read_output(out), "fetch-items") == "failure"
    assert state_file.read_bytes() == saved
    # A run that fails as a whole (exit 5: nothing written) leaves it too.
    result = etl("run", EXAMPLES / "incremental.yaml", "--base-url", "not a url", "--output", out)
    assert result.exit_code == 4
    assert state_file.read_bytes() == saved
