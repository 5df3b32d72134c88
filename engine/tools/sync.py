"""Upload an output directory to JupiterOne's synchronization (persister) API.

The same protocol the JupiterOne SDK's ``j1-integration sync`` speaks::

    POST /persister/synchronization/jobs                      {"source": "integration-managed",
                                                                "integrationInstanceId": ID}
    POST /persister/synchronization/jobs/{id}/entities        {"entities": [...]}        <= 5,000,000 bytes
    POST /persister/synchronization/jobs/{id}/relationships   {"relationships": [...]}   <= 5,000,000 bytes
    POST /persister/synchronization/jobs/{id}/events          {"events": [{name, description, level}]}
    POST /persister/synchronization/jobs/{id}/finalize        {"partialDatasets": {"types": [...]}}
    POST /persister/synchronization/jobs/{id}/abort           {"reason": "..."}   (on any error)
    GET  /persister/synchronization/jobs/{id}                 the job's state (after an answer was lost)
    POST /graphql   integrationJobs(integrationInstanceId)    the instance's jobs (after a create's answer was lost)

Every request carries ``JupiterOne-Account``, ``Authorization: Bearer <key>`` and
``Content-Type: application/json``; the create and every upload batch a
``JupiterOne-Correlation-Id`` (kept across the retries of that request). 429, 5xx and
dropped connections are retried with backoff (``Retry-After`` honoured). A 413 shrinks
the batch: the largest ``_rawData`` entries become ``'TRUNCATED'``, and a batch with
nothing left to truncate is split in two; a single object the API still refuses is
skipped with a warning, and its ``_type`` is sent as partial so that finalizing does not
delete what JupiterOne already has.

What a lost answer cannot break:

- **one job per sync.** A create whose outcome is unknown (a 5xx, or the connection lost
  after the request went out) is not simply retried: the instance's jobs are looked up
  first, and the job that request created (awaiting uploads, nothing uploaded, started
  since the sync began) is used instead of a second one. Duplicates it can attribute to
  itself are aborted; jobs it cannot attribute are left alone and named.
- **finalize and abort are checked.** When their answer is lost, the job is read back
  (``GET``): a job that finalized is reported as finalized (and never aborted), a job
  that aborted as aborted.

Credentials stay at their origin: redirects are followed by hand, only within the
origin (scheme, host and port) of ``api_base_url``; a redirect anywhere else is refused
before anything is sent there.

One consistent run: the directory's shared lock (:func:`engine.output.output_lock`) is
held from reading ``summary.json`` to finalizing, so a run cannot replace it meanwhile;
and what was read is pinned (the directory's and every file's identity, summary.json's
digest) and checked as each graph file is read and again before finalizing, so a writer
that ignores the lock aborts the job instead of finalizing a mix of two runs.

The directory is streamed: graph files are read one at a time (entities of every step,
then relationships), and at most one batch is held in memory. Uploads are sequential,
so a run is deterministic (and recordable with vcrpy).
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import requests
import urllib3

from .. import output as outputs
from ..errors import (
    EXIT_OK,
    EXIT_PARTIAL,
    ConfigError,
    EtlError,
    OutputDirError,
    OutputError,
    PayloadTooLarge,
    RunInterrupted,
    SyncError,
    SyncInputError,
)
from ..http.cassette import cassette_miss
from ..http.retry import RETRYABLE_ERRORS, Attempts, RetryPolicy, connection_reason
from ..http.session import new_session, snippet
from ..output import COLLECTIONS, OutputDir, output_lock
from ..pipeline.config import read_dotenv
from ..secrets import MIN_SECRET_LENGTH, Redactor

log = logging.getLogger("etl.sync")

DEFAULT_API_BASE_URL = "https://api.us.jupiterone.io"
JOBS_PATH = "/persister/synchronization/jobs"
MAX_BATCH_BYTES = 5_000_000
TRUNCATED = "TRUNCATED"
SINGULAR = {"entities": "entity", "relationships": "relationship"}
INGESTION_LIMIT_EVENT = "warn_ingestion_limit_encountered"
MAX_SKIP_EVENTS = 100  # one warn event per skipped object, up to this many; then one that counts the rest
GRAPHQL_PATH = "/graphql"
# The instance's running jobs: an integration-managed synchronization job is created with an
# integration job of the same id (JupiterOne's GraphQL API; the query the JupiterOne web app sends).
INTEGRATION_JOBS_QUERY = (
    "query IntegrationJobs($integrationInstanceId: String, $status: IntegrationJobStatus, $size: Int) "
    "{ integrationJobs(integrationInstanceId: $integrationInstanceId, status: $status, size: $size) "
    "{ jobs { id status integrationInstanceId createDate } } }"
)
AWAITING_UPLOADS = "AWAITING_UPLOADS"
FINALIZED = ("FINALIZE_PENDING", "FINALIZING_ENTITIES", "FINALIZING_RELATIONSHIPS", "FINISHED")
# A job created by our lost request started after we sent it; this much earlier is still
# accepted, for the difference between our clock and JupiterOne's.
CLOCK_TOLERANCE_MS = 120_000
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5
LOCK_WAIT = 300.0  # seconds to wait for a run that is replacing the directory
LOOKUP_ATTEMPTS = 3  # for the requests that check a job's state (and for abort)


@dataclass(frozen=True)
class SyncSettings:
    account: str
    api_key: str
    integration_instance_id: str
    api_base_url: str = DEFAULT_API_BASE_URL
    max_batch_bytes: int = MAX_BATCH_BYTES
    retry: RetryPolicy = RetryPolicy(
        max_attempts=5, initial_delay=1.0, max_delay=30.0, statuses=(429, *range(500, 600))
    )  # and dropped connections
    timeout: float = 120.0
    step_events: bool = True  # post one event per step of summary.json before finalizing
    lock_wait: float = LOCK_WAIT  # seconds to wait while a run replaces the directory


@dataclass
class Skipped:
    collection: str
    type: str
    key: str
    reason: str


@dataclass
class SyncReport:
    job_id: str | None = None
    status: str = "NOT_STARTED"
    uploaded: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COLLECTIONS, 0))
    batches: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COLLECTIONS, 0))
    requests: int = 0
    truncated: int = 0  # _rawData entries replaced with 'TRUNCATED'
    skipped: list[Skipped] = field(default_factory=list)
    partial_types: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # lost answers, and what was found out about them
    create_unknown: bool = False  # a create's outcome was unknown, and no job of it was found

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.skipped else EXIT_OK

    def format(self) -> str:
        lines = [f"Synchronization job {self.job_id}: {self.status}"]
        for collection in COLLECTIONS:
            count, batches = self.uploaded[collection], self.batches[collection]
            lines.append(f"  {collection:<14} {count} uploaded in {batches} batch{'es' if batches != 1 else ''}")
        if self.truncated:
            lines.append(f"  {'truncated':<14} the raw data of {self.truncated} object(s), after HTTP 413")
        for skip in self.skipped:
            lines.append(f"  {'skipped':<14} {SINGULAR[skip.collection]} {skip.key} ({skip.type}): {skip.reason}")
        lines.append(f"  {'partial types':<14} {', '.join(self.partial_types) or 'none'}")
        lines.extend(f"  {'note':<14} {note}" for note in self.notes)
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# Batches


def encode(obj: Any) -> bytes:
    """Compact JSON, exactly as it is sent (so sizes computed from it are the sizes on the wire)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


_TRUNCATED_SIZE = len(encode(TRUNCATED))


class Item:
    """One graph object and its encoded form, kept in step."""

    __slots__ = ("obj", "data")

    def __init__(self, obj: dict):
        self.obj = obj
        self.data = encode(obj)

    def raw_entries(self) -> list[tuple[int, dict]]:
        """(encoded size, entry) of each ``_rawData`` entry not yet truncated."""
        entries = self.obj.get("_rawData")
        if not isinstance(entries, list):
            return []
        sized = [
            (len(encode(e["rawData"])), e)
            for e in entries
            if isinstance(e, dict) and "rawData" in e and e["rawData"] != TRUNCATED
        ]
        return [(size, e) for size, e in sized if size > _TRUNCATED_SIZE]  # truncating the rest gains nothing


def batch_body(collection: str, items: list[Item]) -> bytes:
    return b'{"' + collection.encode() + b'":[' + b",".join(i.data for i in items) + b"]}"


def batch_size(collection: str, items: list[Item]) -> int:
    return len(collection) + 7 + sum(len(i.data) for i in items) + max(len(items) - 1, 0)


def truncate_raw_data(items: list[Item], target: int, size: int) -> int:
    """Replace the largest ``_rawData`` entries of ``items`` with 'TRUNCATED', largest first,
    until the batch is at most ``target`` bytes (``size`` is its current size) or none is
    left. Returns how many objects changed."""
    entries = sorted(
        ((s, n, e, item) for n, item in enumerate(items) for s, e in item.raw_entries()), key=lambda t: (-t[0], t[1])
    )
    changed: dict[int, Item] = {}
    for entry_size, number, entry, item in entries:
        if size <= target:
            break
        entry["rawData"] = TRUNCATED
        size -= entry_size - _TRUNCATED_SIZE
        changed[number] = item
    for item in changed.values():
        item.data = encode(item.obj)
    return len(changed)


# ----------------------------------------------------------------------------------------
# One consistent run


@dataclass(frozen=True)
class FileId:
    """What changes when a file is replaced or rewritten (inode numbers alone can be reused)."""

    device: int
    inode: int
    size: int
    mtime_ns: int


def file_id(path: Path) -> FileId | None:
    """The identity of ``path`` now; None when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileId(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _dir_id(path: Path) -> tuple[int, int] | None:
    """A directory's identity: its device and inode (its mtime moves with any file added to it)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class Snapshot:
    """What ``etl sync`` read of an output directory, pinned: the directory itself,
    summary.json (identity and digest) and every graph file (identity), listed once at
    the start. :meth:`check_file` and :meth:`verify` say whether it still holds."""

    def __init__(self, root: Path):
        self.root = root
        self.root_id = _dir_id(root)
        self.summary_path = root / "summary.json"
        self.summary_id = file_id(self.summary_path)
        self.summary_digest = _digest(self.summary_path)
        self.directory = OutputDir.open(root)  # reads summary.json after it was pinned
        self.files: dict[str, list[tuple[Path, FileId | None]]] = {
            collection: [(path, file_id(path)) for path in self.directory.files(collection)]
            for collection in COLLECTIONS
        }
        self.verify_summary()  # nothing changed while summary.json was read and the files listed

    def changed(self, detail: str) -> SyncError:
        return SyncError(
            f"{self.root} changed during the upload: {detail}. Something wrote to it without waiting for its "
            f"lock; the job was aborted rather than finalized with a mix of two runs - sync again once the "
            f"directory holds one finished run"
        )

    def relative(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def verify_root(self) -> None:
        if _dir_id(self.root) != self.root_id:
            raise self.changed("the directory was replaced (it is not the one whose files were listed)")

    def verify_summary(self) -> None:
        self.verify_root()
        if file_id(self.summary_path) is None:
            raise self.changed("summary.json vanished")
        if file_id(self.summary_path) != self.summary_id or _digest(self.summary_path) != self.summary_digest:
            raise self.changed("summary.json was rewritten")

    def check_file(self, path: Path, pinned: FileId | None) -> None:
        """Before and after a graph file is read: is it still the file that was listed?"""
        self.verify_root()
        now = file_id(path)
        if now is None:
            raise self.changed(f"{self.relative(path)} vanished")
        if now != pinned:
            raise self.changed(f"{self.relative(path)} was rewritten")

    def objects(self, collection: str) -> Iterator[dict]:
        """The objects of ``collection``, one pinned file at a time."""
        for path, pinned in self.files[collection]:
            self.check_file(path, pinned)
            try:
                objects = outputs.read_graph_file(path, collection)
            except OutputDirError:
                self.check_file(path, pinned)  # a file that vanished or changed says so
                raise
            self.check_file(path, pinned)
            yield from objects

    def verify(self) -> None:
        """Before finalizing: the directory, summary.json and the list and identity of every graph file."""
        self.verify_summary()
        for collection in COLLECTIONS:
            listed = [path for path, _ in self.files[collection]]
            now = self.directory.files(collection)
            added = sorted(set(now) - set(listed))
            if added:
                names = ", ".join(self.relative(p) for p in added[:3]) + (", ..." if len(added) > 3 else "")
                raise self.changed(f"graph files appeared: {names}")
            for path, pinned in self.files[collection]:
                self.check_file(path, pinned)


def hold_shared_lock(stack: ExitStack, root: Path, wait: float) -> None:
    """Take the shared lock of ``root`` (a run replacing it takes it exclusively), waiting up to
    ``wait`` seconds for a run to finish. Where the lock file cannot be made (a read-only
    parent directory), go on without it: the snapshot's checks still stop a mixed upload."""
    try:
        stack.enter_context(output_lock(root, shared=True, wait=0.0))
        return
    except OutputError:
        pass
    except OSError as exc:
        log.warning(
            "cannot take the lock of %s (%s): uploading without it; a run replacing it meanwhile aborts the job",
            root,
            exc.strerror or exc,
        )
        return
    log.warning("%s is locked: a run is replacing it; waiting up to %.0fs for it to finish", root, wait)
    try:
        stack.enter_context(output_lock(root, shared=True, wait=wait))
    except OutputError as exc:
        raise SyncError(f"{exc} (waited {wait:.0f}s; no job was created)") from None
    log.info("%s: the run finished replacing it; uploading it now", root)


# ----------------------------------------------------------------------------------------
# The API client


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, default ports filled in; None if it has none."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port if port is not None else (443 if scheme == "https" else 80)


def origin_text(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _never_sent(exc: Exception) -> bool:
    """A transport failure before the request went out (no connection, TLS handshake), so the
    server cannot have acted on it. Anything else (a reset, a timeout, a body cut short) may
    have come after the server acted."""
    if isinstance(exc, (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError)):
        return True
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, urllib3.exceptions.MaxRetryError):
        reason = reason.reason
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


class PersisterClient:
    """HTTP to the synchronization API: headers, same-origin redirects only, retries with
    backoff, redacted errors."""

    def __init__(self, settings: SyncSettings, redactor: Redactor, report: SyncReport):
        self.settings = settings
        self.redactor = redactor
        self.report = report
        self.base_url = settings.api_base_url.rstrip("/")
        self.origin = origin(self.base_url)
        self.session = new_session(
            {
                "Content-Type": "application/json",
                "JupiterOne-Account": settings.account,
                "Authorization": f"Bearer {settings.api_key}",
            }
        )

    def close(self) -> None:
        self.session.close()

    def post(self, path: str, body: bytes, **options: Any) -> Any:
        """POST ``body`` (JSON bytes); see :meth:`request`."""
        return self.request("POST", path, body, **options)

    def get(self, path: str, **options: Any) -> Any:
        return self.request("GET", path, None, **options)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        *,
        headers: dict[str, str] | None = None,
        what: str = "",
        attempts: int | None = None,
        allow_too_large: bool = False,
        unknown_outcome: Callable[[str], Any] | None = None,
    ) -> Any:
        """The decoded JSON answer (None when empty). With ``allow_too_large``, a refusal as
        too large raises :class:`PayloadTooLarge`. ``unknown_outcome(reason)`` is called after
        each attempt that may have been carried out although no answer says so (a 5xx, a
        connection lost after sending), before the next attempt: what it returns, if not
        None, is the answer."""
        shown = self.redactor(f"{method} {path}")
        policy = self.settings.retry
        if attempts is not None:
            policy = dataclasses.replace(policy, max_attempts=attempts)
        tries = Attempts(policy, f"{shown}{what}")
        for attempt in tries:
            try:
                response = self.send(method, path, body, headers, shown)
            except RETRYABLE_ERRORS as exc:
                failure = tries.transport_failed(exc)
                if unknown_outcome is not None and not _never_sent(exc):
                    found = unknown_outcome(connection_reason(exc))
                    if found is not None:
                        return found
                if failure:
                    raise SyncError(self.redactor(f"{shown} {failure}")) from None
                continue
            except Exception as exc:
                if not cassette_miss(exc):
                    raise
                raise SyncError(
                    f"{shown}: the cassette holds no response for this request (replay only); "
                    f"re-record it, or check the directory and options"
                ) from None
            status = response.status_code
            log.debug("%s%s -> %d (attempt %d, %d bytes)", shown, what, status, attempt, len(body or b""))
            if allow_too_large and (status == 413 or (status == 400 and b"RequestEntityTooLarge" in response.content)):
                raise PayloadTooLarge()
            retry = tries.retry_status(response)
            if unknown_outcome is not None and status >= 500:
                found = unknown_outcome(f"HTTP {status}")
                if found is not None:
                    return found
            if retry:
                continue
            if status >= 400:
                raise SyncError(self._failure(shown, response, tries.suffix))
            if not response.content.strip():
                return None
            try:
                return json.loads(response.content)
            except (ValueError, UnicodeDecodeError, RecursionError):
                raise SyncError(
                    self.redactor(f"{shown} returned HTTP {status} with a body that is not JSON: {snippet(response)}")
                ) from None
        raise AssertionError("unreachable: Attempts never ends by itself")

    def send(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str] | None, shown: str
    ) -> requests.Response:
        """One attempt, following redirects by hand: only within the API's origin, so the
        account and key are never sent anywhere else (requests would forward the account
        header to any host, and the key to any port of the same host)."""
        url = self.base_url + path
        for _ in range(MAX_REDIRECTS + 1):
            self.report.requests += 1
            response = self.session.request(
                method, url, data=body, headers=headers, timeout=self.settings.timeout, allow_redirects=False
            )
            status = response.status_code
            if status not in REDIRECT_STATUSES:
                return response
            response.close()
            location = response.headers.get("Location")
            if not location:
                raise SyncError(self.redactor(f"{shown} was redirected (HTTP {status}) without a Location"))
            target = urljoin(url, location)
            if origin(target) is None or origin(target) != self.origin:
                raise SyncError(
                    self.redactor(
                        f"{shown} was redirected (HTTP {status}) to another origin, {origin_text(target)}: refusing "
                        f"to send the JupiterOne account and API key there (only redirects within "
                        f"{origin_text(self.base_url)} are followed); check --api-base-url"
                    )
                )
            log.debug("%s: HTTP %d, following the redirect to %s", shown, status, self.redactor(target))
            if status == 303:
                method, body = "GET", None
            url = target
        raise SyncError(self.redactor(f"{shown}: more than {MAX_REDIRECTS} redirects"))

    def _failure(self, shown: str, response: requests.Response, suffix: str) -> str:
        text = f"{shown} failed: HTTP {response.status_code} {response.reason or ''}".rstrip()
        detail = snippet(response)
        if detail:
            text += f": {detail}"
        return self.redactor(text + suffix)


# ----------------------------------------------------------------------------------------
# The synchronization


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


# ----------------------------------------------------------------------------------------
# Entry point


ACCOUNT_ENV = "JUPITERONE_ACCOUNT"
API_KEY_ENV = "JUPITERONE_API_KEY"


def resolve_credentials(
    account: str | None, api_key: str | None, dotenv: Path | None = Path(".env")
) -> tuple[str, str]:
    """The account and API key: given (from an option or the environment), else from ``.env``."""
    values = read_dotenv(dotenv) if dotenv else {}
    account = account or values.get(ACCOUNT_ENV) or ""
    api_key = api_key or values.get(API_KEY_ENV) or ""
    if not account.strip():
        raise ConfigError(f"missing the JupiterOne account: pass --account ID or set {ACCOUNT_ENV} (or put it in .env)")
    if not api_key:
        raise ConfigError(f"missing the JupiterOne API key: set {API_KEY_ENV} (or put it in .env), or pass --api-key")
    if len(api_key) < MIN_SECRET_LENGTH:
        log.warning("the API key is shorter than %d characters: too short to redact safely", MIN_SECRET_LENGTH)
    return account.strip(), api_key


def check_settings(settings: SyncSettings) -> None:
    parts = urlsplit(settings.api_base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SyncInputError(f"--api-base-url must be an http(s) URL, got {settings.api_base_url!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise SyncInputError(
            f"refusing to send the API key over plain HTTP to {parts.hostname}; use https:// "
            f"(plain http is allowed only to a loopback address, for local testing)"
        )
    if settings.max_batch_bytes < 64:
        raise SyncInputError("the batch limit must be at least 64 bytes")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def synchronize(root: Path, settings: SyncSettings, redactor: Redactor | None = None) -> SyncReport:
    """Upload the output directory ``root`` as one synchronization job, holding its shared
    lock throughout. Raises :class:`SyncInputError` before any request, :class:`SyncError`
    (the message says how far it got, and what became of the job) or :class:`RunInterrupted`."""
    check_settings(settings)
    try:
        OutputDir.open(root)  # a usage error, before a lock file is made beside it
    except OutputDirError as exc:
        raise SyncInputError(str(exc)) from None
    with ExitStack() as lock:
        try:
            hold_shared_lock(lock, root, settings.lock_wait)
        except KeyboardInterrupt:
            raise RunInterrupted(f"interrupted while waiting for the lock of {root} (no job was created)") from None
        try:
            snapshot = Snapshot(root)
        except (OutputDirError, SyncError) as exc:
            raise SyncError(f"{exc} (no job was created)") from None
        synchronizer = Synchronizer(snapshot, settings, redactor)
        try:
            return synchronizer.run()
        except KeyboardInterrupt:
            message = "interrupted"
            if synchronizer.report.job_id is None and synchronizer.report.create_unknown:
                message += (
                    f" while looking for the job a request got no answer about: if integration instance "
                    f"{settings.integration_instance_id} has a job awaiting uploads, abort it in JupiterOne"
                )
            raise RunInterrupted(_failed(message, synchronizer.report)) from None
        except OutputDirError as exc:  # a graph file that cannot be read: the job was aborted
            raise SyncError(_failed(str(exc), synchronizer.report)) from None
        except EtlError as exc:
            exc.args = (_failed(str(exc), synchronizer.report),)
            raise
    raise AssertionError("unreachable: the lock's block returns or raises")


def _failed(message: str, report: SyncReport) -> str:
    if report.job_id is None:
        return message if report.create_unknown else f"{message} (no job was created)"
    done = f"{report.uploaded['entities']} entities and {report.uploaded['relationships']} relationships uploaded"
    if report.status == "ABORT_FAILED":
        return f"{message}; job {report.job_id} could NOT be aborted ({done}): abort it in JupiterOne"
    if report.status == "ABORTED":
        return f"{message}; job {report.job_id} aborted ({done}, nothing finalized)"
    if report.status == "UNKNOWN":
        return f"{message} ({done})"
    return f"{message}; job {report.job_id} is {report.status}, not aborted ({done})"
