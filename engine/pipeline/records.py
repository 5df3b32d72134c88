"""Where a step's records come from, each with its position and lineage.

One request with its pages; an export job's files; one request (with pages) per parent
entity of a fan-out (``for_each``), the children fetched by the pool and read in parent
order; one per account (``accounts``), each account's pages streamed in account order; and
a ``detail`` request per listed record, through the same ordered pool. What each fetch says
(pages lost, totals that moved, failed requests) is told to the step's result here, in the
order of the records. :class:`StepRecords` is a part of :class:`~.runner.Runner`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Generator, Iterable, Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

from ..errors import (
    AuthenticationError,
    BodyFormatError,
    FetchError,
    RecordsError,
    RequestBuildError,
)
from ..jsonio import shown
from ..lang.values import Scope, Value, literal
from .build import ROOT, Lineage, describe
from .decode import DocumentList, Documents, body_of
from .exportjob import export_files
from .extract import select_records, unmatched_selector
from .fanout import ordered_map, ordered_streams
from .fetch import AccountBase, HttpClient, Page
from .load import PathT
from .observer import Observer
from .paginate import REFUSED_STATUSES, credentials_refused, fetch, paginate
from .plan import Plan, RequestSpec, ResponseFormat, Step
from .progress import Progress
from .results import StepResult

if TYPE_CHECKING:
    import jmespath

    from .config import ResolvedConfig
    from .runner import RunOptions

log = logging.getLogger("etl.run")


class Position:
    """Where a record came from, made into text only when a message needs it."""

    __slots__ = ("step_id", "page", "url", "index")

    def __init__(self, step_id: str, page: int, url: str, index: int):
        self.step_id, self.page, self.url, self.index = step_id, page, url, index

    def __str__(self) -> str:
        return f"{self.step_id}: page {self.page} ({self.url}) record {self.index}"


class StepRecords:
    """The records of a step, from wherever its mapping says they come from."""

    plan: Plan
    config: ResolvedConfig
    options: RunOptions
    progress: Progress
    observer: Observer
    jmespath: jmespath.Options
    config_scope: Scope
    parents: dict[str, list[tuple[dict, Lineage]]]
    accepted_sources: set[str]
    selector_misses: dict[str, str | None]

    if TYPE_CHECKING:  # the rest of the runner, which this part uses

        def client(self, name: str) -> HttpClient: ...
        def request_scope(self, lineage: Lineage | None, step: Step | None = None) -> Scope: ...
        def evaluate(self, value: Value, path: PathT | Callable[[], PathT]) -> Any: ...
        def where(self, path: PathT) -> str: ...
        def step_path(self, step: Step) -> PathT: ...
        def account_base(self, source_name: str, account: Any) -> AccountBase | FetchError | None: ...
        def redact_secret_accounts(self, expression: Value, accounts: list) -> None: ...

    def units(self, step: Step) -> tuple[int, Iterator[Lineage]] | None:
        """What a step runs once for, with how many there are: one lineage per parent entity
        of a fan-out (those accepted before the step started), or per account; None for a step
        that runs once."""
        if step.accounts is not None and step.accounts.items is not None:
            accounts = self.evaluate(step.accounts.items, lambda: (*self.step_path(step), "accounts"))
            listed = [] if accounts is None else accounts if isinstance(accounts, list) else [accounts]
            self.redact_secret_accounts(step.accounts.items, listed)
            return len(listed), (Lineage(account=account) for account in listed)
        entity_type = step.fans_out_over
        if entity_type is None or step.request is None:
            return None
        entries = self.parents[entity_type]
        count = len(entries)  # entities the step itself builds are not its parents
        if step.for_each is not None:
            return count, (lineage.below(entity_type, entity) for entity, lineage in islice(entries, count))
        return count, (Lineage(account=entity) for entity, _ in islice(entries, count))

    def records(
        self, step: Step, result: StepResult, units: tuple[int, Iterator[Lineage]] | None
    ) -> Generator[tuple[Position | str, Any, Lineage]]:
        """Every ``(position, record, lineage)`` of a step; ``position`` names it in messages,
        ``lineage`` says what it was fetched for (:class:`~.build.Lineage`).

        A step without a request has one empty record (its entities come from config). A
        fan-out step (``for_each``) makes one request per parent entity, and a step with
        ``accounts`` its requests once per account, ``concurrency`` at a time, and yields the
        records in parent (account) order, so the output never depends on timing. A failed
        child request fails the step but not its siblings.
        """
        request = step.request
        if request is None:
            yield step.id, {}, ROOT
            return
        client = self.client(request.source)
        if step.export is not None:
            yield from self.export_records(step, result, client, request)
            return
        if units is None and step.response is not None and step.pagination.kind == "none":
            page = fetch(client, request, self.request_scope(None, step), spooled=True)
            yield from self.file_records(step, result, page, 1, request)
            return
        if units is None:
            pages = paginate(
                client,
                request,
                step.pagination,
                self.request_scope(None, step) if step.incremental is not None else self.config_scope,
                self.selector(step),
                lambda message: self.truncated(step, result, message),
                prefetch=self.options.prefetch,
                warn=lambda message: self.total_changed(step, result, message),
                total_known=self.progress.total_known if self.progress.enabled else None,
                response=step.response,
            )
            yield from self.page_records(step, result, pages, ROOT)
        else:
            yield from self.unit_records(step, result, client, units[1])

    def selector(self, step: Step) -> Callable[[Any], list]:
        """The step's ``records`` selector on a page's body (each document of a decoded page)."""

        def select(body: Any) -> list:
            if isinstance(body, DocumentList):  # a decoded page of many documents: records of each
                return [r for document in body for r in select_records(step.records, document, self.jmespath)]
            return select_records(step.records, body, self.jmespath)

        return select

    def unit_records(
        self, step: Step, result: StepResult, client: HttpClient, lineages: Iterator[Lineage]
    ) -> Iterator[tuple[Position, Any, Lineage]]:
        """The records of a step that fetches once per parent entity (``for_each``) or per
        account: each unit's pages stream from the pool (``concurrency`` units at once, each a
        few pages ahead), read in unit order, so the output never depends on timing and a unit
        of any size is never held whole. What each unit's pagination had to say is told in
        that order too; a unit that fails fails the step, not the units after it."""
        request = step.request
        assert request is not None  # fan-out steps and steps with accounts have one (compile checks it)
        select = self.selector(step)

        def events(unit: tuple[Lineage, AccountBase | FetchError | None]) -> Iterator[tuple[bool | None, Any]]:
            """A unit's pages ``(None, (page, records))``, and what its pagination had to say
            ``(partial?, message)``, in order; the error that ends them is raised."""
            lineage, base = unit
            if isinstance(base, FetchError):
                raise base
            notes: list[tuple[bool, str]] = []
            for page in paginate(
                client,
                request,
                step.pagination,
                self.request_scope(lineage, step),
                select,
                lambda message: notes.append((True, message)),
                warn=lambda message: notes.append((False, message)),
                response=step.response,
                account=base,
            ):
                yield from notes
                notes.clear()
                yield None, page
            yield from notes

        units = ((lineage, self.account_base(request.source, lineage.account)) for lineage in lineages)
        for (lineage, _), stream in ordered_streams(events, units, self.options.concurrency):
            context = f"for {step.for_each or 'account'} {lineage.unit}: "
            try:
                yield from self.page_records(step, result, self.told(step, result, stream, context), lineage)
            except FetchError as exc:
                self.request_failed(step, result, exc, context)
            self.progress.parent_done()

    def told(
        self, step: Step, result: StepResult, events: Iterator[tuple[bool | None, Any]], context: str
    ) -> Iterator[tuple[Page, list]]:
        """The pages of a stream of :meth:`unit_records`; its notes are told as they come."""
        for lost, value in events:
            if lost is None:
                yield value
            else:
                (self.truncated if lost else self.total_changed)(step, result, context + value)

    def detailed(
        self, step: Step, result: StepResult, records: Generator[tuple[Position | str, Any, Lineage]]
    ) -> Generator[tuple[Position | str, Any, Lineage]]:
        """The records of a step with ``detail``: each listed record's detail request made by
        the pool (``concurrency`` at a time), the detailed records in the listed order. A
        detail that fails follows the detail's status rules; the other records are kept."""
        detail = step.detail
        assert detail is not None
        client = self.client(detail.request.source)

        def request(item: tuple[Position | str, Any, Lineage]) -> Page:
            _, record, lineage = item
            base = self.account_base(detail.request.source, lineage.account)
            if isinstance(base, FetchError):
                raise base
            scope = self.request_scope(lineage, step)
            scope.variables["record"] = record
            return fetch(client, detail.request, scope, account=base)

        try:
            for (position, record, lineage), outcome in ordered_map(request, records, self.options.concurrency):
                if isinstance(outcome, FetchError):
                    self.detail_failed(step, result, outcome, position)
                    continue
                self.accepted_sources.add(detail.request.source)
                self.observer.detail(step, outcome, position)
                found = self.detail_record(step, result, record, outcome, position)
                if found is not _NO_RECORD:
                    yield position, found, lineage
        finally:
            records.close()

    def detail_record(self, step: Step, result: StepResult, listed: Any, page: Page, position: Position | str) -> Any:
        """The record a detail response makes of ``listed`` (``detail.record``; merged into
        it with ``merge``), or ``_NO_RECORD`` when it makes none (a warning)."""
        detail = step.detail
        assert detail is not None
        try:
            found = detail.record.evaluate(Scope(page.body, {}, self.jmespath))
        except Exception as exc:  # a function given the wrong type by an odd body
            found, why = None, f"detail.record ({detail.record.source}) failed: {describe(exc)}"
        else:
            why = f"the detail response ({page.url}) has no record at {detail.record.source!r}"
        if found is not None and detail.merge and not (isinstance(found, dict) and isinstance(listed, dict)):
            found, why = None, f"detail.merge needs two objects, got {_kind(listed)} and {_kind(found)}"
        if found is None:
            self.unreadable(step, result, f"{position}: {why}; record skipped")
            return _NO_RECORD
        return {**listed, **found} if detail.merge else found

    def detail_failed(self, step: Step, result: StepResult, error: FetchError, position: Position | str) -> None:
        """A detail request that failed, by the detail's status rules (see :meth:`request_failed`)."""
        detail = step.detail
        assert detail is not None
        if isinstance(error, RequestBuildError):
            where = self.where((*self.step_path(step), "detail", *error.field.split(".")))
            result.fail(f"{position}: detail: {error} (at {where})")
            return
        rules = dataclasses.replace(step, request=detail.request, on_status=detail.on_status)
        self.request_failed(rules, result, error, f"{position}: detail: ")

    def export_records(
        self, step: Step, result: StepResult, client: HttpClient, request: RequestSpec
    ) -> Iterator[tuple[Position, Any, Lineage]]:
        """The records of an export job's files, file after file (``exportjob.py``). A file that
        cannot be downloaded or read fails the step; the other files are still read."""
        export = step.export
        assert export is not None

        def exchange(page: Page, spec: RequestSpec) -> None:  # the start and status responses
            self.accepted_sources.add(spec.source)
            self.observer.page(dataclasses.replace(step, request=spec), page, [], ROOT)

        files = export_files(
            client,
            request,
            export,
            self.request_scope(None, step),
            concurrency=self.options.concurrency,
            exchange=exchange,
        )
        download = export.download or RequestSpec(request.source, "GET", literal(""))
        for number, (item, outcome) in enumerate(files, start=1):
            if isinstance(outcome, FetchError):
                self.request_failed(step, result, outcome, f"export file {number} ({shown(item)}): ")
                continue
            try:
                yield from self.file_records(step, result, outcome, number, download)
            except FetchError as exc:
                self.request_failed(step, result, exc, f"export file {number} ({shown(item)}): ")

    def file_records(
        self, step: Step, result: StepResult, page: Page, number: int, request: RequestSpec
    ) -> Iterator[tuple[Position, Any, Lineage]]:
        """The records of one downloaded file, decoded a document at a time (``decode.py``):
        the step's ``records`` applies to each document. A row or record that cannot be read
        is a warning (the step's types become partial); a file that cannot be read at all is a
        :class:`FetchError`."""
        assert page.file is not None
        self.accepted_sources.add(request.source)
        result.pages += 1
        count = 0
        try:
            body = body_of(page, self.client(request.source).source.max_response_bytes)
            documents = Documents(
                body, step.response or ResponseFormat(), lambda m: self.unreadable(step, result, f"{step.id}: {m}")
            )
            for document in documents:
                records = select_records(step.records, document, self.jmespath)
                if not records and step.id not in self.selector_misses:
                    miss = unmatched_selector(step.records, document, self.jmespath)
                    if miss is not None:
                        self.selector_misses[step.id] = miss
                elif records:
                    self.selector_misses[step.id] = None
                for record in records:
                    count += 1
                    yield Position(step.id, number, page.url, count - 1), record, ROOT
        except (BodyFormatError, RecordsError) as exc:
            raise FetchError(f"{request.method} {page.url}: {exc}", status=page.status, url=page.url) from None
        finally:
            page.file.close()
            if type(self.observer) is not Observer:
                self.observer.page(dataclasses.replace(step, request=request), page, [None] * count, ROOT)

    @staticmethod
    def unreadable(step: Step, result: StepResult, message: str) -> None:
        """A row or record of a body that could not be read: skipped, the step's types partial."""
        result.problem(message)
        result.skipped_types.update(e.type for e in step.entities)

    @staticmethod
    def truncated(step: Step, result: StepResult, message: str) -> None:
        """Pagination stopped before the API's last page (max_pages, or a page without records
        while the declared total says more exist), or the total shrank: the data is incomplete."""
        result.incomplete = True
        result.warn(f"{message}; the step's types are marked partial")

    @staticmethod
    def total_changed(step: Step, result: StepResult, message: str) -> None:
        """The API's total grew during the run: told, the data is not marked partial."""
        result.warn(message)

    def request_failed(self, step: Step, result: StepResult, error: FetchError, context: str = "") -> None:
        """Apply the step's status rules: skip quietly, warn and mark the step's types partial,
        or fail the step (its other requests still run). Refused credentials end the run. A
        request template that failed is named with its place in the mapping."""
        if isinstance(error, AuthenticationError):
            raise error
        if self.means_bad_credentials(step, error):
            raise credentials_refused(error) from None
        if isinstance(error, RequestBuildError):
            where = self.where((*self.step_path(step), *error.field.split(".")))
            result.fail(f"{context}{error} (at {where})")
            return
        action = dict(step.on_status).get(error.status, "fail") if error.status else "fail"
        if action == "skip":
            log.info("step %s: %s%s (skipped: on_status %s)", step.id, context, error, error.status)
        elif action == "partial":
            result.incomplete = True
            result.warn(f"{context}{error} - no data from this request; the step's types are marked partial")
        else:
            result.fail(f"{context}{error}")

    def means_bad_credentials(self, step: Step, error: FetchError) -> bool:
        """A 401 or 403 before the source ever answered (its first request, when it has no
        ``validate`` request) means the credentials are wrong - unless the step has a rule of
        its own for that status (``on_status``), which it keeps."""
        assert step.request is not None  # only requests fail
        return (
            error.status in REFUSED_STATUSES
            and error.status not in dict(step.on_status)
            and step.request.source not in self.accepted_sources
        )

    def page_records(
        self, step: Step, result: StepResult, pages: Iterable[tuple[Page, list]], lineage: Lineage
    ) -> Iterator[tuple[Position, Any, Lineage]]:
        """The records of pages fetched for ``lineage``, each with its position."""
        for number, (page, records) in enumerate(pages, start=1):
            assert step.request is not None  # pages come from requests
            self.accepted_sources.add(step.request.source)
            self.note_selector(step, page, records)
            result.pages += 1
            for note in page.notes:  # rows or records of a decoded page that could not be read
                self.unreadable(step, result, f"{step.id}: {note}")
            self.observer.page(step, page, records, lineage)
            for index, record in enumerate(records):
                yield Position(step.id, number, page.url, index), record, lineage

    def note_selector(self, step: Step, page: Page, records: list) -> None:
        """Remember why the step's ``records`` selector found nothing on a page (the first such
        page), and whether it ever found records: see :meth:`selector_warning`."""
        if records:
            self.selector_misses[step.id] = None
        elif step.id not in self.selector_misses:
            miss = unmatched_selector(step.records, page.body, self.jmespath)
            if miss is not None:
                self.selector_misses[step.id] = miss

    def selector_warning(self, step: Step, result: StepResult) -> None:
        """Once per step: its ``records`` selector never found a record, and some page had other
        keys (or was a list). A selector that found records on other pages is right: an API may
        leave its list out of an empty page."""
        miss = self.selector_misses.get(step.id)
        if miss is not None:
            result.warn(miss, cause=True)  # a truncation it caused is told after it


_NO_RECORD: Any = object()  # a detail response that made no record


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
