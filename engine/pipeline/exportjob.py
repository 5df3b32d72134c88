"""Asynchronous export jobs (a step's ``export``): start, poll until ready, download the files.

1. **Start.** The step's request (a POST, usually) starts the job; ``job_id`` (JMESPath on its
   body, or ``{header: Location}``) is the job's id.
2. **Poll.** The ``status`` request (its templates see ``job.id``, ``job.start``: the start
   response's body, ``job.status``: the last status body) is made until ``ready`` is true on
   its body - or ``failed`` is, which fails the step naming the job and its last status. The
   waits between polls start at ``poll.interval`` seconds and grow by ``poll.backoff`` up to
   ``poll.max_interval``, through the HTTP clock (``engine/http/clock.py``); a job not ready
   ``poll.timeout`` seconds after it started fails the step the same way.
3. **Download.** ``files`` (JMESPath on the ready status body) gives one file or a list: URLs
   (absolute, or relative to the source's base URL), or ids/objects that the ``download``
   request template turns into a request (it sees ``file``). Files are downloaded with the
   fan-out pool (:func:`~.fanout.ordered_map`: ``--concurrency`` at a time, in order), each
   spooled to a temporary file as it arrives (``HttpClient.download``); the caller decodes them
   (``decode.py``) one at a time. Credentials follow the source's origin rules: a file on
   another origin (a pre-signed storage URL) is refused, or fetched anonymously where the
   source says ``cross_origin: anonymous`` (or is allowed with ``allowed_origins``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import ExportJobError, FetchError
from ..http import clock
from ..lang.values import Scope, is_truthy
from .build import describe
from .fanout import ordered_map
from .fetch import HttpClient, Page
from .paginate import fetch
from .plan import ExportJob, RequestSpec

log = logging.getLogger("etl.http")

SHOWN = 300  # characters of a status body shown in an error
Exchange = Callable[[Page, RequestSpec], None]  # a start or status response, for tools that watch a run


class Job:
    """One export job: its id, and the bodies of its start and last status responses."""

    def __init__(self, export: ExportJob, client: HttpClient, scope: Scope, exchange: Exchange):
        self.export, self.client, self.scope, self.exchange = export, client, scope, exchange
        self.id: Any = None
        self.start: Any = None
        self.status: Any = None
        self.polls = 0

    def variables(self, **extra: Any) -> Scope:
        job = {"id": self.id, "start": self.start, "status": self.status}
        return Scope(self.scope.root, {**self.scope.variables, "job": job, **extra}, self.scope.options)

    def read(self, value: Any, page: Page, name: str) -> Any:
        """An ``export`` expression on a response (its body; ``{header: NAME}``: its headers)."""
        try:
            return value.evaluate(Scope(page.body, {"headers": page.headers}, self.scope.options))
        except Exception as exc:  # a function given the wrong type by an odd body
            raise ExportJobError(
                f"{self.what()}: export.{name} ({value.source}) failed on {page.url}: {describe(exc)}", url=page.url
            ) from None

    def what(self) -> str:
        return "export job" if self.id is None else f"export job {json.dumps(self.id)}"

    def last_status(self) -> str:
        text = json.dumps(self.status, ensure_ascii=False, default=str)
        return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."

    # -- the three stages ------------------------------------------------------------------

    def begin(self, request: RequestSpec) -> None:
        page = fetch(self.client, request, self.scope)
        self.exchange(page, request)
        self.start = page.body
        self.id = self.read(self.export.job_id, page, "job_id")
        if self.id in (None, "", [], {}):
            shown = json.dumps(page.body, default=str)[:SHOWN]
            raise ExportJobError(
                f"{request.method} {page.url} started no export job: the job id ({self.export.job_id.source}) is "
                f"{json.dumps(self.id)} in its response: {shown}",
                url=page.url,
            )
        log.info("%s started (%s %s)", self.what(), request.method, page.url)

    def wait(self) -> Page:
        """Poll until the job is ready; its last status response."""
        export = self.export
        started = clock.monotonic()
        waited = 0.0  # what the waits asked for (the clock may be a test's, which never moves)
        delay = export.interval
        while True:
            page = fetch(self.client, export.status, self.variables())
            self.exchange(page, export.status)
            self.polls += 1
            self.status = page.body
            if export.failed is not None and is_truthy(self.read(export.failed, page, "failed")):
                raise ExportJobError(
                    f"{self.what()} failed (export.failed: {export.failed.source}); its last status "
                    f"({export.status.method} {page.url}): {self.last_status()}",
                    url=page.url,
                )
            if is_truthy(self.read(export.ready, page, "ready")):
                log.info("%s is ready after %d poll(s)", self.what(), self.polls)
                return page
            remaining = export.timeout - max(clock.monotonic() - started, waited)
            if remaining <= 0:
                raise ExportJobError(
                    f"{self.what()} was not ready after {export.timeout:g}s ({self.polls} polls; raise "
                    f"export.poll.timeout if it needs longer); its last status ({export.status.method} {page.url}): "
                    f"{self.last_status()}",
                    url=page.url,
                )
            pause = min(delay, remaining)
            log.info("%s is not ready (poll %d); next poll in %gs", self.what(), self.polls, pause)
            clock.sleep(pause)
            waited += pause
            delay = min(delay * export.backoff, export.max_interval)

    def files(self, page: Page) -> list[Any]:
        """The files the ready job names: a list (a single one is a list of one)."""
        found = self.read(self.export.files, page, "files")
        if found is None:
            raise ExportJobError(
                f"{self.what()} is ready, but export.files ({self.export.files.source}) is null in its status: "
                f"{self.last_status()}",
                url=page.url,
            )
        return found if isinstance(found, list) else [found]

    def download(self, item: Any) -> Page:
        """One file of the job, spooled (see ``HttpClient.download``)."""
        request = self.export.download
        if request is None:
            if not isinstance(item, str) or not item:
                raise ExportJobError(
                    f"{self.what()}: the file {json.dumps(item, default=str)[:80]} is not a URL; give export.download "
                    f"(a request whose templates see `file`) to fetch it"
                )
            return self.client.download("GET", item)
        return fetch(self.client, request, self.variables(file=item), spooled=True)


def export_files(
    client: HttpClient,
    request: RequestSpec,
    export: ExportJob,
    scope: Scope,
    *,
    concurrency: int,
    exchange: Exchange,
) -> Iterator[tuple[Any, Page | FetchError]]:
    """Start, wait for and download an export job: ``(file, its download or the error that
    ended it)`` for every file, in the job's order. Starting, polling, a failed job or a
    timeout raise (:class:`FetchError`, :class:`ExportJobError`): the step fails."""
    job = Job(export, client, scope, exchange)
    job.begin(request)
    ready = job.wait()
    items = job.files(ready)
    log.info("%s: %d file(s) to download", job.what(), len(items))
    yield from ordered_map(job.download, items, concurrency)
