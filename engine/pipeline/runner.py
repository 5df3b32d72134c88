"""The run of one compiled plan, end to end:

validate credentials -> for each step in dependency order: fetch pages -> extract records
-> build entities/relationships -> check the graph -> write batches -> write summary.json
-> replace the output directory.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import jinja2

from ..errors import (
    AuthenticationError,
    BodyFormatError,
    EtlError,
    EvaluationError,
    FetchError,
    MappingError,
    Problem,
    RecordsError,
    RequestBuildError,
)
from ..http.origins import origin_of, url_problem
from ..lang.functions import jmespath_options
from ..lang.values import Scope, Value, is_truthy, literal
from .build import ROOT, Built, GraphBuilder, Lineage, account_label, describe
from .check import GraphChecker, Verdict
from .config import ResolvedConfig
from .decode import DocumentList, Documents, body_of
from .exportjob import export_files
from .extract import keep_record, select_records, unmatched_selector
from .fanout import ordered_map, ordered_streams
from .fetch import HttpClient, Page
from .load import LoadedMapping, PathT, format_path, load_mapping
from .paginate import (
    REFUSED_STATUSES,
    AccountBase,
    credentials_refused,
    fetch,
    paginate,
    validate_credentials,
)
from .plan import Plan, RequestSpec, ResponseFormat, Source, Step
from .progress import Progress
from .results import DISABLED, PARTIAL_DEPENDENCY, SKIPPED_DEPENDENCY, SUCCESS, RunResult, StepResult
from .state import FileState, MarkTracker, StateOptions, advanced, template_state, usable
from .write import GraphWriter, StagedOutput

log = logging.getLogger("etl.run")

DEFAULT_CONCURRENCY = 8


class Position:
    """Where a record came from, made into text only when a message needs it."""

    __slots__ = ("step_id", "page", "url", "index")

    def __init__(self, step_id: str, page: int, url: str, index: int):
        self.step_id, self.page, self.url, self.index = step_id, page, url, index

    def __str__(self) -> str:
        return f"{self.step_id}: page {self.page} ({self.url}) record {self.index}"


class Observer:
    """Hooks for tools that watch a run (preview, coverage, explain). The default does nothing."""

    def step_started(self, step: Step, builder: GraphBuilder) -> None:
        """``step`` starts; ``builder`` builds its records (a tool may ask it again, before the
        next record, which rule built what: it sees the run as the record did)."""

    def page(self, step: Step, page, records: list, lineage: Lineage) -> None:
        """A page was fetched for ``step`` (``lineage``: the parent entity or the account it
        was fetched for, see :meth:`~.build.Lineage.describe`)."""

    def detail(self, step: Step, page, position: Position | str) -> None:
        """The detail request of the record at ``position`` (``step.detail``) was answered
        with ``page``."""

    def record(self, step: Step, position: Position | str, record: Any, built: Built, lineage: Lineage = ROOT) -> None:
        """``record`` was turned into ``built`` (entities, relationships, warnings), before any
        of it was checked or written. ``position`` is the step's id alone for the one record of
        a step without a request; ``lineage`` is where the record was fetched (its fan-out
        parent, ancestors and account): pass it to ``GraphBuilder.build`` to build it again."""


@dataclass(frozen=True)
class RunOptions:
    output: Path = Path(".j1-integration")
    base_urls: tuple[tuple[str | None, str], ...] = ()  # (source name or None for the default, url)
    steps: tuple[str, ...] = ()
    pretty: bool = False
    concurrency: int = DEFAULT_CONCURRENCY  # parallel child requests of a fan-out step
    now: int | None = None  # the run's clock (epoch ms); None = the real time
    record_limit: int | None = None  # stop each selected step after this many records (previews)
    prefetch: bool = True  # request a step's next page while building the current one (not with cassettes)
    bundled_cassette: bool = False  # the cassette replayed is the mapping's own (offline section)
    state: StateOptions = StateOptions()  # incremental state: where it is read and written, --full-refresh


def now_ms() -> int:
    return int(time.time() * 1000)


class Runner:
    def __init__(
        self,
        plan: Plan,
        config: ResolvedConfig,
        options: RunOptions,
        progress: Progress | None = None,
        observer: Observer | None = None,
    ):
        self.plan = plan
        self.config = config
        self.options = options
        self.progress = progress or Progress()
        self.observer = observer or Observer()
        self.now = options.now if options.now is not None else now_ms()
        self.jmespath = jmespath_options(dict(config.values), self.now)
        self.config_scope = self.request_scope(None)
        self.clients: dict[str, HttpClient] = {}
        # entity type -> (entity without _rawData, the lineage it was built in), for fan-outs
        self.parents: dict[str, list[tuple[dict, Lineage]]] = {t: [] for t in plan.parent_types}
        self.account_bases: dict[tuple[str, int], tuple[Any, AccountBase | FetchError]] = {}
        self.strict_types = {e.type: True for s in plan.steps for e in s.entities if e.duplicates == "strict"}
        self.loaded: LoadedMapping | None | bool = False  # the mapping file, read again for an error's position
        self.accepted_sources: set[str] = set()  # sources that have answered a request: credentials accepted
        self.selector_misses: dict[str, str | None] = {}  # step id -> why its records selector found nothing
        self.saved_state: dict[str, dict] = {}  # step id -> the incremental state the last run saved
        self.marks: dict[str, MarkTracker] = {}  # step id -> the high-water mark of this run

    # -- setup ---------------------------------------------------------------------------

    def request_scope(self, lineage: Lineage | None, step: Step | None = None) -> Scope:
        """What the templates of a step's requests see (``lineage``: where they fetch for)."""
        lineage = lineage or ROOT
        variables = {
            "config": self.config.values,
            "parent": lineage.parent,
            "ancestors": lineage.ancestors,
            "account": lineage.account,
            "now": self.now,
        }
        if step is not None and step.incremental is not None:
            variables["state"] = template_state(usable(step, self.saved_state.get(step.id)))
        return Scope({}, variables, self.jmespath)

    def base_url_override(self, source: Source) -> str | None:
        """``--base-url`` for ``source`` (for every account too), if given."""
        for name, url in self.options.base_urls:
            if name == source.name or (name is None and source is self.plan.default_source):
                return url
        return None

    def base_url(self, source: Source) -> str:
        """The source's own base URL: its requests without an account (``validate``, steps
        without accounts) go there, and credentials go to its origin (and allowed_origins).
        A base URL that reads ``account`` is rendered with the account left empty; when that
        is not a URL, the source has none of its own (see :meth:`account_base`)."""
        override = self.base_url_override(source)
        if override is not None:
            return override
        if not source.account_base_url:
            return self.evaluate(source.base_url, ("sources", source.name, "base_url"))
        home = self.without_account(source)
        if home is not None:
            return home
        path = ("sources", source.name, "base_url")
        if source.validate is not None:
            raise self.mapping_error(
                path,
                "without an account it is not a URL, and the source's validate request is made before any "
                "account: put the account in the paths of the requests instead, or drop validate",
            )
        if not source.allowed_origins:
            raise self.mapping_error(
                path,
                "it reads the account in its origin, so the source has no origin of its own to send its "
                f"credentials to: list the origins of its accounts in sources.{source.name}.allowed_origins",
            )
        return source.allowed_origins[0]

    def without_account(self, source: Source) -> str | None:
        """The source's base URL rendered with ``account`` empty (its fields empty too), if it
        is then a URL: the part of it that is the same for every account."""
        variables = {"config": self.config.values, "account": jinja2.ChainableUndefined()}
        try:
            url = source.base_url.evaluate(Scope({}, variables, self.jmespath))
        except Exception:  # the account is all of it, or it reads the account's fields in ways text cannot
            return None
        return url if isinstance(url, str) and url_problem(url) is None else None

    def client(self, name: str) -> HttpClient:
        if name not in self.clients:
            source = self.plan.source(name)
            base_url = self.base_url(source)
            own_headers = tuple((n, v) for n, v in source.headers if n not in source.account_headers)
            own_params = tuple((n, v) for n, v in source.params if n not in source.account_params)
            headers = self.text_pairs(own_headers, ("sources", name, "headers"))
            params = self.text_pairs(own_params, ("sources", name, "params"))
            if source.auth is not None:  # evaluated here first, so that a failure names its place
                for field_name, value in source.auth.fields:
                    self.evaluate(value, ("sources", name, "auth", field_name))
            self.clients[name] = HttpClient(
                source,
                base_url=base_url,
                headers=headers,
                params=params,
                redactor=self.config.redactor,
                options=self.jmespath,
                auth_scope=self.config_scope,
                bundled_cassette=self.options.bundled_cassette,
            )
        return self.clients[name]

    def instance_name(self) -> str:
        """The integration instance this run is: the mapping's ``integration.instance`` on the
        config, or the integration id when it is not given (or renders empty)."""
        if self.plan.instance is not None:
            name = self.evaluate(self.plan.instance, ("integration", "instance"))
            if name not in (None, ""):
                return str(name)
        return self.plan.integration_id

    def instance_tags(self) -> dict[str, Any]:
        tags = {}
        for name, value in self.plan.instance_tags:
            result = self.evaluate(value, ("tags", name))
            if result not in (None, ""):
                tags[name] = result
        return tags

    # -- values evaluated once per run, on the config ------------------------------------

    def evaluate(self, value: Value, path: PathT | Callable[[], PathT]) -> Any:
        """A value of the mapping evaluated on the config; a failure is an EvaluationError naming
        where it is (``m.yaml:12:3: tags.AccountName``), never an internal error."""
        try:
            return value.evaluate(self.config_scope)
        except EtlError:
            raise
        except Exception as exc:  # an undefined name, a null in text, a type error of an operator...
            source = " ".join(str(value.source).split())
            shown = source if len(source) <= 80 else source[:77] + "..."
            where = self.where(path() if callable(path) else path)
            raise EvaluationError(f"{where}: {shown!r} failed: {describe(exc)}") from None

    def text_pairs(self, pairs, path: PathT) -> dict[str, str]:
        """Headers or query parameters of a source: null leaves one out, booleans are true/false."""
        out = {}
        for name, value in pairs:
            result = self.evaluate(value, (*path, name))
            if result is not None:
                out[name] = ("true" if result else "false") if isinstance(result, bool) else str(result)
        return out

    def where(self, path: PathT) -> str:
        """``file:line:column: path`` of a place in the mapping (the file is read again, for this
        message only; without it, the path alone)."""
        if self.loaded is False:
            try:
                self.loaded = load_mapping(self.plan.path)
            except EtlError:
                self.loaded = None
        if isinstance(self.loaded, LoadedMapping):
            return f"{self.loaded.source.locate(path)}: {format_path(path)}"
        return format_path(path)

    def mapping_error(self, path: PathT, message: str) -> MappingError:
        """A problem of the mapping that shows only when it runs (with this config)."""
        self.where(path)  # reads the mapping again, for the location
        location = self.loaded.source.locate(path) if isinstance(self.loaded, LoadedMapping) else None
        return MappingError([Problem(location, format_path(path), message)])

    def when_path(self, step: Step) -> PathT:
        return (*self.step_path(step), "when")

    def step_path(self, step: Step) -> PathT:
        """``('steps', i)``: where ``step`` is in the mapping file (plan order is dependency order)."""
        self.where(())
        if isinstance(self.loaded, LoadedMapping):
            for index, raw in enumerate(self.loaded.data.get("steps") or ()):
                if isinstance(raw, dict) and raw.get("id") == step.id:
                    return ("steps", index)
        return ("steps", step.id)

    # -- the run -------------------------------------------------------------------------

    def validate(self, steps: tuple[Step, ...]) -> None:
        """Validation calls of the sources the run will use, before anything else.
        Authentication failures are fatal."""
        used = {s.request.source for s in steps if s.request is not None}
        for source in self.plan.sources:
            if source.validate is not None and source.name in used:
                log.info("validating credentials: %s %s", source.validate.method, source.name)
                try:
                    validate_credentials(self.client(source.name), source.validate, self.config_scope)
                except RequestBuildError as exc:
                    path = ("sources", source.name, "validate", *exc.field.split(".")[1:])
                    raise EvaluationError(f"{self.where(path)}: {exc}") from None
                self.accepted_sources.add(source.name)

    def enabled_steps(self) -> tuple[tuple[Step, ...], set[str]]:
        """The steps to run, and those switched off by ``when`` (with everything depending on them)."""
        steps = self.plan.steps_for(list(self.options.steps))
        disabled: set[str] = set()
        for step in steps:
            off = step.when is not None and not is_truthy(self.evaluate(step.when, partial(self.when_path, step)))
            if off or any(d in disabled for d in step.depends_on):
                disabled.add(step.id)
        return steps, disabled

    def run(self) -> RunResult:
        steps, disabled = self.enabled_steps()
        # Records and graph objects are trees of dicts and lists, freed by reference counting;
        # the cycle collector would only rescan them again and again (a fifth of a bulk run).
        collecting = gc.isenabled()
        gc.disable()
        try:
            tags = self.instance_tags()
            self.read_state(steps)
            self.validate(tuple(s for s in steps if s.id not in disabled))
            staged = StagedOutput(self.options.output)
            try:
                writer = self.writer = GraphWriter(staged.path, self.config.redactor, pretty=self.options.pretty)
                checker = GraphChecker(self.plan.listed_types, spill_dir=staged.path.parent)
                results: dict[str, StepResult] = {}
                last_use = self.parent_lifetimes(steps, disabled)
                for index, step in enumerate(steps):
                    if step.id in disabled:
                        log.info("step %s: disabled by its 'when' (or a step it depends on)", step.id)
                        results[step.id] = StepResult(step, status=DISABLED, start_ms=now_ms(), end_ms=now_ms())
                    elif step.on_dependency_failure == "skip" and self.failed_dependencies(step, results):
                        results[step.id] = self.skip_step(step, self.failed_dependencies(step, results))
                    else:
                        results[step.id] = self.run_step(step, results, writer, checker, tags)
                    for entity_type in [t for t, last in last_use.items() if last == index]:
                        del self.parents[entity_type]  # no step after this one fans out over them
                result = self.finish(list(results.values()), checker)
                writer.write_summary(self.summary(result))
            except BaseException:
                staged.discard()
                raise
            staged.commit()
            self.write_state(result)
            return result
        finally:
            self.progress.close()
            for client in self.clients.values():
                client.close()
            if collecting:
                gc.enable()

    def parent_lifetimes(self, steps: tuple[Step, ...], disabled: set[str]) -> dict[str, int]:
        """Keep the entities of the types the steps that run fan out over (no others): for
        each type, the index of the last step that needs them. What later lineages refer to
        stays after that, and only that."""
        running = (step for step in steps if step.id not in disabled)
        last_use = {t: index for index, step in enumerate(running) if (t := step.fans_out_over)}
        self.parents = {t: [] for t in last_use}
        return last_use

    def run_step(
        self, step: Step, done: dict[str, StepResult], writer: GraphWriter, checker: GraphChecker, tags: dict[str, Any]
    ) -> StepResult:
        result = StepResult(step, start_ms=now_ms())
        log.info("step %s: %s", step.id, step.name)
        builder = GraphBuilder(
            step,
            config=self.config.values,
            options=self.jmespath,
            index=checker.index,
            instance_tags=tags,
            now=self.now,
        )
        pending: list[dict] = []  # relationships whose endpoints may appear later in the step
        requests_before = self.requests_made()
        refused_before = refusals(step, checker)
        self.observer.step_started(step, builder)
        tracker = self.tracker(step, result)
        units = self.units(step)
        records = self.records(step, result, units)
        if step.detail is not None:
            records = self.detailed(step, result, records)
        try:
            observe = self.observer.record if type(self.observer) is not Observer else None
            self.progress.step_started(step.id, result, units[0] if units is not None else None)
            for position, record, lineage in records:
                result.records += 1
                try:
                    if step.filter is not None and not keep_record(step.filter, builder.scope(record, lineage)):
                        result.filtered += 1
                        continue
                except Exception as exc:  # the filter could not be evaluated on this record
                    result.problem(f"{position}: filter: {type(exc).__name__}: {exc}; record skipped")
                    result.skipped_types.update(e.type for e in step.entities)
                    continue
                built = builder.build(record, position, lineage)
                if observe is not None:
                    observe(step, position, record, built, lineage)
                if self.accept(step, built, result, writer, checker, pending, lineage) and tracker is not None:
                    tracker.see(record)
                if self.options.record_limit is not None and result.records >= self.options.record_limit:
                    log.info("step %s: stopped after %d records (limit)", step.id, result.records)
                    break
        except FetchError as exc:
            self.request_failed(step, result, exc)
        finally:
            records.close()  # a download a record limit left unread is closed now
        self.selector_warning(step, result)
        for relationship in pending:
            if checker.check_relationship(relationship) is Verdict.ACCEPT:
                writer.add(step.id, "relationships", relationship)
            else:
                checker.dangling(relationship)
        writer.flush_step(step.id)
        result.counts = writer.counts(step.id)
        if result.status == SUCCESS:
            self.check_built(step, result, checker, refused_before, bool(self.failed_dependencies(step, done)))
        if result.status == SUCCESS and self.failed_dependencies(step, done):
            result.status = PARTIAL_DEPENDENCY
        lacking = [d for d in step.depends_on if d in done and done[d].incomplete_data]
        if result.status == SUCCESS and lacking and not result.incomplete:
            # A fan-out over incomplete parents, or relationships to missing entities: incomplete too.
            result.incomplete = True
            result.warn(
                f"{', '.join(lacking)}, which this step depends on, has incomplete data; this step's "
                f"types are marked partial too"
            )
        result.requests = self.requests_made() - requests_before
        result.end_ms = now_ms()
        self.progress.step_ended(result.status, sum(result.counts.values()))
        return result

    @staticmethod
    def check_built(
        step: Step, result: StepResult, checker: GraphChecker, before: tuple[int, int], lacking: bool
    ) -> None:
        """A step that received records (and kept some through its filter) but wrote nothing -
        every object refused as invalid or dangling, or no rule producing anything - did not
        succeed: it fails, naming the first reason (a step whose dependency failed is partial
        already, and is told so in a warning). Objects that were duplicates of written ones count
        as built. Steps that received no records succeed. A step without a request fails when
        every object it built from the config was refused (one whose keys were all null, built
        nothing: it succeeds)."""
        considered = result.records - result.filtered
        if considered <= 0 or any(result.counts.values()):
            return
        refused, duplicates = (after - was for after, was in zip(refusals(step, checker), before, strict=True))
        if duplicates or (step.request is None and not refused):
            return
        reason = result.first_problem
        if reason is None and refused:
            reason = next(
                (line for t in step.declared_types for line in checker.describe(t) if "not written" in line),
                None,
            )
        if reason is None:
            reason = (
                "no entity key could be made (every key was null)"
                if result.skipped_types
                else "no rule produced an entity or relationship from them"
            )
        kept = " and kept by the filter" if result.filtered else ""
        message = (
            f"{considered} record(s) received{kept}, nothing built: {reason}"
            if step.request is not None
            else f"nothing written from the config: {reason}"
        )
        if lacking:
            result.warn(message)
        else:
            result.fail(message)

    @staticmethod
    def failed_dependencies(step: Step, done: dict[str, StepResult]) -> list[str]:
        return [d for d in step.depends_on if d in done and done[d].status not in (SUCCESS, DISABLED)]

    def skip_step(self, step: Step, failed: list[str]) -> StepResult:
        """on_dependency_failure: skip - do not run on incomplete input; its types are partial."""
        result = StepResult(step, status=SKIPPED_DEPENDENCY, start_ms=now_ms(), end_ms=now_ms())
        result.errors.append(f"skipped: it depends on {', '.join(failed)}, which did not succeed")
        log.info("step %s: %s", step.id, result.errors[0])
        return result

    def requests_made(self) -> int:
        return sum(c.requests_made for c in self.clients.values())

    # -- where a step's records come from --------------------------------------------------

    def units(self, step: Step) -> tuple[int, Iterator[Lineage]] | None:
        """What a step runs once for, with how many there are: one lineage per parent entity
        of a fan-out (those accepted before the step started), or per account; None for a step
        that runs once."""
        if step.accounts is not None and step.accounts.items is not None:
            accounts = self.evaluate(step.accounts.items, lambda: (*self.step_path(step), "accounts"))
            listed = [] if accounts is None else accounts if isinstance(accounts, list) else [accounts]
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
        elif step.for_each is not None:
            yield from self.fan_out_records(step, result, client, units[1])
        else:
            yield from self.account_records(step, result, client, units[1])

    def selector(self, step: Step) -> Callable[[Any], list]:
        """The step's ``records`` selector on a page's body (each document of a decoded page)."""

        def select(body: Any) -> list:
            if isinstance(body, DocumentList):  # a decoded page of many documents: records of each
                return [r for document in body for r in select_records(step.records, document, self.jmespath)]
            return select_records(step.records, body, self.jmespath)

        return select

    def fan_out_records(
        self, step: Step, result: StepResult, client: HttpClient, lineages: Iterator[Lineage]
    ) -> Iterator[tuple[Position, Any, Lineage]]:
        """The records of a fan-out: each parent's pages fetched whole by the pool, read in
        parent order; what the pagination of each had to say is told in that order too."""
        request = step.request
        assert request is not None  # fan-out steps have one (compile checks it)
        select = self.selector(step)

        def pages_of(unit: tuple[Lineage, AccountBase | FetchError | None]) -> tuple[list, list, FetchError | None]:
            """A child's pages, what its pagination had to say ((partial?, message)), and the
            error that ended it, if any."""
            lineage, base = unit
            if isinstance(base, FetchError):
                return [], [], base
            notes: list[tuple[bool, str]] = []
            try:
                pages = list(
                    paginate(
                        client,
                        request,
                        step.pagination,
                        self.request_scope(lineage, step),
                        select,
                        lambda message: notes.append((True, message)),
                        warn=lambda message: notes.append((False, message)),
                        response=step.response,
                        base=base,
                    )
                )
            except FetchError as exc:
                return [], notes, exc
            return pages, notes, None

        units = ((lineage, self.account_base(request.source, lineage.account)) for lineage in lineages)
        for (lineage, _), outcome in ordered_map(pages_of, units, self.options.concurrency):
            self.progress.parent_done()
            context = f"for {step.for_each} {(lineage.parent or {}).get('_key')}: "
            child_pages, notes, error = ([], [], outcome) if isinstance(outcome, FetchError) else outcome
            for lost, message in notes:
                (self.truncated if lost else self.total_changed)(step, result, context + message)
            if error is not None:
                self.request_failed(step, result, error, context)
                continue
            yield from self.page_records(step, result, child_pages, lineage)

    def account_records(
        self, step: Step, result: StepResult, client: HttpClient, lineages: Iterator[Lineage]
    ) -> Iterator[tuple[Position, Any, Lineage]]:
        """The records of a step with accounts, account after account: each account's pages
        stream (while the next accounts' are fetched, a few pages ahead each), so an account
        of any size is never held whole."""
        request = step.request
        assert request is not None  # steps with accounts have one (compile checks it)
        select = self.selector(step)

        def events(unit: tuple[Lineage, AccountBase | FetchError | None]) -> Iterator[tuple[bool | None, Any]]:
            """An account's pages ``(None, (page, records))``, and what its pagination had to
            say ``(partial?, message)``, in order; the error that ends them is raised."""
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
                prefetch=self.options.prefetch,
                warn=lambda message: notes.append((False, message)),
                response=step.response,
                base=base,
            ):
                yield from notes
                notes.clear()
                yield None, page
            yield from notes

        units = ((lineage, self.account_base(request.source, lineage.account)) for lineage in lineages)
        for (lineage, _), stream in ordered_streams(events, units, self.options.concurrency):
            context = f"for account {account_label(lineage.account)}: "
            try:
                yield from self.page_records(step, result, self.told(step, result, stream, context), lineage)
            except FetchError as exc:
                self.request_failed(step, result, exc, context)
            self.progress.parent_done()

    def told(
        self, step: Step, result: StepResult, events: Iterator[tuple[bool | None, Any]], context: str
    ) -> Iterator[tuple[Page, list]]:
        """The pages of a stream of :meth:`account_records`; its notes are told as they come."""
        for lost, value in events:
            if lost is None:
                yield value
            else:
                (self.truncated if lost else self.total_changed)(step, result, context + value)

    # -- accounts ---------------------------------------------------------------------------

    def account_base(self, source_name: str, account: Any) -> AccountBase | FetchError | None:
        """What ``account`` changes in the requests to a source (None: nothing), or why its
        requests cannot be made: one of its templates failed, or its base URL is on an origin
        the source's credentials may not go to. Worked out once per account."""
        source = self.plan.source(source_name)
        if account is None or not source.per_account:
            return None
        cached = self.account_bases.get((source_name, id(account)))
        if cached is not None and cached[0] is account:
            return cached[1]
        try:
            base: AccountBase | FetchError = self.render_account_base(source, account)
        except FetchError as exc:
            base = exc
        self.account_bases[(source_name, id(account))] = (account, base)  # the account kept: its id stays its own
        return base

    def render_account_base(self, source: Source, account: Any) -> AccountBase:
        """The source's templates that read ``account``, rendered for it."""
        scope = Scope({}, {"config": self.config.values, "account": account}, self.jmespath)
        path = ("sources", source.name)

        def render(value: Value, where: PathT) -> Any:
            try:
                return value.evaluate(scope)
            except Exception as exc:  # a field this account does not have, a null in text...
                raise FetchError(f"{self.where((*path, *where))}: {value.source!r} failed: {describe(exc)}") from None

        base_url = None
        if source.account_base_url and self.base_url_override(source) is None:
            base_url = render(source.base_url, ("base_url",))
            self.check_account_origin(source, base_url)
        texts = []
        for kind, pairs, names in (
            ("headers", source.headers, source.account_headers),
            ("params", source.params, source.account_params),
        ):
            rendered = ((name, render(value, (kind, name))) for name, value in pairs if name in names)
            texts.append({n: _text(v) for n, v in rendered if v is not None})  # null leaves one out
        return AccountBase(base_url, texts[0], texts[1])

    def check_account_origin(self, source: Source, base_url: Any) -> None:
        """An account's base URL must be a URL; on an origin that is neither the source's nor
        one of its ``allowed_origins`` its requests are refused (unless the source sends them
        there without credentials: ``cross_origin: anonymous``)."""
        name = source.name
        problem = url_problem(base_url) if isinstance(base_url, str) else f"it is {type(base_url).__name__}, not text"
        if problem is not None:
            raise FetchError(self.config.redactor(f"the base URL of source '{name}' is {base_url!r}: {problem}"))
        client = self.client(name)
        origin = origin_of(base_url)
        if origin in client.trusted or source.cross_origin == "anonymous":
            return
        raise FetchError(
            self.config.redactor(
                f"the base URL of source '{name}' for this account ({base_url}) is on origin {origin}, which is "
                f"neither the source's own ({client.origin}) nor one of its allowed_origins; refusing to send the "
                f"source's credentials there. List it in sources.{name}.allowed_origins (or set "
                f"sources.{name}.cross_origin: anonymous to request it without credentials)"
            )
        )

    # -- detail requests ---------------------------------------------------------------------

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
            return fetch(client, detail.request, scope, base=base)

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

    # -- export jobs and files -------------------------------------------------------------

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
                self.request_failed(step, result, outcome, f"export file {number} ({_shown(item)}): ")
                continue
            try:
                yield from self.file_records(step, result, outcome, number, download)
            except FetchError as exc:
                self.request_failed(step, result, exc, f"export file {number} ({_shown(item)}): ")

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

    # -- incremental state ----------------------------------------------------------------

    def read_state(self, steps: tuple[Step, ...]) -> None:
        """The incremental state the last run of this instance saved (nothing with --full-refresh)."""
        options = self.options.state
        if options.source is None or options.full_refresh or not any(s.incremental for s in steps):
            return
        self.saved_state = options.source.read(self.plan.integration_id, self.instance_name())

    def tracker(self, step: Step, result: StepResult) -> MarkTracker | None:
        """The high-water mark of ``step`` this run (None: not incremental); notes in ``result``
        whether the run is incremental (it used a saved state)."""
        if step.incremental is None:
            return None
        saved = usable(step, self.saved_state.get(step.id))
        result.incremental = saved is not None
        if saved is not None:
            log.info("step %s: incremental, since %s", step.id, _shown(saved.get("since")))
        tracker = MarkTracker(step.incremental, saved, self.jmespath, result.warn)
        self.marks[step.id] = tracker
        return tracker

    def new_state(self, result: RunResult) -> dict[str, dict]:
        """The state to save: each incremental step that ran completely and succeeded advances;
        every other keeps what it had (a failed or partial step never moves its mark)."""
        options = self.options.state
        previous = {} if options.source is None else options.source.read(self.plan.integration_id, result.instance)
        state = dict(previous)
        for step_result in result.steps:
            step = step_result.step
            tracker = self.marks.get(step.id)
            if tracker is None or step_result.status != SUCCESS or step_result.incomplete_data:
                continue
            if self.options.record_limit is not None:
                continue  # a preview saw only some records
            saved = usable(step, self.saved_state.get(step.id))
            state[step.id] = advanced(step, saved, tracker, self.now)
        return state

    def write_state(self, result: RunResult) -> None:
        """After the output is committed: the state file beside it (``etl run --store`` also saves
        it in the store, after loading the run)."""
        if not self.marks:
            return
        result.state = self.new_state(result)
        if self.options.state.file is not None:
            FileState(self.options.state.file).write(self.plan.integration_id, result.instance, result.state)

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

    def accept(
        self,
        step: Step,
        built: Built,
        result: StepResult,
        writer: GraphWriter,
        checker: GraphChecker,
        pending: list[dict],
        lineage: Lineage = ROOT,
    ) -> bool:
        """Check and write what a record built; True when some of it was written. Entities a
        later step fans out over are kept, with the ``lineage`` they were built in."""
        for message in built.warnings:
            result.problem(message)
        result.skipped_types.update(built.skipped_types)
        written = False
        for entity in built.entities:
            verdict = checker.check_entity(entity)
            if verdict is Verdict.ACCEPT:
                written = True
                writer.add(step.id, "entities", entity)
                if entity["_type"] in self.parents:
                    kept = {k: v for k, v in entity.items() if k != "_rawData"}
                    self.parents[entity["_type"]].append((kept, lineage))
            elif verdict is Verdict.DUPLICATE and self.strict_types.get(entity["_type"]) and not result.errors:
                result.fail(f"duplicate _key {entity['_key']} ({entity['_type']} has duplicates: strict)")
        check_relationship, add, step_id = checker.check_relationship, writer.add, step.id
        for relationship in built.relationships:
            verdict = check_relationship(relationship)
            if verdict is Verdict.ACCEPT:
                written = True
                add(step_id, "relationships", relationship)
            elif verdict is Verdict.DANGLING:
                pending.append(relationship)
        return written

    def finish(self, results: list[StepResult], checker: GraphChecker) -> RunResult:
        partial: set[str] = set(checker.incomplete_types())
        for result in results:
            if result.status == DISABLED:
                continue
            partial.update(result.step.partial_types)
            partial.update(result.skipped_types)
            if result.status != SUCCESS or result.incomplete or result.incremental:
                partial.update(result.step.declared_types)
        notes = [line for t in sorted(checker.reports) for line in checker.describe(t)]
        for note in notes:
            log.info("%s", note)  # a live line at -v; the summary tells it
        upserted = {t for r in results if r.incremental and r.status != DISABLED for t in r.step.declared_types}
        return RunResult(
            self.plan, self.options.output, results, sorted(partial), notes, self.instance_name(), sorted(upserted)
        )

    def summary(self, result: RunResult) -> dict:
        return {
            "integrationStepResults": [r.summary() for r in result.steps],
            "metadata": {
                "partialDatasets": {"types": result.partial_types},
                # who the run is, for etl load: the store replaces what this instance said last time
                "integration": {"id": self.plan.integration_id, "instance": result.instance},
            },
        }


_NO_RECORD: Any = object()  # a detail response that made no record


def _text(value: Any) -> str:
    """A header or query parameter's text (booleans as true/false)."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def refusals(step: Step, checker: GraphChecker) -> tuple[int, int]:
    """(objects refused as invalid or dangling, duplicates) of a step's types so far."""
    refused = duplicates = 0
    for graph_type in step.declared_types:
        report = checker.reports.get(graph_type)
        if report is not None:
            refused += sum(report.invalid.values()) + report.dangling
            duplicates += report.duplicates
    return refused, duplicates


def run_plan(
    plan: Plan,
    config: ResolvedConfig,
    options: RunOptions,
    progress: Progress | None = None,
    observer: Observer | None = None,
) -> RunResult:
    return Runner(plan, config, options, progress, observer).run()
