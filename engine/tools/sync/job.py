"""One synchronization job: create (once), upload, events, finalize - or abort."""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from typing import Any
from urllib.parse import quote

import requests

from ...errors import (
    EtlError,
    PayloadTooLarge,
    RunInterrupted,
    SyncError,
)
from ...output import COLLECTIONS
from ...secrets import Redactor
from .batches import Item, batch_body, batch_size, encode, truncate_raw_data
from .client import PersisterClient
from .settings import (
    AWAITING_UPLOADS,
    CLOCK_TOLERANCE_MS,
    FINALIZED,
    GRAPHQL_PATH,
    INGESTION_LIMIT_EVENT,
    INTEGRATION_JOBS_QUERY,
    JOBS_PATH,
    LOOKUP_ATTEMPTS,
    MAX_SKIP_EVENTS,
    SINGULAR,
    TRUNCATED,
    Skipped,
    SyncReport,
    SyncSettings,
)
from .snapshot import Snapshot

log = logging.getLogger("etl.sync")


class Synchronizer:
    """One synchronization job: create, upload, (events), finalize - or abort."""

    def __init__(self, snapshot: Snapshot, settings: SyncSettings, redactor: Redactor | None = None):
        self.snapshot = snapshot
        self.directory = snapshot.directory
        self.settings = settings
        self.redactor = redactor if redactor is not None else Redactor([settings.api_key])
        self.report = SyncReport()
        self.client = PersisterClient(settings, self.redactor, self.report)
        self.job_open = False  # a job that is ours and awaiting uploads: abort it on any error
        self.create_started_ms = 0  # when the first create was sent (our clock)
        self.unknown_creates: list[str] = []  # why each create whose outcome is unknown got no answer
        self.not_ours: set[str] = set()  # jobs already accounted for (ours, or duplicates aborted)
        self.found_lost_job = False  # the job is one an unanswered create had made
        self.create_explained = False  # the create's error already says what may have been created
        self.finalize_lost: list[str] = []  # why finalize attempts got no answer
        self.state_read: tuple[int, str | None, str] | None = None  # (requests sent by then, status, why)

    def run(self) -> SyncReport:
        try:
            try:
                self.create_job()
                for collection in COLLECTIONS:
                    self.upload(collection)
                self.post_events()
                self.snapshot.verify()
                self.finalize()
            except BaseException as exc:
                if self.job_open:  # ours and awaiting uploads (not before it exists, nor once finalized)
                    self.abort(exc)
                raise
        finally:
            self.client.close()
        return self.report

    def note(self, text: str) -> None:
        """What the user must know (a lost answer, a job found or aborted): logged now, reported at the end."""
        text = self.redactor(text)
        log.warning("%s", text)
        self.report.notes.append(text)

    @property
    def job_path(self) -> str:
        assert self.report.job_id is not None  # used only after create_job
        return _job_path(self.report.job_id)

    # -- creating the job, once ----------------------------------------------------------------

    def create_job(self) -> None:
        body = {"source": "integration-managed", "integrationInstanceId": self.settings.integration_instance_id}
        correlation_id = str(uuid.uuid4())
        self.create_started_ms = int(time.time() * 1000)
        try:
            answer = self.client.post(
                JOBS_PATH,
                encode(body),
                what=f" (create the job, correlation id {correlation_id})",
                headers={"JupiterOne-Correlation-Id": correlation_id},
                unknown_outcome=self.find_lost_job,
            )
        except SyncError as exc:
            if self.unknown_creates and not self.create_explained:
                raise SyncError(
                    f"{exc}. A job may have been created by a request whose answer was lost, and none was found "
                    f"for integration instance {self.settings.integration_instance_id}: if one shows up awaiting "
                    f"uploads, abort it in JupiterOne"
                ) from None
            raise
        job = _get(answer, "job")
        job_id = _get(job, "id")
        if not isinstance(job_id, (str, int)) or job_id == "":
            raise SyncError(self.redactor(f"POST {JOBS_PATH} answered without a job id: {str(answer)[:200]}"))
        self.report.job_id = str(job_id)
        self.report.status = str(_get(job, "status") or AWAITING_UPLOADS)
        self.job_open = True
        self.not_ours.add(self.report.job_id)
        log.info("job %s created", self.report.job_id)
        if self.unknown_creates and not self.found_lost_job:
            self.abort_lost_jobs()

    def find_lost_job(self, reason: str) -> dict | None:
        """After a create whose outcome is unknown: the job it created, if it can be found
        (then it is used, as if the answer had arrived); None to try again."""
        self.unknown_creates.append(reason)
        self.report.create_unknown = True  # until a job is found or made
        try:
            candidates = self.lost_jobs()
        except SyncError as exc:
            self.create_explained = True
            raise SyncError(
                f"POST {JOBS_PATH} (create the job): no answer ({reason}), so the job may have been created, and "
                f"looking for it failed: {exc}. Stopped rather than create a second job: if integration instance "
                f"{self.settings.integration_instance_id} has a job awaiting uploads started since "
                f"{_when(self.create_started_ms)}, abort it in JupiterOne"
            ) from None
        if not candidates:
            log.warning("POST %s: no answer (%s), and no job was created by it: trying again", JOBS_PATH, reason)
            return None
        self.check_attributable(candidates)
        job, *duplicates = candidates
        job_id = str(job["id"])
        self.not_ours.add(job_id)
        self.note(
            f"creating the job got no answer ({reason}); job {job_id}, which that request had created "
            f"(started {_when(job.get('startTimestamp'))}, awaiting uploads, nothing uploaded), is used"
        )
        for duplicate in duplicates:
            self.abort_duplicate(str(duplicate["id"]))
        self.found_lost_job = True
        return {"job": job}

    def abort_lost_jobs(self) -> None:
        """The create was answered after earlier attempts got none: abort any job those created."""
        try:
            candidates = self.lost_jobs()
        except SyncError as exc:
            self.note(
                f"{len(self.unknown_creates)} earlier attempt(s) to create the job got no answer, and looking for "
                f"a job they may have created failed ({exc}): if integration instance "
                f"{self.settings.integration_instance_id} has a job other than {self.report.job_id} awaiting "
                f"uploads, abort it in JupiterOne"
            )
            return
        self.check_attributable(candidates, fatal=False)
        if len(candidates) <= len(self.unknown_creates):
            for duplicate in candidates:
                self.abort_duplicate(str(duplicate["id"]))

    def check_attributable(self, candidates: list[dict], *, fatal: bool = True) -> None:
        """More new, unused jobs than our unanswered creates: some are someone else's, and
        which is ours cannot be told; touch none of them."""
        if len(candidates) <= len(self.unknown_creates):
            return
        ids = ", ".join(str(c["id"]) for c in candidates)
        text = (
            f"{len(self.unknown_creates)} request(s) to create the job got no answer, and integration instance "
            f"{self.settings.integration_instance_id} has {len(candidates)} new jobs awaiting uploads ({ids}): "
            f"another upload to the same instance is running, and which job (if any) is etl's cannot be told, "
            f"so none of them was used or aborted"
        )
        if fatal:
            self.create_explained = True
            raise SyncError(
                f"{text}; sync again when the other upload has finished, and abort in JupiterOne any of these "
                f"jobs left awaiting uploads"
            )
        self.note(text)

    def lost_jobs(self) -> list[dict]:
        """Jobs of the integration instance that an unanswered create of ours may have made:
        awaiting uploads, nothing uploaded, started since the first create (oldest first)."""
        variables = {
            "integrationInstanceId": self.settings.integration_instance_id,
            "status": "IN_PROGRESS",
            "size": 100,
        }
        answer = self.client.post(
            GRAPHQL_PATH,
            encode({"query": INTEGRATION_JOBS_QUERY, "variables": variables}),
            what=" (look for the job created without an answer)",
            attempts=LOOKUP_ATTEMPTS,
        )
        listed = _get(answer, "data", "integrationJobs", "jobs")
        if not isinstance(listed, list):
            errors = _get(answer, "errors")
            detail = f": {str(errors)[:200]}" if errors else ""
            raise SyncError(self.redactor(f"POST {GRAPHQL_PATH} answered without data.integrationJobs.jobs{detail}"))
        since = self.create_started_ms - CLOCK_TOLERANCE_MS
        candidates = []
        for entry in listed:
            job_id = _get(entry, "id")
            if not isinstance(job_id, str) or not job_id or job_id in self.not_ours:
                continue
            if _get(entry, "integrationInstanceId") not in (None, self.settings.integration_instance_id):
                continue
            created = _get(entry, "createDate")
            if isinstance(created, int) and not isinstance(created, bool) and created < since:
                continue
            job = _get(self.client.get(_job_path(job_id), what=" (check the job)", attempts=LOOKUP_ATTEMPTS), "job")
            if self.unused_since(job, since):
                candidates.append(job)
        return sorted(candidates, key=lambda job: (job["startTimestamp"], str(job["id"])))

    def unused_since(self, job: Any, since: int) -> bool:
        if not isinstance(job, dict) or job.get("status") != AWAITING_UPLOADS:
            return False
        if job.get("integrationInstanceId") not in (None, self.settings.integration_instance_id):
            return False
        if job.get("source") not in (None, "integration-managed"):
            return False
        if any(job.get(count) not in (None, 0) for count in ("numEntitiesUploaded", "numRelationshipsUploaded")):
            return False
        started = job.get("startTimestamp")
        return isinstance(started, int) and not isinstance(started, bool) and started >= since

    def abort_duplicate(self, job_id: str) -> None:
        self.not_ours.add(job_id)
        reason = "etl sync: a second job, created by a retried request whose first answer was lost"
        try:
            self.client.post(
                f"{_job_path(job_id)}/abort", encode({"reason": reason}), what=" (abort)", attempts=LOOKUP_ATTEMPTS
            )
        except (EtlError, requests.RequestException) as exc:
            self.note(
                f"job {job_id} was also created by a request whose answer was lost, and could NOT be aborted "
                f"({exc}): abort it in JupiterOne"
            )
            return
        self.note(f"job {job_id} was also created by a request whose answer was lost: it was aborted")

    # -- uploading --------------------------------------------------------------------------------

    def upload(self, collection: str) -> None:
        batch: list[Item] = []
        size = batch_size(collection, [])
        for obj in self.snapshot.objects(collection):
            item = Item(obj)
            if not self.fits_alone(collection, item):
                continue
            added = len(item.data) + (1 if batch else 0)
            if batch and size + added > self.settings.max_batch_bytes:
                self.send(collection, batch)
                batch, size = [], batch_size(collection, [])
                added = len(item.data)
            batch.append(item)
            size += added
        if batch:
            self.send(collection, batch)

    def fits_alone(self, collection: str, item: Item) -> bool:
        """An object that would exceed the batch limit on its own loses its raw data, or is skipped."""
        limit = self.settings.max_batch_bytes
        size = batch_size(collection, [item])
        if size <= limit:
            return True
        self.report.truncated += truncate_raw_data([item], limit, size)
        size = batch_size(collection, [item])
        if size <= limit:
            log.warning(
                "%s %s is larger than the %d-byte batch limit; its raw data was replaced with '%s'",
                SINGULAR[collection],
                self.redactor(item.obj["_key"]),
                limit,
                TRUNCATED,
            )
            return True
        self.skip(collection, item, f"{size} bytes, more than the {limit}-byte batch limit even without raw data")
        return False

    def send(self, collection: str, items: list[Item]) -> None:
        """Upload one batch; on 413 truncate raw data, then split, then skip single objects."""
        pending = deque([(items, str(uuid.uuid4()))])
        while pending:
            batch, correlation_id = pending.popleft()
            body = batch_body(collection, batch)
            what = f" ({len(batch)} {collection}, {len(body)} bytes, correlation id {correlation_id})"
            try:
                self.client.post(
                    f"{self.job_path}/{collection}",
                    body,
                    what=what,
                    allow_too_large=True,
                    headers={"JupiterOne-Correlation-Id": correlation_id},
                )
            except PayloadTooLarge:
                changed = truncate_raw_data(batch, len(body) // 2, len(body))
                if changed:
                    self.report.truncated += changed
                    log.warning(
                        "POST %s/%s: HTTP 413 for a batch of %d bytes; replaced the raw data of %d "
                        "object(s) with '%s' and retrying",
                        self.job_path,
                        collection,
                        len(body),
                        changed,
                        TRUNCATED,
                    )
                    pending.appendleft((batch, correlation_id))
                elif len(batch) > 1:
                    half = len(batch) // 2
                    log.warning(
                        "POST %s/%s: HTTP 413 for %d objects without raw data; splitting the batch",
                        self.job_path,
                        collection,
                        len(batch),
                    )
                    pending.extendleft([(batch[half:], str(uuid.uuid4())), (batch[:half], str(uuid.uuid4()))])
                else:
                    self.skip(collection, batch[0], "refused as too large (HTTP 413) even without its raw data")
                continue
            self.report.uploaded[collection] += len(batch)
            self.report.batches[collection] += 1
            log.info("uploaded %d %s (%d bytes)", len(batch), collection, len(body))

    def skip(self, collection: str, item: Item, reason: str) -> None:
        skipped = Skipped(collection, item.obj["_type"], self.redactor(item.obj["_key"]), reason)
        self.report.skipped.append(skipped)
        log.warning(
            "skipped %s %s (%s): %s; %s is sent as a partial type",
            SINGULAR[collection],
            skipped.key,
            skipped.type,
            reason,
            skipped.type,
        )

    def events(self) -> list[dict]:
        events = []
        if self.settings.step_events:
            events += [step_event(step) for step in self.directory.steps]
        for skip in self.report.skipped[:MAX_SKIP_EVENTS]:
            events.append(
                {
                    "name": INGESTION_LIMIT_EVENT,
                    "level": "warn",
                    "description": f"Skipped {SINGULAR[skip.collection]} {skip.key} (_type {skip.type}): "
                    f"{skip.reason}. {skip.type} is marked partial.",
                }
            )
        if len(self.report.skipped) > MAX_SKIP_EVENTS:
            events.append(
                {
                    "name": INGESTION_LIMIT_EVENT,
                    "level": "warn",
                    "description": f"{len(self.report.skipped) - MAX_SKIP_EVENTS} more objects were skipped "
                    f"as too large.",
                }
            )
        return events

    def post_events(self) -> None:
        events = self.events()
        if events:
            self.client.post(
                f"{self.job_path}/events",
                self.redactor.bytes(encode({"events": events})),
                what=f" ({len(events)} events)",
            )

    def finalize(self) -> None:
        types = sorted(set(self.directory.partial_types) | {s.type for s in self.report.skipped})
        self.report.partial_types = types
        try:
            answer = self.client.post(
                f"{self.job_path}/finalize",
                encode({"partialDatasets": {"types": types}}),
                what=" (finalize)",
                unknown_outcome=self.finalize_unanswered,
            )
        except SyncError as exc:
            self.check_finalized(exc)
            return
        self.report.status = str(_get(answer, "job", "status") or "FINALIZE_PENDING")
        self.job_open = False
        log.info("job %s finalized: %s", self.report.job_id, self.report.status)

    def finalize_unanswered(self, reason: str) -> dict | None:
        """A finalize got no answer (a 5xx, a lost connection): before it is sent again, the
        job says whether it was carried out."""
        self.finalize_lost.append(reason)
        status, _ = self.job_state(attempts=1)
        if status in FINALIZED:
            self.note(
                f"finalizing got no answer ({reason}), but job {self.report.job_id} is {status}: "
                f"the finalize had been carried out"
            )
            return {"job": {"status": status}}
        return None

    def check_finalized(self, failure: SyncError) -> None:
        """Finalizing failed, or so it seems: an attempt whose answer was lost may have been
        carried out (and the next one refused, the job no longer awaiting uploads). The job's
        state decides: finalized is a success; still awaiting uploads, a failure (the caller
        aborts); anything else is reported as it is, and not aborted."""
        if self.state_read is not None and self.state_read[0] == self.report.requests:
            status, why = self.state_read[1:]  # read just now, after the last attempt
        else:
            status, why = self.job_state()
        lost = f" (before that: no answer, {'; '.join(self.finalize_lost)})" if self.finalize_lost else ""
        if status in FINALIZED:
            self.job_open = False
            self.report.status = status
            self.note(
                f"finalizing failed: {failure}{lost}; but job {self.report.job_id} is {status}: "
                f"the finalize had been carried out"
            )
            return
        if status == AWAITING_UPLOADS:
            raise failure
        self.job_open = False
        if status is None:
            self.report.status = "UNKNOWN"
            raise SyncError(
                f"{failure}{lost}; and the job's state could not be read ({why}): job {self.report.job_id} may or "
                f"may not have been finalized. It was NOT aborted: check it in JupiterOne"
            ) from None
        self.report.status = status
        raise SyncError(f"{failure}{lost}; job {self.report.job_id} is {status}") from None

    def job_state(self, attempts: int = LOOKUP_ATTEMPTS) -> tuple[str | None, str]:
        """The job's status as JupiterOne has it now (None, and why, when it cannot be read)."""
        try:
            answer = self.client.get(self.job_path, what=" (check the job)", attempts=attempts)
        except (EtlError, requests.RequestException) as exc:
            status, why = None, str(exc)
        else:
            status = _get(answer, "job", "status")
            if not isinstance(status, str) or not status:
                status, why = None, f"GET {self.job_path} answered without job.status"
            else:
                why = ""
        self.state_read = (self.report.requests, status, why)
        return status, why

    def abort(self, cause: BaseException) -> None:
        if isinstance(cause, (KeyboardInterrupt, RunInterrupted)):
            reason = "interrupted"
        else:
            reason = str(cause) or type(cause).__name__
        reason = self.redactor(f"etl sync failed: {reason}")[:1000]
        try:
            answer = self.client.post(
                f"{self.job_path}/abort", encode({"reason": reason}), what=" (abort)", attempts=LOOKUP_ATTEMPTS
            )
            self.report.status = str(_get(answer, "job", "status") or "ABORTED")
        except (EtlError, requests.RequestException) as exc:
            # The abort's answer may have been lost after it was carried out: ask the job.
            status, _ = self.job_state()
            if status is None or status == AWAITING_UPLOADS:
                self.report.status = "ABORT_FAILED"
                log.error("could not abort job %s: %s", self.report.job_id, self.redactor(str(exc)))
            else:
                self.report.status = status
                log.warning(
                    "aborting job %s got no answer it could use (%s), but the job is %s",
                    self.report.job_id,
                    self.redactor(str(exc)),
                    status,
                )
        self.job_open = False


def _job_path(job_id: str) -> str:
    return f"{JOBS_PATH}/{quote(job_id, safe='')}"


def _when(epoch_ms: Any) -> str:
    if not isinstance(epoch_ms, int) or isinstance(epoch_ms, bool):
        return "an unknown time"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_ms / 1000))


def _get(data: Any, *path: str) -> Any:
    for name in path:
        if not isinstance(data, dict):
            return None
        data = data.get(name)
    return data


def step_event(step: dict) -> dict:
    """A JupiterOne job-log event for one step of summary.json (as the SDK's step_end / step_failure)."""
    name = f'"{step.get("name") or step.get("id")}" ({step.get("id")})'
    counts = step.get("encounteredTypeCounts") or {}
    found = ", ".join(f"{n} {t}" for t, n in counts.items()) if isinstance(counts, dict) else ""
    found = f": {found}" if found else ""
    status = step.get("status")
    if status == "failure":
        return {"name": "step_failure", "level": "error", "description": f"Step {name} failed to complete{found}."}
    if status == "success":
        return {"name": "step_end", "level": "info", "description": f"Completed step {name}{found}."}
    return {"name": "step_end", "level": "warn", "description": f"Step {name} ended with status {status}{found}."}
