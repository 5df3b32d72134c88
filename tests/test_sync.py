"""etl sync: an output directory uploaded to a local look-alike of JupiterOne's persister API
(tests/fakes/persister.py), and replayed from a cassette of the real API's shape."""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml

from engine import output
from engine.http import clock as http_clock
from engine.tools import sync as graph_sync
from tests.conftest import CASSETTES, MAPPINGS
from tests.fakes.persister import ACCOUNT, API_KEY, DROPPED, INSTANCE_ID, JOBS, REAL_BASE, Persister, error
from tests.fakes.server import LocalApi, Response
from tests.graphtools import read_output

CASSETTE = CASSETTES / "jupiterone" / "sync.yaml"
JUPITERONE_ENV = ("JUPITERONE_ACCOUNT", "JUPITERONE_API_KEY")


@pytest.fixture(autouse=True)
def no_jupiterone_env(monkeypatch):
    for name in JUPITERONE_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def digicert_output(tmp_path_factory) -> Path:
    """The DigiCert offline run: the input graph of most tests (copy it before changing it)."""
    from click.testing import CliRunner

    from engine.cli import main

    out = tmp_path_factory.mktemp("digicert") / "out"
    result = CliRunner().invoke(main, ["run", str(MAPPINGS / "digicert.yaml"), "--offline", "--output", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def api():
    with LocalApi() as server:
        yield server


@pytest.fixture
def persister(api) -> Persister:
    return Persister(api)


def sync(etl, directory: Path, api: LocalApi, *extra, key: str = API_KEY):
    return etl(
        "sync",
        directory,
        "--account",
        ACCOUNT,
        "--api-key",
        key,
        "--integration-instance-id",
        INSTANCE_ID,
        "--api-base-url",
        api.url,
        *extra,
    )


def calls(api: LocalApi, job_id: str) -> list[str]:
    """The requests the server saw, as 'METHOD path' with the job path shortened to 'job'."""
    job = f"{JOBS}/{job_id}"
    return [f"{r.method} {'job' if r.path == job else r.path.replace(f'{job}/', 'job/')}" for r in api.log]


def keys(objects: list[dict]) -> Counter:
    return Counter(o["_key"] for o in objects)


def write_output(
    root: Path,
    steps: dict[str, dict[str, list[list[dict]]]],
    partial: list[str] = (),
    statuses: dict[str, str] | None = None,
) -> Path:
    """An output directory: steps = {stepId: {"entities": [file, ...], "relationships": [...]}}."""
    results = []
    for step_id, collections in steps.items():
        counts = Counter()
        for collection, files in collections.items():
            directory = root / "graph" / step_id / collection
            directory.mkdir(parents=True, exist_ok=True)
            for number, objects in enumerate(files):
                (directory / f"{number:04d}.json").write_text(json.dumps({collection: objects}))
                counts.update(o["_type"] for o in objects)
        results.append(
            {
                "id": step_id,
                "name": step_id.title(),
                "dependsOn": [],
                "declaredTypes": sorted(counts),
                "partialTypes": [],
                "encounteredTypes": sorted(counts),
                "encounteredTypeCounts": dict(sorted(counts.items())),
                "status": (statuses or {}).get(step_id, "success"),
                "startTime": 0,
                "endTime": 0,
                "duration": 0,
            }
        )
    summary = {"integrationStepResults": results, "metadata": {"partialDatasets": {"types": list(partial)}}}
    (root / "summary.json").write_text(json.dumps(summary))
    return root


def entity(key: str, graph_type: str = "acme_thing", raw_bytes: int = 100, **props) -> dict:
    return {
        "_key": key,
        "_type": graph_type,
        "_class": ["Resource"],
        "name": key,
        "displayName": key,
        **props,
        "_rawData": [{"name": "default", "rawData": {"id": key, "blob": "r" * raw_bytes}}],
    }


def relationship(source: str, target: str) -> dict:
    return {
        "_key": f"{source}|has|{target}",
        "_type": "acme_thing_has_thing",
        "_class": "HAS",
        "_fromEntityKey": source,
        "_toEntityKey": target,
        "displayName": "HAS",
    }


# -- the happy path: DigiCert's offline run ------------------------------------------------------


def test_uploads_every_object_once_in_the_documented_sequence(etl, api, persister, digicert_output):
    job_id = persister.next_job_id()
    result = sync(etl, digicert_output, api)
    assert result.exit_code == 0, result.stderr
    assert calls(api, job_id) == [
        f"POST {JOBS}",
        "POST job/entities",
        "POST job/relationships",
        "POST job/events",
        "POST job/finalize",
    ]
    assert persister.problems == []  # account, bearer key, JSON content type, correlation ids all as required

    output = read_output(digicert_output)
    assert keys(persister.uploaded("entities")) == keys(output["entities"])
    assert keys(persister.uploaded("relationships")) == keys(output["relationships"])
    assert max(keys(persister.uploaded("entities")).values()) == 1
    assert max(keys(persister.uploaded("relationships")).values()) == 1
    by_key = sorted(persister.uploaded("entities"), key=lambda o: o["_key"])
    assert by_key == sorted(output["entities"], key=lambda o: o["_key"])  # as written, _rawData and all

    job = persister.jobs[job_id]
    assert (job.source, job.integration_instance_id) == ("integration-managed", INSTANCE_ID)
    assert job.status == "FINALIZE_PENDING" and job.partial_types == []
    assert [e["name"] for e in job.events] == ["step_end"] * 3
    assert 'Completed step "Fetch Users" (fetch-users): 5 digicert_account_has_user, 5 digicert_user.' in [
        e["description"] for e in job.events
    ]

    for request in api.log:
        assert request.headers["jupiterone-account"] == ACCOUNT
        assert request.headers["authorization"] == f"Bearer {API_KEY}"
        assert request.headers["content-type"] == "application/json"
    correlation_ids = [b.correlation_id for b in persister.batches]
    assert len(set(correlation_ids)) == len(correlation_ids) == 2
    assert all(uuid.UUID(c) for c in correlation_ids)

    assert result.stdout.splitlines() == [
        f"Synchronization job {job_id}: FINALIZE_PENDING",
        "  entities       11 uploaded in 1 batch",
        "  relationships  19 uploaded in 1 batch",
        "  partial types  none",
    ]


def test_partial_types_and_failed_steps_from_summary_json(etl, api, persister, digicert_output, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(digicert_output, out)
    summary = json.loads((out / "summary.json").read_text())
    summary["metadata"]["partialDatasets"]["types"] = ["digicert_account_has_user", "digicert_user"]
    summary["integrationStepResults"][1]["status"] = "failure"
    (out / "summary.json").write_text(json.dumps(summary))
    job_id = persister.next_job_id()

    result = sync(etl, out, api)
    assert result.exit_code == 0, result.stderr
    job = persister.jobs[job_id]
    assert job.partial_types == ["digicert_account_has_user", "digicert_user"]
    assert [(e["name"], e["level"]) for e in job.events] == [
        ("step_end", "info"),
        ("step_failure", "error"),
        ("step_end", "info"),
    ]
    assert "partial types  digicert_account_has_user, digicert_user" in result.stdout


def test_step_events_can_be_left_out(etl, api, persister, digicert_output):
    job_id = persister.next_job_id()
    assert sync(etl, digicert_output, api, "--no-step-events").exit_code == 0
    assert "POST job/events" not in calls(api, job_id)
    assert persister.jobs[job_id].status == "FINALIZE_PENDING"


def test_entities_of_every_step_go_before_any_relationship(etl, api, persister, tmp_path):
    a = [entity(f"acme_thing:a{n}") for n in range(3)]
    b = [entity(f"acme_thing:b{n}") for n in range(3)]
    out = write_output(
        tmp_path / "out",
        {
            "fetch-a": {"entities": [a], "relationships": [[relationship(a[0]["_key"], a[1]["_key"])]]},
            "fetch-b": {"entities": [b], "relationships": [[relationship(b[0]["_key"], a[0]["_key"])]]},
        },
    )
    job_id = persister.next_job_id()
    assert sync(etl, out, api).exit_code == 0
    assert calls(api, job_id)[1:3] == ["POST job/entities", "POST job/relationships"]
    assert [o["_key"] for o in persister.uploaded("entities")] == [o["_key"] for o in a + b]  # steps in summary order
    assert len(persister.uploaded("relationships")) == 2


# -- batching ---------------------------------------------------------------------------------


def test_batches_are_at_most_5_000_000_bytes(etl, api, persister, tmp_path):
    """1,500 entities of ~8 KB in three files of 500: three full-as-possible batches under 5 MB."""
    files = [[entity(f"acme_thing:{f}-{n:03d}", raw_bytes=8000) for n in range(500)] for f in range(3)]
    out = write_output(tmp_path / "out", {"fetch-things": {"entities": files}})
    result = sync(etl, out, api)
    assert result.exit_code == 0, result.stderr

    batches = persister.batches
    assert len(batches) == 3
    assert all(b.size <= graph_sync.MAX_BATCH_BYTES for b in batches)
    uploaded = persister.uploaded("entities")
    assert [o["_key"] for o in uploaded] == [o["_key"] for f in files for o in f]  # each once, in order
    # Every batch but the last is full: the next object would not have fitted.
    position = 0
    for batch in batches[:-1]:
        position += len(batch.objects)
        following = len(graph_sync.encode(uploaded[position])) + 1
        assert batch.size + following > graph_sync.MAX_BATCH_BYTES
    assert "entities       1500 uploaded in 3 batches" in result.stdout


def settings(api: LocalApi, **overrides) -> graph_sync.SyncSettings:
    return graph_sync.SyncSettings(
        account=ACCOUNT, api_key=API_KEY, integration_instance_id=INSTANCE_ID, api_base_url=api.url, **overrides
    )


@pytest.mark.parametrize("limit", [600, 1000, 2500])
def test_batches_are_full_and_within_any_limit(api, persister, tmp_path, limit):
    things = [entity(f"acme_thing:{n:03d}", raw_bytes=n % 7 * 40) for n in range(60)]
    rels = [relationship(things[n]["_key"], things[n + 1]["_key"]) for n in range(59)]
    out = write_output(tmp_path / "out", {"s": {"entities": [things[:25], things[25:]], "relationships": [rels]}})
    report = graph_sync.synchronize(out, settings(api, max_batch_bytes=limit))

    assert report.skipped == [] and report.truncated == 0
    for collection, objects in (("entities", things), ("relationships", rels)):
        batches = [b for b in persister.batches if b.collection == collection]
        assert all(b.size <= limit for b in batches)
        assert [o["_key"] for b in batches for o in b.objects] == [o["_key"] for o in objects]
        for batch, following in zip(batches, batches[1:]):
            assert batch.size + 1 + len(graph_sync.encode(following.objects[0])) > limit
        assert report.batches[collection] == len(batches)


def test_an_object_over_the_batch_limit_loses_its_raw_data_before_sending(api, persister, tmp_path):
    big = entity("acme_thing:big", raw_bytes=5000)
    huge = entity("acme_thing:huge", raw_bytes=10, notes="x" * 5000)  # too large even without raw data
    small = entity("acme_thing:small")
    out = write_output(tmp_path / "out", {"s": {"entities": [[small, big, huge]]}})
    report = graph_sync.synchronize(out, settings(api, max_batch_bytes=3000))

    uploaded = {o["_key"]: o for o in persister.uploaded("entities")}
    assert set(uploaded) == {"acme_thing:small", "acme_thing:big"}
    assert uploaded["acme_thing:big"]["_rawData"] == [{"name": "default", "rawData": "TRUNCATED"}]
    assert uploaded["acme_thing:small"]["_rawData"] == small["_rawData"]
    assert [(s.key, s.type) for s in report.skipped] == [("acme_thing:huge", "acme_thing")]
    assert report.exit_code == 1
    assert persister.jobs[report.job_id].partial_types == ["acme_thing"]
    assert [r.path.rsplit("/", 1)[1] for r in api.log].count("entities") == 1  # no 413 needed: it all fitted


def test_files_are_read_one_at_a_time_as_batches_go(api, persister, tmp_path, monkeypatch):
    files = [[entity(f"acme_thing:{f}-{n}", raw_bytes=300) for n in range(4)] for f in range(3)]
    out = write_output(tmp_path / "out", {"s": {"entities": files}})
    reads, seen = [], []
    real_read, real_post = output.read_graph_file, graph_sync.PersisterClient.post
    monkeypatch.setattr(
        output, "read_graph_file", lambda path, collection: reads.append(path) or real_read(path, collection)
    )

    def post(client, path, body, **kwargs):
        seen.append((path.rsplit("/", 1)[-1], len(reads)))
        return real_post(client, path, body, **kwargs)

    monkeypatch.setattr(graph_sync.PersisterClient, "post", post)
    limit = graph_sync.batch_size("entities", [graph_sync.Item(o) for o in files[0]])  # one file per batch
    graph_sync.synchronize(out, settings(api, max_batch_bytes=limit))
    # Each batch was sent once the next file had been opened, never later: one file in memory at a time.
    assert [n for what, n in seen if what == "entities"] == [2, 3, 3]
    assert [len(b.objects) for b in persister.batches] == [4, 4, 4]


def test_truncation_takes_the_largest_raw_data_first_and_only_where_it_helps():
    items = [
        graph_sync.Item(entity("a", raw_bytes=50)),
        graph_sync.Item(entity("b", raw_bytes=900)),
        graph_sync.Item({"_key": "c", "_type": "t", "_rawData": [{"name": "default", "rawData": {}}]}),
    ]
    size = graph_sync.batch_size("entities", items)
    assert graph_sync.truncate_raw_data(items, size - 100, size) == 1
    assert (
        items[1].obj["_rawData"][0]["rawData"] == "TRUNCATED" and items[0].obj["_rawData"][0]["rawData"] != "TRUNCATED"
    )
    assert graph_sync.batch_size("entities", items) == len(graph_sync.batch_body("entities", items))
    assert graph_sync.truncate_raw_data(items, 0, size) == 1  # "a"; "c" has nothing worth truncating
    assert items[2].obj["_rawData"][0]["rawData"] == {}


# -- retries ---------------------------------------------------------------------------------


def test_429_and_5xx_are_retried_with_the_same_correlation_id(etl, api, persister, digicert_output, sleeps):
    job_id = persister.next_job_id()
    api.fail_next(
        f"{JOBS}/{job_id}/entities",
        Response(429, {"message": "Too Many Requests"}, headers={"Retry-After": "7"}),
        Response(500, {"message": "Internal Server Error"}),
        Response(503, {"message": "Service Unavailable"}),
    )
    api.fail_next(JOBS, Response(502, b"Bad Gateway", headers={"Content-Type": "text/plain"}))
    api.fail_next(f"{JOBS}/{job_id}/finalize", Response(500, {"message": "try again"}))

    result = sync(etl, digicert_output, api)
    assert result.exit_code == 0, result.stderr
    # After the 502 the create may have been carried out: the instance's jobs are looked up before
    # trying again, and once more after the job is made (for one the first lookup did not list yet).
    assert calls(api, job_id) == [f"POST {JOBS}", "POST /graphql", f"POST {JOBS}", "POST /graphql"] + [
        "POST job/entities"
    ] * 4 + [
        "POST job/relationships",
        "POST job/events",
        "POST job/finalize",
        "GET job",  # the 500 may have come after finalizing: the job says it did not
        "POST job/finalize",
    ]
    assert list(persister.jobs) == [job_id]
    creates = [r for r in api.log if r.path == JOBS]
    assert len({r.headers["jupiterone-correlation-id"] for r in creates}) == 1
    entity_posts = [r for r in api.log if r.path.endswith("/entities")]
    assert len({r.headers["jupiterone-correlation-id"] for r in entity_posts}) == 1
    assert len(persister.batches) == 2  # the entities arrived once
    assert keys(persister.uploaded("entities")) == keys(read_output(digicert_output)["entities"])
    assert sleeps[1] == 7.0  # Retry-After honoured
    assert len(sleeps) == 5
    assert all(0 < s <= 30 for s in sleeps)


def test_a_dropped_connection_is_retried(etl, api, persister, digicert_output):
    job_id = persister.next_job_id()
    api.fail_next(f"{JOBS}/{job_id}/relationships", Response(200, {"job": {}}, drop=True))
    assert sync(etl, digicert_output, api).exit_code == 0
    assert calls(api, job_id).count("POST job/relationships") == 2
    assert len(persister.uploaded("relationships")) == 19


# -- 413 ------------------------------------------------------------------------------------


def test_413_truncates_the_largest_raw_data_and_retries(etl, api, tmp_path):
    persister = Persister(api, max_body_bytes=60_000)
    things = [entity(f"acme_thing:{n}", raw_bytes=2000) for n in range(5)]
    things.insert(2, entity("acme_thing:heavy", raw_bytes=200_000))
    out = write_output(tmp_path / "out", {"s": {"entities": [things]}})
    job_id = persister.next_job_id()

    result = sync(etl, out, api)
    assert result.exit_code == 0, result.stderr
    assert calls(api, job_id) == [
        f"POST {JOBS}",
        "POST job/entities",
        "POST job/entities",
        "POST job/events",
        "POST job/finalize",
    ]
    first, second = [r for r in api.log if r.path.endswith("/entities")]
    assert first.headers["jupiterone-correlation-id"] == second.headers["jupiterone-correlation-id"]
    uploaded = {o["_key"]: o for o in persister.uploaded("entities")}
    assert list(uploaded) == [o["_key"] for o in things]
    assert uploaded["acme_thing:heavy"]["_rawData"] == [{"name": "default", "rawData": "TRUNCATED"}]
    assert all(uploaded[o["_key"]]["_rawData"] == o["_rawData"] for o in things if o["_key"] != "acme_thing:heavy")
    assert persister.jobs[job_id].partial_types == []
    assert "HTTP 413" in result.stderr and "TRUNCATED" in result.stderr
    assert "the raw data of 1 object(s)" in result.stdout


def test_an_object_the_api_refuses_even_without_raw_data_is_skipped(etl, api, tmp_path):
    persister = Persister(api, max_body_bytes=30_000)
    things = [entity(f"acme_thing:{n}", raw_bytes=500) for n in range(8)]
    things.insert(3, entity("acme_thing:giant", notes="g" * 40_000))
    rels = [relationship(things[0]["_key"], things[1]["_key"])]
    out = write_output(tmp_path / "out", {"s": {"entities": [things], "relationships": [rels]}})
    job_id = persister.next_job_id()

    result = sync(etl, out, api)
    assert result.exit_code == 1, result.stderr
    uploaded = keys(persister.uploaded("entities"))
    assert uploaded == Counter(o["_key"] for o in things if o["_key"] != "acme_thing:giant")
    assert len(persister.uploaded("relationships")) == 1
    job = persister.jobs[job_id]
    assert job.status == "FINALIZE_PENDING"
    assert job.partial_types == ["acme_thing"]  # so finalizing does not delete what JupiterOne had
    warn = [e for e in job.events if e["name"] == "warn_ingestion_limit_encountered"]
    assert len(warn) == 1 and "acme_thing:giant" in warn[0]["description"]
    assert "skipped entity acme_thing:giant" in result.stderr
    assert "skipped        entity acme_thing:giant (acme_thing)" in result.stdout
    assert all(b.size <= 30_000 for b in persister.batches)


# -- failures abort the job -------------------------------------------------------------------


def test_a_request_that_keeps_failing_aborts_the_job(etl, api, persister, digicert_output):
    job_id = persister.next_job_id()
    api.fail_next(f"{JOBS}/{job_id}/relationships", *[Response(500, {"message": "Internal Server Error"})] * 5)
    result = sync(etl, digicert_output, api)

    assert result.exit_code == 5
    assert calls(api, job_id) == [f"POST {JOBS}", "POST job/entities"] + ["POST job/relationships"] * 5 + [
        "POST job/abort"
    ]
    job = persister.jobs[job_id]
    assert job.status == "ABORTED" and job.partial_types is None
    assert "HTTP 500" in job.abort_reason and "after 5 attempts" in job.abort_reason
    assert f"job {job_id} aborted (11 entities and 0 relationships uploaded, nothing finalized)" in result.stderr
    assert result.stdout == ""


def test_a_refused_upload_aborts_at_once(etl, api, persister, digicert_output):
    job_id = persister.next_job_id()
    api.fail_next(f"{JOBS}/{job_id}/entities", error(400, "JOB_NOT_AWAITING_UPLOADS", "Job is not awaiting uploads"))
    result = sync(etl, digicert_output, api)
    assert result.exit_code == 5
    assert calls(api, job_id) == [f"POST {JOBS}", "POST job/entities", "POST job/abort"]
    assert "JOB_NOT_AWAITING_UPLOADS" in result.stderr


def test_a_failed_finalize_aborts(etl, api, persister, digicert_output):
    job_id = persister.next_job_id()
    api.fail_next(f"{JOBS}/{job_id}/finalize", *[Response(503, {"message": "down"})] * 5)
    result = sync(etl, digicert_output, api)
    assert result.exit_code == 5
    # The last 503 may have come after finalizing: the job's state decides, and it still awaits uploads.
    assert calls(api, job_id)[-3:] == ["POST job/finalize", "GET job", "POST job/abort"]
    assert persister.jobs[job_id].status == "ABORTED"


def test_a_broken_graph_file_aborts_the_job(etl, api, persister, digicert_output, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(digicert_output, out)
    broken = sorted((out / "graph" / "fetch-orders" / "relationships").glob("*.json"))[0]
    broken.write_text('{"relationships": [')
    job_id = persister.next_job_id()
    result = sync(etl, out, api)
    assert result.exit_code == 5
    assert calls(api, job_id) == [f"POST {JOBS}", "POST job/entities", "POST job/abort"]
    assert broken.name in persister.jobs[job_id].abort_reason
    assert "cannot read it as JSON" in result.stderr


def test_when_the_abort_fails_too_the_user_is_told(etl, api, persister, digicert_output):
    job_id = persister.next_job_id()
    api.fail_next(f"{JOBS}/{job_id}/entities", error(400, "BAD_REQUEST", "no"))
    api.fail_next(f"{JOBS}/{job_id}/abort", *[Response(500, {"message": "down"})] * 3)
    result = sync(etl, digicert_output, api)
    assert result.exit_code == 5
    assert f"job {job_id} could NOT be aborted" in result.stderr


def test_a_refused_key_creates_no_job(etl, api, persister, digicert_output):
    result = sync(etl, digicert_output, api, key="not-the-right-key")
    assert result.exit_code == 5
    assert [r.path for r in api.log] == [JOBS]
    assert "HTTP 401" in result.stderr and "(no job was created)" in result.stderr
    assert "not-the-right-key" not in result.stderr


def test_an_interrupted_sync_aborts_the_job(etl, api, persister, digicert_output, monkeypatch):
    job_id = persister.next_job_id()
    api.fail_next(f"{JOBS}/{job_id}/relationships", Response(429, {"message": "slow down"}))

    def interrupted(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(http_clock, "sleep", interrupted)
    result = sync(etl, digicert_output, api)
    assert result.exit_code == 130
    assert calls(api, job_id)[-1] == "POST job/abort"
    assert persister.jobs[job_id].abort_reason == "etl sync failed: interrupted"
    assert "interrupted" in result.stderr


# -- one consistent run: the lock, and a directory that changes anyway ---------------------------

TRY_EXCLUSIVE = """
import sys
from pathlib import Path
from engine.errors import OutputError
from engine.output import output_lock
try:
    with output_lock(Path(sys.argv[1]), shared=False, wait=0):
        print("acquired")
except OutputError:
    print("locked")
"""

HOLD_EXCLUSIVE = """
import sys
from pathlib import Path
from engine.output import output_lock
with output_lock(Path(sys.argv[1]), shared=False, wait=10):
    print("locked", flush=True)
    sys.stdin.read()  # until the test closes it
"""


def try_exclusive(directory: Path) -> str:
    """What a run replacing ``directory`` (another process) finds: 'acquired' or 'locked'."""
    done = subprocess.run(
        [sys.executable, "-c", TRY_EXCLUSIVE, str(directory)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def run_of(root: Path, tag: str, files: int = 3) -> Path:
    """An output directory whose keys all start with ``tag`` (two runs have the same file names)."""
    things = [[entity(f"acme_thing:{tag}-{f}-{n}") for n in range(2)] for f in range(files)]
    rels = [[relationship(things[0][0]["_key"], things[f][1]["_key"]) for f in range(files)]]
    return write_output(root, {"fetch-things": {"entities": things, "relationships": rels}})


def one_file_per_batch(run: Path) -> int:
    """A batch limit at which each graph file of ``run`` is a batch of its own."""
    first = sorted((run / "graph" / "fetch-things" / "entities").glob("*.json"))[0]
    objects = json.loads(first.read_text())["entities"]
    return graph_sync.batch_size("entities", [graph_sync.Item(o) for o in objects])


def test_sync_holds_the_shared_lock_from_start_to_finalize(api, persister, tmp_path):
    out = run_of(tmp_path / "out", "a")
    job_id = persister.next_job_id()
    seen = []
    for action in ("entities", "relationships", "finalize"):
        persister.on(persister.path(job_id, action), lambda request: seen.append(try_exclusive(out)))
    assert try_exclusive(out) == "acquired"

    report = graph_sync.synchronize(out, settings(api))
    assert report.status == "FINALIZE_PENDING"
    assert seen == ["locked"] * 3  # a run could not have replaced the directory at any point of the upload
    assert try_exclusive(out) == "acquired"  # and the lock is released at the end


def test_a_sync_started_while_a_run_replaces_the_directory_waits_and_uploads_the_new_run(api, persister, tmp_path):
    """A real `etl sync` process, while this process holds the exclusive lock (as a run does
    while it replaces the directory): it waits, then uploads the new run and nothing of the old."""
    out = run_of(tmp_path / "out", "old")
    staging = run_of(tmp_path / ".out.staging", "new")
    env = {**os.environ, "JUPITERONE_ACCOUNT": ACCOUNT, "JUPITERONE_API_KEY": API_KEY}
    command = [sys.executable, "-m", "engine", "sync", str(out), "-i", INSTANCE_ID, "--api-base-url", api.url]
    lines: queue.Queue[str] = queue.Queue()
    process = None
    try:
        with output.output_lock(out, shared=False):
            process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True).start()
            first = lines.get(timeout=60)
            assert "is locked: a run is replacing it; waiting" in first, first
            assert api.log == []  # nothing was read or sent while the run held the lock
            backup = tmp_path / ".out.old"
            os.replace(out, backup)  # what a run does when it commits (engine/pipeline/write.py)
            os.replace(staging, out)
            shutil.rmtree(backup)
        stdout, _ = process.communicate(timeout=60)
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, list(lines.queue)
    assert "FINALIZE_PENDING" in stdout
    assert len(persister.jobs) == 1
    uploaded = [o["_key"] for o in persister.uploaded("entities") + persister.uploaded("relationships")]
    assert uploaded and all(key.startswith("acme_thing:new-") for key in uploaded)


def test_a_sync_gives_up_waiting_for_the_lock_before_creating_a_job(api, persister, tmp_path):
    out = run_of(tmp_path / "out", "a")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_EXCLUSIVE, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(graph_sync.SyncError) as failure:
            graph_sync.synchronize(out, settings(api, lock_wait=0.2))
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    message = str(failure.value)
    assert f"{out} is locked (a run is replacing it" in message and "(waited 0s; no job was created)" in message
    assert api.log == [] and persister.jobs == {}


@pytest.fixture
def sync_log():
    """The warnings of etl.sync, whatever an earlier command set up for the 'etl' logger."""
    messages: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("etl.sync")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    yield messages
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_without_a_lock_file_the_checks_still_guard_the_upload(api, persister, tmp_path, monkeypatch, sync_log):
    """A directory whose parent is read-only has no lock file: the sync warns and goes on."""

    def no_lock_file(directory, **options):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("engine.tools.sync.snapshot.output_lock", no_lock_file)
    out = run_of(tmp_path / "out", "a")
    report = graph_sync.synchronize(out, settings(api))
    assert report.status == "FINALIZE_PENDING"
    assert any(f"cannot take the lock of {out} (Permission denied): uploading without it" in m for m in sync_log)


def replace_directory(out: Path) -> str:
    staging = run_of(out.with_name(".out.staging"), "new")
    os.replace(out, out.with_name(".out.old"))
    os.replace(staging, out)
    return "the directory was replaced"


def rewrite_summary(out: Path) -> str:
    summary = json.loads((out / "summary.json").read_text())
    summary["metadata"]["partialDatasets"]["types"] = ["acme_thing"]
    (out / "summary.json").write_text(json.dumps(summary))
    return "summary.json was rewritten"


def remove_summary(out: Path) -> str:
    (out / "summary.json").unlink()
    return "summary.json vanished"


def remove_a_file_not_read_yet(out: Path) -> str:
    (out / "graph" / "fetch-things" / "entities" / "0002.json").unlink()
    return "graph/fetch-things/entities/0002.json vanished"


def rewrite_a_file_already_uploaded(out: Path) -> str:
    path = out / "graph" / "fetch-things" / "entities" / "0000.json"
    path.write_text(json.dumps({"entities": [entity("acme_thing:new-0-0", raw_bytes=7)]}))
    return "graph/fetch-things/entities/0000.json was rewritten"


def add_a_file(out: Path) -> str:
    (out / "graph" / "fetch-things" / "entities" / "0003.json").write_text(json.dumps({"entities": []}))
    return "graph files appeared: graph/fetch-things/entities/0003.json"


@pytest.mark.parametrize(
    "change",
    [
        replace_directory,
        rewrite_summary,
        remove_summary,
        remove_a_file_not_read_yet,
        rewrite_a_file_already_uploaded,
        add_a_file,
    ],
)
def test_a_directory_changed_during_the_upload_aborts_the_job(api, persister, tmp_path, change):
    """A writer that ignores the lock changes the directory while the first batch is on the
    wire: the job is aborted, never finalized with a mix of two runs."""
    out = run_of(tmp_path / "out", "old")
    job_id = persister.next_job_id()
    details = []
    persister.on(persister.path(job_id, "entities"), lambda request: details.append(change(out)))

    with pytest.raises(graph_sync.SyncError) as failure:
        graph_sync.synchronize(out, settings(api, max_batch_bytes=one_file_per_batch(out)))
    message = str(failure.value)
    assert f"{out} changed during the upload: {details[0]}" in message
    assert "aborted rather than finalized with a mix of two runs" in message
    assert f"; job {job_id} aborted (" in message
    job = persister.jobs[job_id]
    assert job.status == "ABORTED" and job.partial_types is None  # never finalized
    assert details[0] in job.abort_reason
    assert "POST job/finalize" not in calls(api, job_id)
    uploaded = [o["_key"] for o in persister.uploaded("entities") + persister.uploaded("relationships")]
    assert not any(key.startswith("acme_thing:new-") for key in uploaded)  # nothing of the other run


def test_a_directory_replaced_between_listing_and_upload_is_not_mixed_in(api, persister, tmp_path):
    """Same file names in both runs: reading by name after a swap would have read the new run's files."""
    out = run_of(tmp_path / "out", "old")
    job_id = persister.next_job_id()
    persister.on(JOBS, lambda request: replace_directory(out))  # before anything was read
    with pytest.raises(graph_sync.SyncError, match="the directory was replaced"):
        graph_sync.synchronize(out, settings(api))
    assert persister.batches == [] and persister.jobs[job_id].status == "ABORTED"


# -- lost answers: one job, and a finalize or abort checked against the job --------------------------


@pytest.mark.parametrize(
    "lost", [DROPPED, Response(502, {"message": "Bad Gateway"}), Response(504, {"message": "Gateway Timeout"})]
)
def test_a_create_carried_out_but_unanswered_is_found_not_repeated(etl, api, persister, digicert_output, lost):
    job_id = persister.next_job_id()
    persister.lose_answers(JOBS, lost)
    result = sync(etl, digicert_output, api)

    assert result.exit_code == 0, result.stderr
    assert list(persister.jobs) == [job_id]  # one job: none left awaiting uploads
    assert persister.jobs[job_id].status == "FINALIZE_PENDING"
    assert calls(api, job_id)[:4] == [f"POST {JOBS}", "POST /graphql", "GET job", "POST job/entities"]
    assert persister.jobs[job_id].correlation_id == api.log[0].headers["jupiterone-correlation-id"]
    reason = "HTTP 502" if lost.status == 502 else "HTTP 504" if lost.status == 504 else "the connection closed"
    note = next(line for line in result.stdout.splitlines() if line.startswith("  note"))
    assert f"creating the job got no answer ({reason}" in note
    assert f"job {job_id}, which that request had created" in note and note.endswith("is used")
    assert note.strip()[len("note") :].strip() in result.stderr  # also a warning as it happened
    assert persister.problems == []


def test_a_create_lost_before_it_was_carried_out_is_sent_again(etl, api, persister, digicert_output):
    job_id = persister.next_job_id()
    api.fail_next(JOBS, DROPPED)  # answered by the network, not by the API: nothing was created
    result = sync(etl, digicert_output, api)
    assert result.exit_code == 0, result.stderr
    assert calls(api, job_id)[:5] == [
        f"POST {JOBS}",
        "POST /graphql",
        f"POST {JOBS}",
        "POST /graphql",
        "POST job/entities",
    ]
    assert list(persister.jobs) == [job_id]
    assert "no job was created by it: trying again" in result.stderr


def test_a_job_the_first_lookup_missed_is_aborted_as_a_duplicate(etl, api, persister, digicert_output):
    """The listing lags: the lookup after the lost answer does not show the job yet, so the
    create is sent again; the lookup after that finds the first one, and aborts it."""
    first = persister.next_job_id()
    persister.lose_answers(JOBS, Response(502, {"message": "Bad Gateway"}))
    api.fail_next("/graphql", Response(200, {"data": {"integrationJobs": {"jobs": []}}}))
    result = sync(etl, digicert_output, api)

    assert result.exit_code == 0, result.stderr
    assert len(persister.jobs) == 2
    second = [j for j in persister.jobs if j != first][0]
    assert persister.jobs[first].status == "ABORTED"
    assert "created by a retried request whose first answer was lost" in persister.jobs[first].abort_reason
    assert persister.jobs[second].status == "FINALIZE_PENDING" and persister.batches[0].job_id == second
    assert f"job {first} was also created by a request whose answer was lost: it was aborted" in result.stdout


def test_older_and_other_instances_jobs_are_not_taken_for_ours(etl, api, persister, digicert_output):
    older = persister.add_job(age_ms=3_600_000)  # a job of the instance left awaiting uploads an hour ago
    other = persister.add_job("another-instance")
    ours = persister.next_job_id()
    persister.lose_answers(JOBS, DROPPED)
    result = sync(etl, digicert_output, api)

    assert result.exit_code == 0, result.stderr
    assert persister.jobs[ours].status == "FINALIZE_PENDING"
    assert {persister.jobs[older.id].status, persister.jobs[other.id].status} == {"AWAITING_UPLOADS"}
    assert {b.job_id for b in persister.batches} == {ours}


def test_when_the_lost_job_cannot_be_told_from_anothers_none_is_touched(etl, api, persister, digicert_output):
    theirs = persister.add_job()  # another upload to the same instance started just now
    ours = persister.next_job_id()
    persister.lose_answers(JOBS, Response(502, {"message": "Bad Gateway"}))
    result = sync(etl, digicert_output, api)

    assert result.exit_code == 5
    assert [r.path for r in api.log].count(JOBS) == 1  # no second job either
    assert {j.status for j in persister.jobs.values()} == {"AWAITING_UPLOADS"} and persister.batches == []
    assert "has 2 new jobs awaiting uploads (" in result.stderr
    assert theirs.id in result.stderr and ours in result.stderr
    assert "none of them was used or aborted" in result.stderr
    assert "(no job was created)" not in result.stderr


def test_when_jobs_cannot_be_looked_up_no_second_job_is_created(etl, api, persister, digicert_output):
    orphan = persister.next_job_id()
    persister.lose_answers(JOBS, Response(502, {"message": "Bad Gateway"}))
    api.fail_next("/graphql", error(403, "FORBIDDEN", "Forbidden"))
    result = sync(etl, digicert_output, api)

    assert result.exit_code == 5
    assert [r.path for r in api.log] == [JOBS, "/graphql"]
    assert persister.jobs[orphan].status == "AWAITING_UPLOADS"  # made by the lost request; etl cannot know its id
    message = result.stderr
    assert "no answer (HTTP 502), so the job may have been created, and looking for it failed" in message
    assert "POST /graphql failed: HTTP 403" in message
    assert f"if integration instance {INSTANCE_ID} has a job awaiting uploads started since" in message
    assert "(no job was created)" not in message


@pytest.mark.parametrize("lost", [DROPPED, Response(502, {"message": "Bad Gateway"})])
def test_a_finalize_carried_out_but_unanswered_is_a_success(etl, api, persister, digicert_output, lost):
    job_id = persister.next_job_id()
    persister.lose_answers(persister.path(job_id, "finalize"), lost)
    result = sync(etl, digicert_output, api)

    assert result.exit_code == 0, result.stderr
    # Before finalizing again, the job is read: it finalized, so it is neither finalized again nor aborted.
    assert calls(api, job_id)[-2:] == ["POST job/finalize", "GET job"]
    assert persister.jobs[job_id].status == "FINALIZE_PENDING" and persister.jobs[job_id].abort_reason is None
    assert persister.problems == []
    assert result.stdout.splitlines()[0] == f"Synchronization job {job_id}: FINALIZE_PENDING"
    reason = "HTTP 502" if lost.status == 502 else "the connection closed in the middle of the response body"
    assert (
        f"finalizing got no answer ({reason}), but job {job_id} is FINALIZE_PENDING: the finalize had been carried out"
        in result.stdout
    )


def test_a_finalize_refused_after_an_unanswered_one_is_checked_too(etl, api, persister, digicert_output):
    """The job cannot be read at first, so the finalize is sent again, and refused (the job no
    longer awaits uploads); read again, the job says it finalized: a success."""
    job_id = persister.next_job_id()
    persister.lose_answers(persister.path(job_id, "finalize"), DROPPED)
    api.fail_next(persister.path(job_id), Response(500, {"message": "down"}))
    result = sync(etl, digicert_output, api)

    assert result.exit_code == 0, result.stderr
    assert calls(api, job_id)[-4:] == ["POST job/finalize", "GET job", "POST job/finalize", "GET job"]
    assert "POST job/abort" not in calls(api, job_id)
    note = next(line for line in result.stdout.splitlines() if line.startswith("  note"))
    assert "finalizing failed: POST" in note and "JOB_NOT_AWAITING_UPLOADS" in note
    assert "(before that: no answer, the connection closed in the middle of the response body)" in note
    assert note.endswith(f"but job {job_id} is FINALIZE_PENDING: the finalize had been carried out")


def test_a_finalize_whose_outcome_cannot_be_read_is_not_aborted(etl, api, persister, digicert_output):
    job_id = persister.next_job_id()
    persister.lose_answers(persister.path(job_id, "finalize"), DROPPED)
    api.fail_next(persister.path(job_id), *[Response(500, {"message": "down"})] * 4)
    result = sync(etl, digicert_output, api)

    assert result.exit_code == 5
    assert "POST job/abort" not in calls(api, job_id)
    assert persister.jobs[job_id].status == "FINALIZE_PENDING"  # it had finalized: aborting would have been wrong
    assert f"job {job_id} may or may not have been finalized. It was NOT aborted: check it in JupiterOne" in (
        result.stderr
    )
    assert f"GET {JOBS}/{job_id} failed: HTTP 500" in result.stderr
    assert "(11 entities and 19 relationships uploaded)" in result.stderr


def test_an_abort_carried_out_but_unanswered_is_reported_as_aborted(etl, api, persister, digicert_output):
    job_id = persister.next_job_id()
    api.fail_next(persister.path(job_id, "entities"), error(400, "BAD_REQUEST", "no"))
    persister.lose_answers(persister.path(job_id, "abort"), DROPPED)
    result = sync(etl, digicert_output, api)

    assert result.exit_code == 5
    assert calls(api, job_id)[-3:] == ["POST job/abort", "POST job/abort", "GET job"]
    assert f"job {job_id} aborted (0 entities and 0 relationships uploaded, nothing finalized)" in result.stderr
    assert "could NOT be aborted" not in result.stderr


# -- redirects: the account and key stay at the API's origin -------------------------------------


@pytest.fixture
def elsewhere():
    """Another origin (another port): it must never see a request, let alone the credentials."""
    with LocalApi() as server:
        server.route("POST", "/.*", lambda request: Response(200, {"job": {"id": "stolen"}}))
        server.route("GET", "/.*", lambda request: Response(200, {"job": {"id": "stolen"}}))
        yield server


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_origin_is_refused_and_the_job_aborted(
    etl, api, persister, digicert_output, elsewhere, status
):
    job_id = persister.next_job_id()
    path = persister.path(job_id, "entities")
    api.fail_next(path, Response(status, {}, headers={"Location": elsewhere.url + path}))
    result = sync(etl, digicert_output, api)

    assert result.exit_code == 5
    assert elsewhere.log == []
    assert (
        f"POST {path} was redirected (HTTP {status}) to another origin, {elsewhere.url}: refusing to send the "
        f"JupiterOne account and API key there (only redirects within {api.url} are followed)" in result.stderr
    )
    assert persister.jobs[job_id].status == "ABORTED"
    assert calls(api, job_id) == [f"POST {JOBS}", "POST job/entities", "POST job/abort"]
    assert API_KEY not in result.stderr


def test_a_redirected_create_goes_nowhere_else(etl, api, persister, digicert_output, elsewhere):
    api.fail_next(JOBS, Response(307, {}, headers={"Location": f"{elsewhere.url}{JOBS}"}))
    result = sync(etl, digicert_output, api)
    assert result.exit_code == 5
    assert elsewhere.log == [] and persister.jobs == {}
    assert "to another origin" in result.stderr and "(no job was created)" in result.stderr


@pytest.mark.parametrize(
    "target",
    [
        "https://{host}:{port}{path}",  # same host and port, another scheme
        "http://localhost:{port}{path}",  # the same server by another name is another origin
        "http://{host}:{port}@{host}:1{path}",  # userinfo does not make it the same origin
        "//{host}:1{path}",  # scheme-relative
    ],
)
def test_every_part_of_the_origin_counts(api, persister, digicert_output, target):
    host, port = api.url.removeprefix("http://").split(":")
    api.fail_next(JOBS, Response(308, {}, headers={"Location": target.format(host=host, port=port, path=JOBS)}))
    with pytest.raises(graph_sync.SyncError, match="to another origin"):
        graph_sync.synchronize(digicert_output, settings(api))
    assert [r.path for r in api.log] == [JOBS] and persister.jobs == {}


@pytest.mark.parametrize("status", [307, 308])
def test_redirects_within_the_origin_are_followed(etl, api, persister, digicert_output, status):
    """An API root that moved: every request is redirected (a relative Location) within the
    origin, and sent again there with its method, body and headers (307 and 308 keep them; a
    POST redirected by 301, 302 or 303 becomes a GET, as in every HTTP client of etl)."""
    for method in ("GET", "POST"):
        api.route(method, "/v1(?P<rest>/.*)", lambda request, rest: Response(status, {}, headers={"Location": rest}))
    job_id = persister.next_job_id()
    persister.lose_answers(persister.path(job_id, "finalize"), DROPPED)  # so that a GET is made (and redirected)
    result = etl(
        "sync",
        digicert_output,
        "--account",
        ACCOUNT,
        "--api-key",
        API_KEY,
        "-i",
        INSTANCE_ID,
        "--api-base-url",
        f"{api.url}/v1",
    )
    assert result.exit_code == 0, result.stderr
    assert persister.jobs[job_id].status == "FINALIZE_PENDING"
    assert keys(persister.uploaded("entities")) == keys(read_output(digicert_output)["entities"])
    requests = [(r.method, r.path) for r in api.log]
    assert requests[:2] == [("POST", f"/v1{JOBS}"), ("POST", JOBS)]
    assert requests[-2:] == [("GET", f"/v1{JOBS}/{job_id}"), ("GET", f"{JOBS}/{job_id}")]
    assert all(r.path.startswith("/v1/") != (n % 2 == 1) for n, r in enumerate(api.log))  # each sent, then redirected
    assert all(r.headers["authorization"] == f"Bearer {API_KEY}" for r in api.log)
    assert [r.body for r in api.log[2:4]] == [api.log[2].body] * 2  # the same batch, sent again where redirected


# -- options, credentials, secrets ------------------------------------------------------------


def test_account_and_key_come_from_the_environment(etl, api, persister, digicert_output):
    env = {"JUPITERONE_ACCOUNT": ACCOUNT, "JUPITERONE_API_KEY": API_KEY}
    result = etl("sync", digicert_output, "-i", INSTANCE_ID, "--api-base-url", api.url, env=env)
    assert result.exit_code == 0, result.stderr
    assert persister.problems == []


def test_account_and_key_come_from_dotenv(etl, api, persister, digicert_output, tmp_path):
    (tmp_path / ".env").write_text(f"JUPITERONE_ACCOUNT={ACCOUNT}\nexport JUPITERONE_API_KEY='{API_KEY}'\n")
    result = etl("sync", digicert_output, "-i", INSTANCE_ID, "--api-base-url", api.url)
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize(
    "args, env, message",
    [
        ((), {}, "missing the JupiterOne account: pass --account ID or set JUPITERONE_ACCOUNT"),
        (("--account", ACCOUNT), {}, "missing the JupiterOne API key: set JUPITERONE_API_KEY"),
    ],
)
def test_missing_credentials_exit_4(etl, api, digicert_output, args, env, message):
    result = etl("sync", digicert_output, "-i", INSTANCE_ID, "--api-base-url", api.url, *args, env=env)
    assert result.exit_code == 4
    assert message in result.stderr
    assert api.log == []


def test_usage_errors_exit_2_before_any_request(etl, api, digicert_output, tmp_path):
    base = ("--account", ACCOUNT, "--api-key", API_KEY, "-i", INSTANCE_ID)
    result = etl("sync", tmp_path, *base, "--api-base-url", api.url)
    assert result.exit_code == 2 and "has no summary.json" in result.stderr
    result = etl("sync", digicert_output, *base, "--api-base-url", "http://api.example.com")
    assert result.exit_code == 2 and "refusing to send the API key over plain HTTP" in result.stderr
    assert etl("sync", digicert_output, "--account", ACCOUNT, "--api-key", API_KEY).exit_code == 2
    result = etl("sync", digicert_output, *base, "--record-mode", "all")
    assert result.exit_code == 2 and "--record-mode needs --cassette" in result.stderr
    assert api.log == []


def test_the_api_key_never_appears_anywhere(etl, api, persister, digicert_output, tmp_path):
    """The key in the environment, an API that echoes it back in an error, -vv, a recording: nowhere."""
    out = tmp_path / "out"
    shutil.copytree(digicert_output, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    job_id = persister.next_job_id()
    api.fail_next(
        f"{JOBS}/{job_id}/entities",
        Response(503, {"message": f"overloaded; your header was Bearer {API_KEY}"}),
        Response(400, {"message": f"rejected token {API_KEY}"}, headers={"X-Echo": API_KEY}),
    )
    recording = tmp_path / "recording.yaml"
    env = {"JUPITERONE_ACCOUNT": ACCOUNT, "JUPITERONE_API_KEY": API_KEY}
    result = etl(
        "sync",
        out,
        "-i",
        INSTANCE_ID,
        "--api-base-url",
        api.url,
        "-vv",
        "--cassette",
        recording,
        "--record-mode",
        "all",
        env=env,
    )
    assert result.exit_code == 5
    assert "rejected token [REDACTED]" in result.stderr
    help_text = etl("sync", "--help", env=env).stdout
    texts = {
        "stdout": result.stdout,
        "stderr": result.stderr,
        "help": help_text,
        "abort reason": persister.jobs[job_id].abort_reason,
        "recording": recording.read_text(),
        "events": json.dumps([e for j in persister.jobs.values() for e in j.events]),
    }
    texts.update({str(p): p.read_text() for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".json", ".yaml")})
    leaks = [name for name, text in texts.items() if API_KEY in text]
    assert leaks == []
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # the directory is only read


# -- the cassette ------------------------------------------------------------------------------


def test_cassette_replays_without_network(etl, digicert_output):
    """cassettes/jupiterone/sync.yaml: synthesised with `python -m tests.fakes.persister` (the local
    persister, URL rewritten to the real API). If the DigiCert graph changes, re-synthesise it."""
    result = etl(
        "sync",
        digicert_output,
        "--account",
        ACCOUNT,
        "--api-key",
        "any-key-replays",
        "-i",
        INSTANCE_ID,
        "--cassette",
        CASSETTE,
        "--record-mode",
        "none",
    )
    assert result.exit_code == 0, result.stderr + "\n(re-synthesise: python -m tests.fakes.persister)"
    assert result.stdout.splitlines()[0] == "Synchronization job a9a38074-04a7-5817-9cae-804dd5a159da: FINALIZE_PENDING"
    assert "entities       11 uploaded in 1 batch" in result.stdout


def test_cassette_has_the_real_api_shape_and_no_secret():
    text = CASSETTE.read_text()
    assert API_KEY not in text
    interactions = yaml.safe_load(text)["interactions"]
    job = "a9a38074-04a7-5817-9cae-804dd5a159da"
    assert [(i["request"]["method"], i["request"]["uri"]) for i in interactions] == [("POST", f"{REAL_BASE}{JOBS}")] + [
        ("POST", f"{REAL_BASE}{JOBS}/{job}/{action}") for action in ("entities", "relationships", "events", "finalize")
    ]
    for interaction in interactions:
        headers = interaction["request"]["headers"]
        assert headers["Authorization"] == ["[REDACTED]"]
        assert headers["JupiterOne-Account"] == [ACCOUNT]
        assert headers["Content-Type"] == ["application/json"]
    assert json.loads(interactions[-1]["request"]["body"]) == {"partialDatasets": {"types": []}}


def test_replay_of_a_different_graph_fails_clearly(etl, digicert_output, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(digicert_output, out)
    for path in (out / "graph").rglob("*.json"):
        data = json.loads(path.read_text())
        for objects in data.values():
            for obj in objects:
                obj["extra"] = "changed"
        path.write_text(json.dumps(data))
    result = etl(
        "sync", out, "--account", ACCOUNT, "--api-key", "any-key-replays", "-i", INSTANCE_ID, "--cassette", CASSETTE
    )
    assert result.exit_code == 5
    assert "the cassette holds no response for this request" in result.stderr
    assert "aborted" in result.stderr or "could NOT be aborted" in result.stderr
