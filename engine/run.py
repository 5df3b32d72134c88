"""The pipeline, end to end, for one compiled plan:

validate credentials -> for each step in dependency order: fetch pages -> extract records
-> build entities/relationships -> check the graph -> write batches -> write summary.json
-> replace the output directory.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .build import Built, GraphBuilder
from .config import ResolvedConfig
from .errors import EXIT_OK, EXIT_PARTIAL, EtlError, FetchError
from .expressions import Scope, jmespath_options
from .extract import keep_record, select_records
from .fetch import HttpClient, paginate, render_pairs, validate_credentials
from .graph import GraphChecker, Verdict
from .plan import Plan, Source, Step
from .write import GraphWriter, StagedOutput

log = logging.getLogger("etl.run")

MAX_WARNINGS_KEPT = 20  # per step; the rest are counted

SUCCESS = "success"
FAILURE = "failure"
PARTIAL_DEPENDENCY = "partial_success_due_to_dependency_failure"


@dataclass
class StepResult:
    step: Step
    status: str = SUCCESS
    start_ms: int = 0
    end_ms: int = 0
    counts: Counter = field(default_factory=Counter)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    warning_count: int = 0
    requests: int = 0
    records: int = 0
    skipped_types: set = field(default_factory=set)  # types of which some record built nothing

    def warn(self, message: str) -> None:
        self.warning_count += 1
        if len(self.warnings) < MAX_WARNINGS_KEPT:
            self.warnings.append(message)
        log.debug("warning: %s", message)

    def summary(self) -> dict:
        step = self.step
        return {
            "id": step.id,
            "name": step.name,
            "dependsOn": list(step.depends_on),
            "declaredTypes": list(step.declared_types),
            "partialTypes": list(step.partial_types),
            "encounteredTypes": sorted(self.counts),
            "encounteredTypeCounts": dict(sorted(self.counts.items())),
            "status": self.status,
            "startTime": self.start_ms,
            "endTime": self.end_ms,
            "duration": self.end_ms - self.start_ms,
        }


@dataclass
class RunResult:
    plan: Plan
    output: Path
    steps: list[StepResult]
    partial_types: list[str]
    graph_notes: list[str]

    @property
    def exit_code(self) -> int:
        if any(r.status != SUCCESS for r in self.steps) or self.graph_notes_are_losses:
            return EXIT_PARTIAL
        return EXIT_OK

    @property
    def graph_notes_are_losses(self) -> bool:
        declared_partial = {t for r in self.steps for t in r.step.partial_types}
        return bool(set(self.partial_types) - declared_partial)


@dataclass(frozen=True)
class RunOptions:
    output: Path = Path(".j1-integration")
    base_urls: tuple[tuple[str | None, str], ...] = ()  # (source name or None for the default, url)
    steps: tuple[str, ...] = ()
    pretty: bool = False


def now_ms() -> int:
    return int(time.time() * 1000)


class Runner:
    def __init__(self, plan: Plan, config: ResolvedConfig, options: RunOptions):
        self.plan = plan
        self.config = config
        self.options = options
        self.jmespath = jmespath_options(dict(config.values))
        self.config_scope = Scope({}, {"config": config.values}, self.jmespath)
        self.clients: dict[str, HttpClient] = {}

    # -- setup ---------------------------------------------------------------------------

    def base_url(self, source: Source) -> str:
        for name, url in self.options.base_urls:
            if name == source.name or (name is None and source is self.plan.default_source):
                return url
        return source.base_url.evaluate(self.config_scope)

    def client(self, name: str) -> HttpClient:
        if name not in self.clients:
            source = self.plan.source(name)
            self.clients[name] = HttpClient(
                source,
                base_url=self.base_url(source),
                headers={k: str(v) for k, v in render_pairs(source.headers, self.config_scope).items()},
                params=render_pairs(source.params, self.config_scope),
                redactor=self.config.redactor,
                options=self.jmespath,
            )
        return self.clients[name]

    def instance_tags(self) -> dict[str, Any]:
        tags = {}
        for name, value in self.plan.instance_tags:
            result = value.evaluate(self.config_scope)
            if result not in (None, ""):
                tags[name] = result
        return tags

    # -- the run -------------------------------------------------------------------------

    def validate(self) -> None:
        """Every source's validation call, before anything else. Authentication failures are fatal."""
        for source in self.plan.sources:
            if source.validate is not None:
                log.info("validating credentials: %s %s", source.validate.method, source.name)
                validate_credentials(self.client(source.name), source.validate, self.config_scope)

    def run(self) -> RunResult:
        steps = self.plan.steps_for(list(self.options.steps))
        try:
            self.validate()
            staged = StagedOutput(self.options.output)
            try:
                writer = GraphWriter(staged.path, self.config.redactor, pretty=self.options.pretty)
                checker = GraphChecker()
                tags = self.instance_tags()
                results: dict[str, StepResult] = {}
                for step in steps:
                    results[step.id] = self.run_step(step, results, writer, checker, tags)
                result = self.finish(list(results.values()), checker)
                writer.write_summary(self.summary(result))
            except BaseException:
                staged.discard()
                raise
            staged.commit()
            return result
        finally:
            for client in self.clients.values():
                client.close()

    def run_step(self, step: Step, done: dict[str, StepResult], writer: GraphWriter, checker: GraphChecker,
                 tags: dict[str, Any]) -> StepResult:
        result = StepResult(step, start_ms=now_ms())
        log.info("step %s: %s", step.id, step.name)
        builder = GraphBuilder(step, config=self.config.values, options=self.jmespath, index=checker.index,
                               instance_tags=tags)
        pending: list[dict] = []  # relationships whose endpoints may appear later in the step
        requests_before = self.requests_made()
        try:
            for position, record in self.records(step, result):
                result.records += 1
                if not keep_record(step.filter, builder.scope(record)):
                    continue
                built = builder.build(record, position)
                self.accept(step, built, result, writer, checker, pending)
        except FetchError as exc:
            result.status = FAILURE
            result.error = str(exc)
            log.error("step %s failed: %s", step.id, exc)
        for relationship in pending:
            if checker.check_relationship(relationship) is Verdict.ACCEPT:
                self.write(step, "relationships", relationship, result, writer)
            else:
                checker.dangling(relationship)
        writer.flush_step(step.id)
        failed_deps = [d for d in step.depends_on if d in done and done[d].status != SUCCESS]
        if result.status == SUCCESS and failed_deps:
            result.status = PARTIAL_DEPENDENCY
        result.requests = self.requests_made() - requests_before
        result.end_ms = now_ms()
        return result

    def requests_made(self) -> int:
        return sum(c.requests_made for c in self.clients.values())

    def records(self, step: Step, result: StepResult) -> Iterator[tuple[str, Any]]:
        """Every record of a step, with a position for messages. A step without a request
        has one empty record: its entities come from config alone."""
        if step.request is None:
            yield f"{step.id}", {}
            return
        client = self.client(step.request.source)

        def select(body: Any) -> list:
            return select_records(step.records, body, self.jmespath, f"{step.request.method} {client.base_url}")

        for number, (page, records) in enumerate(
                paginate(client, step.request, step.pagination, self.config_scope, select), start=1):
            log.debug("step %s: page %d: %d record(s) from %s", step.id, number, len(records), page.url)
            for index, record in enumerate(records):
                yield f"{step.id}: page {number} ({page.url}) record {index}", record

    def accept(self, step: Step, built: Built, result: StepResult, writer: GraphWriter, checker: GraphChecker,
               pending: list[dict]) -> None:
        for message in built.warnings:
            result.warn(message)
        result.skipped_types.update(built.skipped_types)
        for entity in built.entities:
            verdict = checker.check_entity(entity)
            if verdict is Verdict.ACCEPT:
                self.write(step, "entities", entity, result, writer)
        for relationship in built.relationships:
            verdict = checker.check_relationship(relationship)
            if verdict is Verdict.ACCEPT:
                self.write(step, "relationships", relationship, result, writer)
            elif verdict is Verdict.DANGLING:
                pending.append(relationship)

    def write(self, step: Step, collection: str, obj: dict, result: StepResult, writer: GraphWriter) -> None:
        result.counts[obj["_type"]] += 1
        writer.add(step.id, collection, obj)

    def finish(self, results: list[StepResult], checker: GraphChecker) -> RunResult:
        partial: set[str] = set(checker.incomplete_types())
        for result in results:
            partial.update(result.step.partial_types)
            partial.update(result.skipped_types)
            if result.status != SUCCESS:
                partial.update(result.step.declared_types)
        notes = [line for t in sorted(checker.reports) for line in checker.describe(t)]
        for note in notes:
            log.warning("%s", note)
        return RunResult(self.plan, self.options.output, results, sorted(partial), notes)

    def summary(self, result: RunResult) -> dict:
        return {
            "integrationStepResults": [r.summary() for r in result.steps],
            "metadata": {"partialDatasets": {"types": result.partial_types}},
        }


def run_plan(plan: Plan, config: ResolvedConfig, options: RunOptions) -> RunResult:
    return Runner(plan, config, options).run()


__all__ = ["RunOptions", "RunResult", "StepResult", "run_plan", "EtlError"]
