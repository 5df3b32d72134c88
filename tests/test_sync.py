"""etl sync: an output directory uploaded to a local look-alike of JupiterOne's persister API
(tests/fakes/persister.py), and replayed from a cassette of the real API's shape."""

from __future__ import annotations

import json
import shutil
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml

from engine import output
from engine.http import clock as http_clock
from engine.tools import sync as graph_sync
from tests.conftest import CASSETTES, MAPPINGS
from tests.fakes.persister import ACCOUNT, API_KEY, INSTANCE_ID, JOBS, REAL_BASE, Persister, error
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
    """The requests the server saw, as 'METHOD path' with the job path shortened to 'job/'."""
    return [f"{r.method} {r.path.replace(f'{JOBS}/{job_id}/', 'job/')}" for r in api.log]


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
    assert calls(api, job_id) == [f"POST {JOBS}", f"POST {JOBS}"] + ["POST job/entities"] * 4 + [
        "POST job/relationships",
        "POST job/events",
        "POST job/finalize",
        "POST job/finalize",
    ]
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
    assert calls(api, job_id)[-2:] == ["POST job/finalize", "POST job/abort"]
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
