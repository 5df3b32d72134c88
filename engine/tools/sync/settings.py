"""What ``etl sync`` is told and what it reports: settings, credentials, the report."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ...errors import (
    EXIT_OK,
    EXIT_PARTIAL,
    ConfigError,
    SyncInputError,
)
from ...http.retry import RetryPolicy
from ...output import COLLECTIONS
from ...pipeline.config import read_dotenv
from ...secrets import MIN_SECRET_LENGTH

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
