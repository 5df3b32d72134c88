"""Asynchronous export jobs against a real local API (tests/fakes/exports.py): the documented
examples start a job, poll it with a growing wait (through the HTTP clock), download its files
in order and build every record; downloads on another origin carry no credential; `etl preview`
shows the job's requests."""

from __future__ import annotations

import gzip
import json

import pytest

from tests.fakes.exports import API_KEY, ExportApi, jsonl, make_items
from tests.fakes.paging import EXAMPLES, item_ids, partial_types, step_status, write_mapping
from tests.fakes.server import Response
from tests.graphtools import read_output

ALL = list(range(1, 24))


@pytest.fixture
def api():
    with ExportApi() as server:
        yield server


def run(etl, mapping, api, out, *extra):
    return etl("run", mapping, "--base-url", api.url, "--output", out, "--config", f"apiKey={API_KEY}", *extra)


def test_chunked_export_example(etl, api, tmp_path, sleeps):
    result = run(etl, EXAMPLES / "export-job-chunks.yaml", api, tmp_path / "out")
    assert result.exit_code == 0, result.stdout + result.stderr
    output = read_output(tmp_path / "out")
    assert item_ids(output) == ALL
    assert partial_types(output) == []
    calls = [(r.method, r.path) for r in api.log]
    assert calls[:4] == [
        ("POST", "/exports"),
        ("GET", "/exports/e-1"),
        ("GET", "/exports/e-1"),
        ("GET", "/exports/e-1"),
    ]
    assert sorted(calls[4:]) == [("GET", f"/exports/e-1/chunks/{n}") for n in (1, 2, 3)]
    assert json.loads(api.log[0].body) == {"format": "jsonl"}
    # Two polls found the job processing: the waits grow by `backoff` (2s, then 3s).
    assert sleeps == [2, 3]


def test_records_keep_the_order_of_the_chunks(etl, api, tmp_path):
    """Chunks are downloaded several at a time, and read in the job's order."""
    api.items = make_items(95)
    result = run(etl, EXAMPLES / "export-job-chunks.yaml", api, tmp_path / "out", "--concurrency", "4")
    assert result.exit_code == 0, result.stdout + result.stderr
    keys = [e["itemId"] for e in read_output(tmp_path / "out")["entities"]]
    assert keys == list(range(1, 96))


def test_presigned_url_on_another_origin_goes_without_credentials(etl, api, tmp_path):
    result = run(etl, EXAMPLES / "export-job-presigned-url.yaml", api, tmp_path / "out")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert item_ids(read_output(tmp_path / "out")) == ALL
    assert api.log[0].method == "POST" and api.log[1].path == "/reports/r-1"  # the Location header named the job
    (download,) = api.storage.log
    assert download.path == "/bucket/r-1.zip" and download.query == {"signature": "s3cr3t-signature"}
    assert "x-api-key" not in download.headers
    assert API_KEY not in json.dumps(download.headers)


def test_presigned_url_is_refused_unless_the_source_allows_it(etl, api, tmp_path):
    text = (EXAMPLES / "export-job-presigned-url.yaml").read_text().replace("    cross_origin: anonymous\n", "")
    mapping = tmp_path / "refuse.yaml"
    mapping.write_text(text)
    result = run(etl, mapping, api, tmp_path / "out")
    assert result.exit_code == 1
    assert "is on another origin" in result.stdout and "cross_origin: anonymous" in result.stdout
    assert api.storage.log == []
    assert step_status(read_output(tmp_path / "out"), "fetch-items") == "failure"


def test_allowed_origin_gets_the_credentials(etl, api, tmp_path):
    text = (EXAMPLES / "export-job-presigned-url.yaml").read_text()
    text = text.replace("    cross_origin: anonymous\n", f"    allowed_origins: ['{api.storage.url}']\n")
    mapping = tmp_path / "allowed.yaml"
    mapping.write_text(text)
    result = run(etl, mapping, api, tmp_path / "out")
    assert result.exit_code == 0, result.stdout
    assert api.storage.log[0].headers["x-api-key"] == API_KEY


def test_files_given_as_urls_without_a_download_request(etl, api, tmp_path):
    api.route(
        "GET",
        r"/exports/(?P<job>[^/]+)",
        lambda request, job: Response(
            200, {"status": "FINISHED", "urls": [f"/exports/{job}/chunks/1", f"{api.url}/exports/{job}/chunks/2"]}
        ),
    )
    api.routes.insert(0, api.routes.pop())  # before the export's own status route
    text = (EXAMPLES / "export-job-chunks.yaml").read_text()
    text = text.replace("      files: chunks\n", "      files: urls\n")
    text = text.replace('      download: {path: "/exports/{{ job.id }}/chunks/{{ file }}"}\n', "")
    mapping = tmp_path / "urls.yaml"
    mapping.write_text(text)
    result = run(etl, mapping, api, tmp_path / "out")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert item_ids(read_output(tmp_path / "out")) == list(range(1, 21))


def test_format_and_compression_detected_from_the_bytes(etl, api, tmp_path):
    """Without `response`, an export's files are read as `auto`: gzip by its magic bytes, JSON
    Lines by its first lines."""
    text = (
        (EXAMPLES / "export-job-chunks.yaml")
        .read_text()
        .replace("    response: {format: jsonl, compression: gzip}\n", "")
    )
    mapping = tmp_path / "auto.yaml"
    mapping.write_text(text)
    result = run(etl, mapping, api, tmp_path / "out")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert item_ids(read_output(tmp_path / "out")) == ALL


def test_a_job_ready_at_once_is_not_waited_for(etl, api, tmp_path, sleeps):
    api.polls_before_ready = 0
    result = run(etl, EXAMPLES / "export-job-chunks.yaml", api, tmp_path / "out")
    assert result.exit_code == 0
    assert sleeps == []
    assert [r.path for r in api.log].count("/exports/e-1") == 1


def test_the_waits_stop_growing_at_max_interval(etl, api, tmp_path, sleeps):
    api.polls_before_ready = 8
    result = run(etl, EXAMPLES / "export-job-chunks.yaml", api, tmp_path / "out")
    assert result.exit_code == 0
    assert sleeps == [2, 3, 4.5, 6.75, 10.125, 15.1875, 22.78125, 30]


def test_preview_shows_the_job(etl, api, tmp_path):
    result = etl(
        "preview",
        EXAMPLES / "export-job-chunks.yaml",
        "--base-url",
        api.url,
        "--config",
        f"apiKey={API_KEY}",
        "--limit",
        "2",
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    requests = lines[lines.index("requests:") + 1 : lines.index("records (first 2):")]
    assert requests[0].strip() == f"POST {api.url}/exports -> 202, 0 record(s)"
    assert [line.strip() for line in requests[1:4]] == [f"GET {api.url}/exports/e-1 -> 200, 0 record(s)"] * 3
    assert requests[4].strip() == f"GET {api.url}/exports/e-1/chunks/1 -> 200, 2 record(s)"
    assert '{"id": 1, "name": "item 1"}' in result.stdout


def test_job_id_missing_from_the_start_response(etl, api, tmp_path):
    text = (EXAMPLES / "export-job-chunks.yaml").read_text().replace("job_id: export_id", "job_id: exportId")
    mapping = tmp_path / "typo.yaml"
    mapping.write_text(text)
    result = run(etl, mapping, api, tmp_path / "out")
    assert result.exit_code == 1
    assert "started no export job: the job id (exportId) is null in its response: " in result.stdout
    assert '{"export_id": "e-1"}' in result.stdout


def test_export_mistakes_are_located(etl, tmp_path):
    data = {
        "version": 1,
        "integration": {"id": "x", "name": "X"},
        "sources": {"api": {"base_url": "https://api.example.invalid"}},
        "steps": [
            {
                "id": "fetch-items",
                "export": {
                    "job_id": "id",
                    "status": {"path": "/jobs/{{ job.idd }}/{{ file }}"},
                    "ready": "status ==",
                    "files": "files",
                    "poll": {"interval": 10, "max_interval": 5},
                },
                "pagination": {"kind": "page"},
            }
        ],
    }
    result = etl("validate", write_mapping(tmp_path / "bad.yaml", data))
    assert result.exit_code == 3
    text = result.stderr
    assert "bad.yaml:" in text
    assert "steps[0].export: an export needs the step's request" in text
    assert "an export step has no pagination" in text
    assert "steps[0].export.status.path: unknown variable 'file'" in text
    assert "steps[0].export.ready:" in text
    assert "steps[0].export.poll.max_interval: max_interval (5) is less than interval" in text


def test_a_chunk_that_is_not_gzip_fails_the_step_naming_it(etl, api, tmp_path):
    api.chunk_body = lambda items: jsonl(items)  # plain, while the mapping says gzip
    result = run(etl, EXAMPLES / "export-job-chunks.yaml", api, tmp_path / "out")
    assert result.exit_code == 1
    assert "export file 1 (1): GET" in result.stdout and "is not a readable gzip file" in result.stdout


def test_multi_member_gzip(etl, api, tmp_path):
    api.chunk_body = lambda items: b"".join(gzip.compress(jsonl([item])) for item in items)
    result = run(etl, EXAMPLES / "export-job-chunks.yaml", api, tmp_path / "out")
    assert result.exit_code == 0
    assert item_ids(read_output(tmp_path / "out")) == ALL
