"""What a run produced: each step's status, counts and messages, and the run's exit code.

The statuses are JupiterOne's (``summary.json``'s ``integrationStepResults``);
:func:`format_result` is the summary ``etl run`` prints.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EXIT_OK, EXIT_PARTIAL
from .plan import Plan, Step

log = logging.getLogger("etl.run")

MAX_WARNINGS_KEPT = 20  # per step; the rest are counted

SUCCESS = "success"
FAILURE = "failure"
PARTIAL_DEPENDENCY = "partial_success_due_to_dependency_failure"
SKIPPED_DEPENDENCY = "skipped_due_to_dependency_failure"
DISABLED = "disabled"


@dataclass
class StepResult:
    step: Step
    status: str = SUCCESS
    start_ms: int = 0
    end_ms: int = 0
    counts: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    warning_count: int = 0
    requests: int = 0
    pages: int = 0
    records: int = 0  # received
    filtered: int = 0  # received, and left out by the step's filter
    skipped_types: set = field(default_factory=set)  # types of which some record built nothing
    incomplete: bool = False  # some data is missing (an on_status 'partial' rule, a truncated pagination)
    incremental: bool = False  # an incremental run: only what changed since the saved state (types upserted)
    first_problem: str | None = None  # the first warning about a record that built less than it should

    @property
    def incomplete_data(self) -> bool:
        """Some of what this step should have produced is missing."""
        return self.incomplete or bool(self.skipped_types) or self.status not in (SUCCESS, DISABLED)

    @property
    def error(self) -> str | None:
        if not self.errors:
            return None
        more = f" (and {len(self.errors) - 1} more; -v logs every one)" if len(self.errors) > 1 else ""
        return self.errors[0] + more

    # Errors and warnings are told once, in the run's summary (format_result, on stdout); as
    # they happen, they are log lines on stderr only when asked for (-v, or -vv for records').

    def fail(self, message: str) -> None:
        self.status = FAILURE
        self.errors.append(message)
        log.info("step %s: %s", self.step.id, message)

    def warn(self, message: str, *, level: int = logging.INFO, cause: bool = False) -> None:
        """A warning about the step. ``cause``: it explains the step's other warnings (they
        follow from it), so it goes first, where the summary shows it."""
        self.warning_count += 1
        if cause:
            self.warnings.insert(0, message)
            del self.warnings[MAX_WARNINGS_KEPT:]
        elif len(self.warnings) < MAX_WARNINGS_KEPT:
            self.warnings.append(message)
        log.log(level, "step %s: warning: %s", self.step.id, message)

    def problem(self, message: str) -> None:
        """A warning about a record (a value that could not be computed, a record skipped):
        a live log line at -vv only, there may be one per record."""
        if self.first_problem is None:
            self.first_problem = message
        self.warn(message, level=logging.DEBUG)

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
    instance: str = ""  # the integration instance the run is (integration.instance, else the integration id)
    upserted_types: list[str] = field(default_factory=list)  # partial by design: incremental steps' types
    state: dict[str, dict] | None = None  # the incremental state saved after the run (None: no incremental step)

    @property
    def exit_code(self) -> int:
        if any(r.status not in (SUCCESS, DISABLED) for r in self.steps) or self.has_losses:
            return EXIT_PARTIAL
        return EXIT_OK

    @property
    def has_losses(self) -> bool:
        """Some type is partial for a reason other than being declared partial."""
        declared_partial = {t for r in self.steps for t in r.step.partial_types}
        lost = set(self.partial_types) - declared_partial - set(self.upserted_types)
        return bool(lost) or any(r.incremental and r.incomplete_data for r in self.steps)


def format_result(result: RunResult) -> str:
    plan = result.plan
    lines = [f"{plan.integration_name} ({plan.path}) -> {result.output}"]
    width = max(len(r.step.id) for r in result.steps) if result.steps else 0
    for step in result.steps:
        counts = ", ".join(f"{t} {n}" for t, n in sorted(step.counts.items())) or "nothing"
        lines.append(f"  {step.step.id:<{width}}  {step.status:<9}  {counts}")
        if step.error:
            lines.append(f"  {'':<{width}}  error: {step.error}")
        if step.warning_count:
            lines.append(f"  {'':<{width}}  {step.warning_count} warning(s); first: {step.warnings[0]}")
    entities = sum(n for s in result.steps for t, n in s.counts.items() if t in _entity_types(plan))
    relationships = sum(n for s in result.steps for n in s.counts.values()) - entities
    lines.append(f"Graph: {entities} entities, {relationships} relationships")
    for note in result.graph_notes:
        lines.append(f"  note: {note}")
    partial = ", ".join(result.partial_types) or "none"
    lines.append(f"Partial datasets: {partial}")
    return "\n".join(lines)


def _entity_types(plan: Plan) -> set[str]:
    return {e.type for s in plan.steps for e in s.entities}
