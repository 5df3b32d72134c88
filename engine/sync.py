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

import ipaddress
import json
import logging
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote, urlsplit

import requests

from . import fetch
from .config import MIN_SECRET_LENGTH, Redactor, read_dotenv
from .errors import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, ConfigError, EtlError, RunInterrupted

log = logging.getLogger("etl.sync")

DEFAULT_API_BASE_URL = "https://api.us.jupiterone.io"
JOBS_PATH = "/persister/synchronization/jobs"
MAX_BATCH_BYTES = 5_000_000
TRUNCATED = "TRUNCATED"
COLLECTIONS = ("entities", "relationships")
SINGULAR = {"entities": "entity", "relationships": "relationship"}
INGESTION_LIMIT_EVENT = "warn_ingestion_limit_encountered"
MAX_SKIP_EVENTS = 100  # one warn event per skipped object, up to this many; then one that counts the rest


class SyncError(EtlError):
    """The synchronization failed; the job (if one was created) was aborted."""


class SyncInputError(EtlError):
    """The directory is not an etl/JupiterOne output directory, or a setting is unusable."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class SyncSettings:
    account: str
    api_key: str
    integration_instance_id: str
    api_base_url: str = DEFAULT_API_BASE_URL
    max_batch_bytes: int = MAX_BATCH_BYTES
    max_attempts: int = 5  # per request, for 429, 5xx and dropped connections
    initial_delay: float = 1.0  # seconds; exponential backoff with jitter, capped at max_delay
    max_delay: float = 30.0
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
# Reading the output directory


@dataclass(frozen=True)
class OutputDirectory:
    root: Path
    steps: tuple[dict, ...]  # summary.json's integrationStepResults
    partial_types: tuple[str, ...]

    @classmethod
    def open(cls, root: Path) -> "OutputDirectory":
        summary_path = root / "summary.json"
        if not summary_path.is_file():
            raise SyncInputError(f"{root} is not an output directory of 'etl run' (or 'j1-integration collect'): "
                                 f"it has no summary.json")
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SyncInputError(f"{summary_path}: cannot read it as JSON: {exc}") from None
        types = _get(summary, "metadata", "partialDatasets", "types")
        steps = summary.get("integrationStepResults", []) if isinstance(summary, dict) else None
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types) \
                or not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
            raise SyncInputError(f"{summary_path}: expected integrationStepResults (a list) and "
                                 f"metadata.partialDatasets.types (a list of strings)")
        return cls(root, tuple(steps), tuple(types))

    def files(self, collection: str) -> list[Path]:
        """The graph files of one collection: steps in summary.json's order, then any other, by name."""
        graph = self.root / "graph"
        if not graph.is_dir():
            return []
        order = {str(s.get("id")): n for n, s in enumerate(self.steps)}
        step_dirs = sorted((p for p in graph.iterdir() if p.is_dir()),
                           key=lambda p: (order.get(p.name, len(order)), p.name))
        return [f for d in step_dirs for f in sorted((d / collection).glob("*.json"))]

    def objects(self, collection: str) -> Iterator[dict]:
        """Every object of a collection, reading one file at a time."""
        for path in self.files(collection):
            yield from read_graph_file(path, collection)


def read_graph_file(path: Path, collection: str) -> list[dict]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        raise SyncError(f"{path}: cannot read it as JSON ({type(exc).__name__}); is it compressed or cut short?") \
            from None
    objects = data.get(collection) if isinstance(data, dict) else None
    if not isinstance(objects, list):
        raise SyncError(f"{path}: expected {{\"{collection}\": [...]}}")
    for number, obj in enumerate(objects):
        if not isinstance(obj, dict) or not isinstance(obj.get("_key"), str) or not isinstance(obj.get("_type"), str):
            raise SyncError(f"{path}: {collection}[{number}] is not a graph object with a string _key and _type")
    return objects


def _get(data: Any, *path: str) -> Any:
    for name in path:
        if not isinstance(data, dict):
            return None
        data = data.get(name)
    return data


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
        sized = [(len(encode(e["rawData"])), e) for e in entries
                 if isinstance(e, dict) and "rawData" in e and e["rawData"] != TRUNCATED]
        return [(size, e) for size, e in sized if size > _TRUNCATED_SIZE]  # truncating the rest gains nothing


def batch_body(collection: str, items: list[Item]) -> bytes:
    return b'{"' + collection.encode() + b'":[' + b",".join(i.data for i in items) + b"]}"


def batch_size(collection: str, items: list[Item]) -> int:
    return len(collection) + 7 + sum(len(i.data) for i in items) + max(len(items) - 1, 0)


def truncate_raw_data(items: list[Item], target: int, size: int) -> int:
    """Replace the largest ``_rawData`` entries of ``items`` with 'TRUNCATED', largest first,
    until the batch is at most ``target`` bytes (``size`` is its current size) or none is
    left. Returns how many objects changed."""
    entries = sorted(((s, n, e, item) for n, item in enumerate(items) for s, e in item.raw_entries()),
                     key=lambda t: (-t[0], t[1]))
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


class _TooLarge(Exception):
    """The API answered 413 (or RequestEntityTooLargeException) to an upload."""


class PersisterClient:
    """HTTP to the synchronization API: headers, retries with backoff, redacted errors."""

    def __init__(self, settings: SyncSettings, redactor: Redactor, report: SyncReport):
        self.settings = settings
        self.redactor = redactor
        self.report = report
        self.base_url = settings.api_base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers.update({
            "User-Agent": fetch.USER_AGENT,
            "Accept": "application/json",
            "Content-Type": "application/json",
            "JupiterOne-Account": settings.account,
            "Authorization": f"Bearer {settings.api_key}",
        })

    def close(self) -> None:
        self.session.close()

    def post(self, path: str, body: bytes, *, headers: dict[str, str] | None = None, what: str = "",
             attempts: int | None = None, allow_too_large: bool = False) -> Any:
        """POST ``body`` (JSON bytes); the decoded JSON answer (None when empty)."""
        url = self.base_url + path
        shown = self.redactor(f"POST {path}")
        max_attempts = attempts or self.settings.max_attempts
        attempt = 0
        while True:
            attempt += 1
            try:
                self.report.requests += 1
                response = self.session.post(url, data=body, headers=headers, timeout=self.settings.timeout)
            except fetch.RETRYABLE_ERRORS as exc:
                reason = fetch._connection_reason(exc)
                if attempt >= max_attempts:
                    raise SyncError(self.redactor(f"{shown} failed after {attempt} attempts: {reason}")) from None
                self._wait(attempt, None, f"{shown}{what}: {reason}", max_attempts)
                continue
            except Exception as exc:
                if not fetch.cassette_miss(exc):
                    raise
                raise SyncError(f"{shown}: the cassette holds no response for this request (replay only); "
                                f"re-record it, or check the directory and options") from None
            status = response.status_code
            log.debug("%s%s -> %d (attempt %d, %d bytes)", shown, what, status, attempt, len(body))
            if allow_too_large and (status == 413 or (status == 400 and b"RequestEntityTooLarge" in response.content)):
                raise _TooLarge()
            if (status == 429 or status >= 500) and attempt < max_attempts:
                delay = fetch.retry_after(response.headers.get("Retry-After"))
                if delay is not None and delay > fetch.MAX_RETRY_AFTER:
                    raise SyncError(self._failure(shown, response, f" (Retry-After asks for {delay:.0f}s; "
                                                                  f"giving up)"))
                self._wait(attempt, delay, f"{shown}{what} -> {status}", max_attempts)
                continue
            if status >= 400:
                raise SyncError(self._failure(shown, response, f" (after {attempt} attempts)" if attempt > 1 else ""))
            if not response.content.strip():
                return None
            try:
                return json.loads(response.content)
            except (ValueError, UnicodeDecodeError, RecursionError):
                raise SyncError(self.redactor(f"{shown} returned HTTP {status} with a body that is not JSON: "
                                              f"{fetch._snippet(response)}")) from None

    def _wait(self, attempt: int, delay: float | None, context: str, max_attempts: int) -> None:
        if delay is None:
            delay = fetch.backoff_delay(self.settings.initial_delay, self.settings.max_delay, attempt)
        log.info("%s; retry %d/%d in %.1fs", self.redactor(context), attempt, max_attempts - 1, delay)
        fetch.sleep(delay)  # through the module, so tests can replace the clock

    def _failure(self, shown: str, response: requests.Response, suffix: str) -> str:
        text = f"{shown} failed: HTTP {response.status_code} {response.reason or ''}".rstrip()
        detail = fetch._snippet(response)
        if detail:
            text += f": {detail}"
        return self.redactor(text + suffix)


# ----------------------------------------------------------------------------------------
# The synchronization


class Synchronizer:
    """One synchronization job: create, upload, (events), finalize - or abort."""

    def __init__(self, directory: OutputDirectory, settings: SyncSettings, redactor: Redactor | None = None):
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
            log.warning("%s %s is larger than the %d-byte batch limit; its raw data was replaced with '%s'",
                        SINGULAR[collection], self.redactor(item.obj["_key"]), limit, TRUNCATED)
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
                self.client.post(f"{self.job_path}/{collection}", body, what=what, allow_too_large=True,
                                 headers={"JupiterOne-Correlation-Id": correlation_id})
            except _TooLarge:
                changed = truncate_raw_data(batch, len(body) // 2, len(body))
                if changed:
                    self.report.truncated += changed
                    log.warning("POST %s/%s: HTTP 413 for a batch of %d bytes; replaced the raw data of %d "
                                "object(s) with '%s' and retrying", self.job_path, collection, len(body), changed,
                                TRUNCATED)
                    pending.appendleft((batch, correlation_id))
                elif len(batch) > 1:
                    half = len(batch) // 2
                    log.warning("POST %s/%s: HTTP 413 for %d objects without raw data; splitting the batch",
                                self.job_path, collection, len(batch))
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
        log.warning("skipped %s %s (%s): %s; %s is sent as a partial type", SINGULAR[collection], skipped.key,
                    skipped.type, reason, skipped.type)

    def events(self) -> list[dict]:
        events = []
        if self.settings.step_events:
            events += [step_event(step) for step in self.directory.steps]
        for skip in self.report.skipped[:MAX_SKIP_EVENTS]:
            events.append({"name": INGESTION_LIMIT_EVENT, "level": "warn",
                           "description": f"Skipped {SINGULAR[skip.collection]} {skip.key} (_type {skip.type}): "
                                          f"{skip.reason}. {skip.type} is marked partial."})
        if len(self.report.skipped) > MAX_SKIP_EVENTS:
            events.append({"name": INGESTION_LIMIT_EVENT, "level": "warn",
                           "description": f"{len(self.report.skipped) - MAX_SKIP_EVENTS} more objects were skipped "
                                          f"as too large."})
        return events

    def post_events(self) -> None:
        events = self.events()
        if events:
            self.client.post(f"{self.job_path}/events", self.redactor.bytes(encode({"events": events})),
                             what=f" ({len(events)} events)")

    def finalize(self) -> None:
        types = sorted(set(self.directory.partial_types) | {s.type for s in self.report.skipped})
        self.report.partial_types = types
        answer = self.client.post(f"{self.job_path}/finalize", encode({"partialDatasets": {"types": types}}),
                                  what=" (finalize)")
        self.report.status = str(_get(answer, "job", "status") or "FINALIZE_PENDING")
        log.info("job %s finalized: %s", self.report.job_id, self.report.status)

    def abort(self, cause: BaseException) -> None:
        if isinstance(cause, (KeyboardInterrupt, RunInterrupted)):
            reason = "interrupted"
        else:
            reason = str(cause) or type(cause).__name__
        reason = self.redactor(f"etl sync failed: {reason}")[:1000]
        try:
            answer = self.client.post(f"{self.job_path}/abort", encode({"reason": reason}), what=" (abort)",
                                      attempts=3)
            self.report.status = str(_get(answer, "job", "status") or "ABORTED")
        except (EtlError, requests.RequestException) as exc:
            self.report.status = "ABORT_FAILED"
            log.error("could not abort job %s: %s", self.report.job_id, self.redactor(str(exc)))


def step_event(step: dict) -> dict:
    """A JupiterOne job-log event for one step of summary.json (as the SDK's step_end / step_failure)."""
    name = f'"{step.get("name") or step.get("id")}" ({step.get("id")})'
    counts = step.get("encounteredTypeCounts") or {}
    found = ", ".join(f"{n} {t}" for t, n in counts.items()) if isinstance(counts, dict) else ""
    found = f": {found}" if found else ""
    status = step.get("status")
    if status == "failure":
        return {"name": "step_failure", "level": "error",
                "description": f"Step {name} failed to complete{found}."}
    if status == "success":
        return {"name": "step_end", "level": "info", "description": f"Completed step {name}{found}."}
    return {"name": "step_end", "level": "warn", "description": f"Step {name} ended with status {status}{found}."}


# ----------------------------------------------------------------------------------------
# Entry point


ACCOUNT_ENV = "JUPITERONE_ACCOUNT"
API_KEY_ENV = "JUPITERONE_API_KEY"


def resolve_credentials(account: str | None, api_key: str | None, dotenv: Path | None = Path(".env")) -> tuple[str, str]:
    """The account and API key: given (from an option or the environment), else from ``.env``."""
    values = read_dotenv(dotenv) if dotenv else {}
    account = account or values.get(ACCOUNT_ENV) or ""
    api_key = api_key or values.get(API_KEY_ENV) or ""
    if not account.strip():
        raise ConfigError(f"missing the JupiterOne account: pass --account ID or set {ACCOUNT_ENV} "
                          f"(or put it in .env)")
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
        raise SyncInputError(f"refusing to send the API key over plain HTTP to {parts.hostname}; use https:// "
                             f"(plain http is allowed only to a loopback address, for local testing)")
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
    directory = OutputDirectory.open(root)
    synchronizer = Synchronizer(directory, settings, redactor)
    try:
        return synchronizer.run()
    except KeyboardInterrupt:
        raise RunInterrupted(_failed("interrupted", synchronizer.report)) from None
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
