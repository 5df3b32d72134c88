"""The run of one compiled plan, end to end:

validate credentials -> for each step in dependency order: fetch pages -> extract records
-> build entities/relationships -> check the graph -> write batches -> write summary.json
-> replace the output directory.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from ..errors import (
    EtlError,
    EvaluationError,
    FetchError,
    MappingError,
    Problem,
    RequestBuildError,
)
from ..jsonio import shown
from ..lang.functions import jmespath_options
from ..lang.values import Scope, Value, is_truthy
from .accounts import AccountSources
from .build import ROOT, Built, GraphBuilder, Lineage, describe
from .check import GraphChecker, Verdict
from .config import ResolvedConfig
from .extract import keep_record
from .fetch import HttpClient
from .load import LoadedMapping, PathT, format_path, load_mapping
from .observer import Observer
from .paginate import (
    AccountBase,
    validate_credentials,
)
from .plan import Plan, Step
from .progress import Progress
from .records import StepRecords
from .results import DISABLED, PARTIAL_DEPENDENCY, SKIPPED_DEPENDENCY, SUCCESS, RunResult, StepResult
from .state import FileState, StateOptions, StepMarks, advanced, template_state, unit_state, usable
from .write import GraphWriter, StagedOutput

log = logging.getLogger("etl.run")

DEFAULT_CONCURRENCY = 8


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


class Runner(StepRecords, AccountSources):
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
        # entity type -> (entity without _rawData, the lineage it was built in), for the steps
        # that fan out over them (or take them as accounts): set up by parent_lifetimes
        self.parents: dict[str, list[tuple[dict, Lineage]]] = {}
        self.account_bases: dict[tuple[str, int], tuple[Any, AccountBase | FetchError]] = {}
        self.strict_types = {e.type: True for s in plan.steps for e in s.entities if e.duplicates == "strict"}
        self.loaded: LoadedMapping | None | bool = False  # the mapping file, read again for an error's position
        self.accepted_sources: set[str] = set()  # sources that have answered a request: credentials accepted
        self.selector_misses: dict[str, str | None] = {}  # step id -> why its records selector found nothing
        self.saved_state: dict[str, dict] = {}  # step id -> the incremental state the last run saved
        self.marks: dict[str, StepMarks] = {}  # step id -> the high-water marks of this run
        self.usable_state: dict[str, dict | None] = {}  # step id -> its saved state, if it fits the step

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
            variables["state"] = template_state(unit_state(self.usable_state.get(step.id), lineage.unit))
        return Scope({}, variables, self.jmespath)

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
        last_use = {
            t: index for index, step in enumerate(steps) if step.id not in disabled and (t := step.fans_out_over)
        }
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
                    tracker.see(record, lineage.unit)
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

    # -- incremental state ----------------------------------------------------------------

    def read_state(self, steps: tuple[Step, ...]) -> None:
        """The incremental state the last run of this instance saved (nothing with --full-refresh)."""
        options = self.options.state
        if options.source is None or options.full_refresh or not any(s.incremental for s in steps):
            return
        self.saved_state = options.source.read(self.plan.integration_id, self.instance_name())

    def tracker(self, step: Step, result: StepResult) -> StepMarks | None:
        """The high-water marks of ``step`` this run (None: not incremental); notes in
        ``result`` whether the run is incremental (it used a saved state)."""
        if step.incremental is None:
            return None
        saved = self.usable_state[step.id] = usable(step, self.saved_state.get(step.id))
        result.incremental = saved is not None
        if saved is not None:
            log.info("step %s: incremental, since %s", step.id, shown(saved.get("since", "the mark of each unit")))
        per_unit = step.for_each is not None or step.accounts is not None
        marks = StepMarks(step.incremental, saved, per_unit, self.jmespath, result.warn)
        self.marks[step.id] = marks
        return marks

    def new_state(self, result: RunResult) -> dict[str, dict]:
        """The state to save: each incremental step that ran completely and succeeded advances;
        every other keeps what it had (a failed or partial step never moves its mark)."""
        options = self.options.state
        previous = {} if options.source is None else options.source.read(self.plan.integration_id, result.instance)
        state = dict(previous)
        for step_result in result.steps:
            step = step_result.step
            marks = self.marks.get(step.id)
            if marks is None or step_result.status != SUCCESS or step_result.incomplete_data:
                continue
            if self.options.record_limit is not None:
                continue  # a preview saw only some records
            state[step.id] = advanced(step, self.usable_state.get(step.id), marks, self.now)
        return state

    def write_state(self, result: RunResult) -> None:
        """After the output is committed: the state file beside it (``etl run --store`` also saves
        it in the store, after loading the run)."""
        if not self.marks:
            return
        result.state = self.new_state(result)
        if self.options.state.file is not None:
            FileState(self.options.state.file).write(self.plan.integration_id, result.instance, result.state)

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
