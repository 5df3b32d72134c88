"""A local look-alike of JupiterOne's synchronization (persister) API, for tests and for
synthesising ``cassettes/jupiterone/sync.yaml``.

    with LocalApi() as api:
        persister = Persister(api)          # routes installed; persister.jobs, .batches, .events ...
        api.fail_next(persister.path(job_id, "entities"), Response(429, ...))   # faults, as for any fake

It checks what the real API checks (the account and bearer key, JSON bodies, the job's
state) and records every batch it accepts. ``max_body_bytes`` makes it answer 413 to an
upload larger than that, as the real API's 6 MB limit does.

Besides the synchronization routes it answers ``GET .../jobs/{id}`` and the GraphQL query
``integrationJobs(integrationInstanceId, status)`` (``POST /graphql``), which is how the
real API lists an instance's jobs: an integration-managed synchronization job comes with
an integration job of the same id. For lost answers and concurrent writers:

    persister.lose_answers(JOBS, Response(502))   # the next create is carried out, then answered 502
    persister.lose_answers(path, DROPPED)         # ... then the connection drops in the middle of the answer
    persister.on(path, hook)                      # hook(request) runs as the next request to path arrives
    persister.add_job()                           # a job someone else created for the instance

    python -m tests.fakes.persister      # re-synthesise cassettes/jupiterone/sync.yaml
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .server import LocalApi, Request, Response

ACCOUNT = "j1-test-account"
API_KEY = "j1-test-key-5f0c9e7a2b4d4c1e9a3f"  # fake; the tests check it never appears anywhere
INSTANCE_ID = "3c1e2f4a-6b7d-4e8f-9a0b-1c2d3e4f5a6b"
JOBS = "/persister/synchronization/jobs"
REAL_BASE = "https://api.us.jupiterone.io"
_NAMESPACE = uuid.UUID("0d9f4f0e-9c57-4a43-8f1d-2f6c1c8a7b5e")
CASSETTE_TIME_MS = 1795392000000  # the jobs' start time in the synthesised cassette (it stays the same)
DROPPED = Response(200, {"job": {}}, drop=True)  # an answer cut off in the middle of its body
# Integration job status of a synchronization job's status.
INTEGRATION_JOB_STATUS = {
    "AWAITING_UPLOADS": "IN_PROGRESS",
    "FINALIZE_PENDING": "IN_PROGRESS",
    "FINALIZING_ENTITIES": "IN_PROGRESS",
    "FINALIZING_RELATIONSHIPS": "IN_PROGRESS",
    "FINISHED": "COMPLETED",
}


@dataclass
class Batch:
    job_id: str
    collection: str
    objects: list[dict]
    correlation_id: str
    size: int  # bytes of the request body


@dataclass
class Job:
    id: str
    source: str
    integration_instance_id: str
    status: str = "AWAITING_UPLOADS"
    entities: int = 0
    relationships: int = 0
    events: list[dict] = field(default_factory=list)
    partial_types: list[str] | None = None
    abort_reason: str | None = None
    start_timestamp: int = CASSETTE_TIME_MS
    correlation_id: str = ""  # the JupiterOne-Correlation-Id of the request that created it

    def view(self) -> dict:
        return {
            "id": self.id,
            "source": self.source,
            "integrationInstanceId": self.integration_instance_id,
            "integrationJobId": self.id,
            "status": self.status,
            "startTimestamp": self.start_timestamp,
            "numEntitiesUploaded": self.entities,
            "numRelationshipsUploaded": self.relationships,
            "numEntitiesCreated": 0,
            "numMappedRelationshipsCreated": 0,
        }


def error(status: int, code: str, message: str) -> Response:
    return Response(status, {"error": {"code": code, "message": message}})


class Persister:
    def __init__(
        self,
        api: LocalApi,
        *,
        account: str = ACCOUNT,
        api_key: str = API_KEY,
        max_body_bytes: int | None = None,
        now: Callable[[], int] = lambda: int(time.time() * 1000),
    ):
        self.api = api
        self.account = account
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.now = now  # epoch ms, the jobs' startTimestamp
        self.jobs: dict[str, Job] = {}
        self.batches: list[Batch] = []
        self.problems: list[str] = []  # requests the real API would have refused, with why
        self.lost: dict[str, list[Response]] = {}  # path -> answers that replace the real ones, after acting
        self.hooks: dict[str, list[Callable[[Request], None]]] = {}
        self._lock = threading.Lock()
        self._route("POST", JOBS, self.create)
        self._route("GET", JOBS + r"/(?P<job_id>[^/]+)", self.get)
        self._route(
            "POST", JOBS + r"/(?P<job_id>[^/]+)/(?P<action>entities|relationships|events|finalize|abort)", self.action
        )
        self._route("POST", "/graphql", self.graphql)

    def _route(self, method: str, pattern: str, handler: Callable[..., Response]) -> None:
        def serve(request: Request, **groups: str) -> Response:
            with self._lock:
                hooks = self.hooks.get(request.path)
                hook = hooks.pop(0) if hooks else None
            if hook is not None:
                hook(request)
            response = handler(request, **groups)
            with self._lock:
                lost = self.lost.get(request.path)
                return lost.pop(0) if lost else response

        self.api.route(method, pattern, serve)

    def lose_answers(self, path: str, *responses: Response) -> None:
        """The next requests to ``path`` are carried out as usual, then answered with these
        (a 5xx, or ``DROPPED``): what a client sees when an answer is lost on the way back."""
        with self._lock:
            self.lost.setdefault(path, []).extend(responses)

    def on(self, path: str, hook: Callable[[Request], None]) -> None:
        """``hook(request)`` runs when the next request to ``path`` arrives, before it is served."""
        with self._lock:
            self.hooks.setdefault(path, []).append(hook)

    def next_job_id(self) -> str:
        """The id the next job created will get (ids are deterministic, for cassettes)."""
        return str(uuid.uuid5(_NAMESPACE, f"job-{len(self.jobs) + 1}"))

    def add_job(self, integration_instance_id: str = INSTANCE_ID, *, age_ms: int = 0) -> Job:
        """A job someone else created (another upload to the instance), ``age_ms`` ago."""
        job = Job(self.next_job_id(), "integration-managed", integration_instance_id)
        job.start_timestamp = self.now() - age_ms
        self.jobs[job.id] = job
        return job

    @staticmethod
    def path(job_id: str, action: str = "") -> str:
        return f"{JOBS}/{job_id}" + (f"/{action}" if action else "")

    # -- checks ------------------------------------------------------------------------------

    def refuse(self, request: Request, response: Response, why: str) -> Response:
        self.problems.append(f"{request.method} {request.path}: {why}")
        return response

    def check(self, request: Request) -> tuple[dict | None, Response | None]:
        """The JSON body, or the answer the real API would give to a request it refuses."""
        if request.headers.get("jupiterone-account") != self.account:
            return None, self.refuse(request, error(401, "UNAUTHORIZED", "Unauthorized"), "wrong account header")
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return None, self.refuse(request, error(401, "UNAUTHORIZED", "Unauthorized"), "wrong bearer key")
        if request.method == "POST":
            if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
                return None, self.refuse(
                    request, error(415, "UNSUPPORTED_MEDIA_TYPE", "Expected JSON"), "not Content-Type: application/json"
                )
            try:
                body = json.loads(request.body)
            except ValueError:
                return None, self.refuse(request, error(400, "BAD_REQUEST", "Body is not JSON"), "body not JSON")
            if not isinstance(body, dict):
                return None, self.refuse(request, error(400, "BAD_REQUEST", "Body must be an object"), "not object")
            return body, None
        return {}, None

    # -- routes ------------------------------------------------------------------------------

    def create(self, request: Request) -> Response:
        body, refused = self.check(request)
        if refused:
            return refused
        if body.get("source") != "integration-managed" or not body.get("integrationInstanceId"):
            return self.refuse(
                request, error(400, "BAD_REQUEST", "source and integrationInstanceId required"), f"bad job body {body}"
            )
        job_id = self.next_job_id()
        self.jobs[job_id] = Job(
            job_id,
            body["source"],
            body["integrationInstanceId"],
            start_timestamp=self.now(),
            correlation_id=request.headers.get("jupiterone-correlation-id", ""),
        )
        return Response(200, {"job": self.jobs[job_id].view()})

    def get(self, request: Request, job_id: str) -> Response:
        _, refused = self.check(request)
        if refused:
            return refused
        job = self.jobs.get(job_id)
        return Response(200, {"job": job.view()}) if job else error(404, "NOT_FOUND", "No such job")

    def graphql(self, request: Request) -> Response:
        """The one query the look-alike knows: integrationJobs(integrationInstanceId, status, size),
        newest first, as JupiterOne's GraphQL API answers it."""
        body, refused = self.check(request)
        if refused:
            return refused
        query, variables = body.get("query"), body.get("variables") or {}
        if not isinstance(query, str) or "integrationJobs" not in query or not isinstance(variables, dict):
            return self.refuse(
                request, Response(400, {"errors": [{"message": "unknown query"}]}), f"graphql query {query!r}"
            )
        instance, status = variables.get("integrationInstanceId"), variables.get("status")
        jobs = [
            {
                "id": job.id,
                "status": INTEGRATION_JOB_STATUS.get(job.status, "FAILED"),
                "integrationInstanceId": job.integration_instance_id,
                "createDate": job.start_timestamp,
            }
            for job in sorted(self.jobs.values(), key=lambda j: j.start_timestamp, reverse=True)
            if instance in (None, job.integration_instance_id)
        ]
        jobs = [j for j in jobs if status in (None, j["status"])][: int(variables.get("size") or 100)]
        return Response(200, {"data": {"integrationJobs": {"jobs": jobs, "pageInfo": {"endCursor": None}}}})

    def action(self, request: Request, job_id: str, action: str) -> Response:
        body, refused = self.check(request)
        if refused:
            return refused
        job = self.jobs.get(job_id)
        if job is None:
            return self.refuse(request, error(404, "NOT_FOUND", "No such job"), "unknown job")
        if job.status != "AWAITING_UPLOADS":
            return self.refuse(
                request, error(400, "JOB_NOT_AWAITING_UPLOADS", f"Job is {job.status}"), f"job is {job.status}"
            )
        if action in ("entities", "relationships"):
            return self.upload(request, job, action, body)
        if action == "events":
            events = body.get("events")
            if not isinstance(events, list) or not all(
                isinstance(e, dict) and e.get("name") and e.get("description") for e in events
            ):
                return self.refuse(request, error(400, "BAD_REQUEST", "events: [{name, description}]"), "bad events")
            job.events.extend(events)
        elif action == "finalize":
            types = (body.get("partialDatasets") or {}).get("types")
            if not isinstance(types, list):
                return self.refuse(request, error(400, "BAD_REQUEST", "partialDatasets.types required"), "no types")
            job.partial_types = types
            job.status = "FINALIZE_PENDING"
        elif action == "abort":
            job.abort_reason = body.get("reason")
            job.status = "ABORTED"
        return Response(200, {"job": job.view()})

    def upload(self, request: Request, job: Job, collection: str, body: dict) -> Response:
        if self.max_body_bytes is not None and len(request.body) > self.max_body_bytes:
            return error(413, "RequestEntityTooLargeException", "Request entity too large")
        correlation_id = request.headers.get("jupiterone-correlation-id", "")
        try:
            uuid.UUID(correlation_id)
        except ValueError:
            return self.refuse(
                request,
                error(400, "BAD_REQUEST", "JupiterOne-Correlation-Id must be a uuid"),
                f"correlation id {correlation_id!r}",
            )
        objects = body.get(collection)
        if set(body) != {collection} or not isinstance(objects, list):
            return self.refuse(request, error(400, "BAD_REQUEST", f"expected {{{collection}: [...]}}"), "bad batch")
        self.batches.append(Batch(job.id, collection, objects, correlation_id, len(request.body)))
        setattr(job, collection, getattr(job, collection) + len(objects))
        return Response(200, {"job": job.view()})

    # -- what arrived ------------------------------------------------------------------------

    def uploaded(self, collection: str) -> list[dict]:
        return [o for b in self.batches if b.collection == collection for o in b.objects]


# ----------------------------------------------------------------------------------------
# Synthesising the cassette


def record_cassette(target: Path) -> Path:
    """Sync a DigiCert offline run to the local persister while recording, then rewrite the
    local URL to JupiterOne's real one."""
    from click.testing import CliRunner

    from engine.cli import main

    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    root = Path(__file__).resolve().parents[2]
    runner = CliRunner()
    with tempfile.TemporaryDirectory() as scratch, LocalApi() as api:
        Persister(api, now=lambda: CASSETTE_TIME_MS)
        out = Path(scratch) / "graph"
        result = runner.invoke(
            main, ["run", str(root / "mappings" / "digicert.yaml"), "--offline", "--output", str(out)]
        )
        assert result.exit_code == 0, result.output
        result = runner.invoke(
            main,
            [
                "sync",
                str(out),
                "--account",
                ACCOUNT,
                "--api-key",
                API_KEY,
                "--integration-instance-id",
                INSTANCE_ID,
                "--api-base-url",
                api.url,
                "--cassette",
                str(target),
                "--record-mode",
                "all",
            ],
        )
        assert result.exit_code == 0, result.output
        local = api.url
    text = target.read_text(encoding="utf-8")
    assert API_KEY not in text
    target.write_text(text.replace(local, REAL_BASE), encoding="utf-8")
    return target


if __name__ == "__main__":
    path = record_cassette(Path(__file__).resolve().parents[2] / "cassettes" / "jupiterone" / "sync.yaml")
    print(f"wrote {path}")
