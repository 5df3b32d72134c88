"""Upload an output directory to JupiterOne's synchronization (persister) API.

The same protocol the JupiterOne SDK's ``j1-integration sync`` speaks::

    POST /persister/synchronization/jobs                      {"source": "integration-managed",
                                                                "integrationInstanceId": ID}
    POST /persister/synchronization/jobs/{id}/entities        {"entities": [...]}        <= 5,000,000 bytes
    POST /persister/synchronization/jobs/{id}/relationships   {"relationships": [...]}   <= 5,000,000 bytes
    POST /persister/synchronization/jobs/{id}/events          {"events": [{name, description, level}]}
    POST /persister/synchronization/jobs/{id}/finalize        {"partialDatasets": {"types": [...]}}
    POST /persister/synchronization/jobs/{id}/abort           {"reason": "..."}   (on any error)

Every request carries ``JupiterOne-Account``, ``Authorization: Bearer <key>`` and
``Content-Type: application/json``; every upload batch a ``JupiterOne-Correlation-Id``
(kept across the retries of that batch). 429, 5xx and dropped connections are retried
with backoff (``Retry-After`` honoured). A 413 shrinks the batch: the largest ``_rawData``
entries become ``'TRUNCATED'``, and a batch with nothing left to truncate is split in
two; a single object the API still refuses is skipped with a warning, and its ``_type``
is sent as partial so that finalizing does not delete what JupiterOne already has.

The directory is streamed: graph files are read one at a time (entities of every step,
then relationships), and at most one batch is held in memory. Uploads are sequential,
so a run is deterministic (and recordable with vcrpy).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from ..errors import (
    EXIT_OK,
    EXIT_PARTIAL,
    ConfigError,
    EtlError,
    OutputDirError,
    PayloadTooLarge,
    RunInterrupted,
    SyncError,
    SyncInputError,
)
from ..http.cassette import cassette_miss
from ..http.retry import RETRYABLE_ERRORS, Attempts, RetryPolicy
from ..http.session import new_session, snippet
from ..output import COLLECTIONS, OutputDir
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
# The API client


class PersisterClient:
    """HTTP to the synchronization API: headers, retries with backoff, redacted errors."""

    def __init__(self, settings: SyncSettings, redactor: Redactor, report: SyncReport):
        self.settings = settings
        self.redactor = redactor
        self.report = report
        self.base_url = settings.api_base_url.rstrip("/")
        self.session = new_session(
            {
                "Content-Type": "application/json",
                "JupiterOne-Account": settings.account,
                "Authorization": f"Bearer {settings.api_key}",
            }
        )

    def close(self) -> None:
        self.session.close()

    def post(
        self,
        path: str,
        body: bytes,
        *,
        headers: dict[str, str] | None = None,
        what: str = "",
        attempts: int | None = None,
        allow_too_large: bool = False,
    ) -> Any:
        """POST ``body`` (JSON bytes); the decoded JSON answer (None when empty). With
        ``allow_too_large``, a refusal as too large raises :class:`PayloadTooLarge`."""
        url = self.base_url + path
        shown = self.redactor(f"POST {path}")
        policy = self.settings.retry
        if attempts is not None:
            policy = dataclasses.replace(policy, max_attempts=attempts)
        tries = Attempts(policy, f"{shown}{what}")
        for attempt in tries:
            try:
                self.report.requests += 1
                response = self.session.post(url, data=body, headers=headers, timeout=self.settings.timeout)
            except RETRYABLE_ERRORS as exc:
                failure = tries.transport_failed(exc)
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
            log.debug("%s%s -> %d (attempt %d, %d bytes)", shown, what, status, attempt, len(body))
            if allow_too_large and (status == 413 or (status == 400 and b"RequestEntityTooLarge" in response.content)):
                raise PayloadTooLarge()
            if tries.retry_status(response):
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

    def __init__(self, directory: OutputDir, settings: SyncSettings, redactor: Redactor | None = None):
        self.directory = directory
        self.settings = settings
        self.redactor = redactor if redactor is not None else Redactor([settings.api_key])
        self.report = SyncReport()
        self.client = PersisterClient(settings, self.redactor, self.report)

    def run(self) -> SyncReport:
        try:
            self.create_job()
            try:
                for collection in COLLECTIONS:
                    self.upload(collection)
                self.post_events()
                self.finalize()
            except BaseException as exc:
                self.abort(exc)
                raise
        finally:
            self.client.close()
        return self.report

    @property
    def job_path(self) -> str:
        assert self.report.job_id is not None  # used only after create_job
        return f"{JOBS_PATH}/{quote(self.report.job_id, safe='')}"

    def create_job(self) -> None:
        body = {"source": "integration-managed", "integrationInstanceId": self.settings.integration_instance_id}
        answer = self.client.post(JOBS_PATH, encode(body), what=" (create the job)")
        job = _get(answer, "job")
        job_id = _get(job, "id")
        if not isinstance(job_id, (str, int)) or job_id == "":
            raise SyncError(self.redactor(f"POST {JOBS_PATH} answered without a job id: {str(answer)[:200]}"))
        self.report.job_id = str(job_id)
        self.report.status = str(_get(job, "status") or "AWAITING_UPLOADS")
        log.info("job %s created", self.report.job_id)

    def upload(self, collection: str) -> None:
        batch: list[Item] = []
        size = batch_size(collection, [])
        for obj in self.directory.objects(collection):
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
        answer = self.client.post(
            f"{self.job_path}/finalize", encode({"partialDatasets": {"types": types}}), what=" (finalize)"
        )
        self.report.status = str(_get(answer, "job", "status") or "FINALIZE_PENDING")
        log.info("job %s finalized: %s", self.report.job_id, self.report.status)

    def abort(self, cause: BaseException) -> None:
        if isinstance(cause, (KeyboardInterrupt, RunInterrupted)):
            reason = "interrupted"
        else:
            reason = str(cause) or type(cause).__name__
        reason = self.redactor(f"etl sync failed: {reason}")[:1000]
        try:
            answer = self.client.post(f"{self.job_path}/abort", encode({"reason": reason}), what=" (abort)", attempts=3)
            self.report.status = str(_get(answer, "job", "status") or "ABORTED")
        except (EtlError, requests.RequestException) as exc:
            self.report.status = "ABORT_FAILED"
            log.error("could not abort job %s: %s", self.report.job_id, self.redactor(str(exc)))


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
    """Upload the output directory ``root`` as one synchronization job. Raises
    :class:`SyncInputError` before any request, :class:`SyncError` (the job, if created, was
    aborted; the message says how far it got) or :class:`RunInterrupted`."""
    check_settings(settings)
    try:
        directory = OutputDir.open(root)
    except OutputDirError as exc:
        raise SyncInputError(str(exc)) from None
    synchronizer = Synchronizer(directory, settings, redactor)
    try:
        return synchronizer.run()
    except KeyboardInterrupt:
        raise RunInterrupted(_failed("interrupted", synchronizer.report)) from None
    except OutputDirError as exc:  # a graph file that cannot be read: the job was aborted
        raise SyncError(_failed(str(exc), synchronizer.report)) from None
    except EtlError as exc:
        exc.args = (_failed(str(exc), synchronizer.report),)
        raise


def _failed(message: str, report: SyncReport) -> str:
    if report.job_id is None:
        return f"{message} (no job was created)"
    done = f"{report.uploaded['entities']} entities and {report.uploaded['relationships']} relationships uploaded"
    if report.status == "ABORT_FAILED":
        return f"{message}; job {report.job_id} could NOT be aborted ({done}): abort it in JupiterOne"
    return f"{message}; job {report.job_id} aborted ({done}, nothing finalized)"
