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

import logging
from contextlib import ExitStack
from pathlib import Path

from ...errors import EtlError, OutputDirError, RunInterrupted, SyncError, SyncInputError
from ...output import OutputDir
from ...secrets import Redactor
from .batches import Item, batch_body, batch_size, encode, truncate_raw_data
from .client import PersisterClient
from .job import Synchronizer
from .settings import (
    ACCOUNT_ENV,
    API_KEY_ENV,
    DEFAULT_API_BASE_URL,
    MAX_BATCH_BYTES,
    SyncReport,
    SyncSettings,
    check_settings,
    resolve_credentials,
)
from .snapshot import Snapshot, hold_shared_lock

log = logging.getLogger("etl.sync")


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


__all__ = [
    "ACCOUNT_ENV",
    "API_KEY_ENV",
    "DEFAULT_API_BASE_URL",
    "MAX_BATCH_BYTES",
    "Item",
    "PersisterClient",
    "SyncError",
    "SyncReport",
    "SyncSettings",
    "batch_body",
    "batch_size",
    "encode",
    "resolve_credentials",
    "synchronize",
    "truncate_raw_data",
]
