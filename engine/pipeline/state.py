"""Incremental runs: the high-water mark of a step, saved per integration instance.

A step with ``incremental`` passes its saved state to its requests as ``state``
(``state.since``: the largest ``mark`` seen by the last successful run; ``state.last_run``:
when that run started, epoch ms). A run that used a saved state fetched only what changed:
its types are partial (upserted, nothing deleted downstream). After a run, a step's state
advances only if the step succeeded with complete data, and only over records whose objects
were written; otherwise the state it had is kept.

A step that runs once per account or per parent entity (``accounts``, ``for_each``) keeps a
mark per unit (:class:`StepMarks`), under ``units`` by the unit's name (the account, the
parent's ``_key``): an account or parent that appears later is fetched in full, never
``since`` a mark another one reached; a unit absent from a run keeps its mark.

State lives beside the output directory, as ``.<output name>.state.json`` (written
atomically, after the output is committed), and in the graph store when ``etl run --store``
loads the run (``engine/store/state.py``). :class:`StateSource` is what a run reads it from.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import OutputError, ValueProblem
from ..jsonio import shown
from ..lang.functions import to_epoch_ms
from ..lang.values import Scope
from .plan import Incremental, Step

log = logging.getLogger("etl.run")

STATE_VERSION = 1


class StateSource(Protocol):
    """Where a run reads the saved state of its instance (a file, or the graph store)."""

    label: str

    def read(self, integration: str, instance: str) -> dict[str, dict]:
        """Step id -> its saved state (``since``, ``lastRun``, ``mark``, ``compare``); {} when none."""
        ...


@dataclass(frozen=True)
class StateOptions:
    """How a run uses incremental state: where it reads it (None: nowhere - every step runs in
    full), where it writes the file after the output is committed (None: nowhere, as in a
    preview), and whether ``--full-refresh`` ignores what was saved."""

    source: StateSource | None = None
    file: Path | None = None
    full_refresh: bool = False


def state_file(output: Path) -> Path:
    """The state file of an output directory: ``out/graph`` -> ``out/.graph.state.json``."""
    output = Path(output)
    return output.parent / f".{output.name or 'output'}.state.json"


class FileState:
    """The state file beside an output directory."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.label = str(self.path)

    def read(self, integration: str, instance: str) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("the state file %s cannot be read (%s); every incremental step runs in full", self.path, exc)
            return {}
        if not isinstance(data, dict) or not isinstance(data.get("steps"), dict):
            log.warning("the state file %s is not a state file; every incremental step runs in full", self.path)
            return {}
        if data.get("integration") != integration or data.get("instance") != instance:
            log.warning(
                "the state file %s is of %s/%s, not %s/%s; every incremental step runs in full",
                self.path,
                data.get("integration"),
                data.get("instance"),
                integration,
                instance,
            )
            return {}
        return {str(k): v for k, v in data["steps"].items() if isinstance(v, dict)}

    def write(self, integration: str, instance: str, steps: Mapping[str, dict]) -> None:
        """Replace the file atomically (a temporary file renamed over it)."""
        data = {"version": STATE_VERSION, "integration": integration, "instance": instance, "steps": dict(steps)}
        text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=self.path.name + ".", dir=self.path.parent)
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:
            raise OutputError(f"cannot write the incremental state {self.path}: {exc}") from None


def usable(step: Step, saved: dict | None) -> dict | None:
    """The saved state of ``step`` if it was saved for the mark and comparison the step has now
    (a state of another mark means nothing to it)."""
    spec = step.incremental
    if spec is None or not saved:
        return None
    mark = spec.mark.source if spec.mark is not None else None
    if saved.get("mark") != mark or saved.get("compare", "time") != spec.compare:
        log.warning("step %s: the saved state was of another mark or comparison; this run is in full", step.id)
        return None
    return saved


def template_state(saved: dict | None) -> dict[str, Any]:
    """What request templates see as ``state`` (``saved``: the step's state, or a unit's)."""
    saved = saved or {}
    return {"since": saved.get("since"), "last_run": saved.get("lastRun")}


def unit_state(saved: dict | None, unit: str | None) -> dict | None:
    """The saved state of one unit of a step (``unit``: its name; None: the step has no units).
    A state saved before units were kept holds one mark for all: every unit uses it once."""
    if saved is None or unit is None:
        return saved
    units = saved.get("units")
    return saved if units is None else units.get(unit)


# -- the mark -----------------------------------------------------------------------------------


def comparable(compare: str, value: Any) -> Any:
    """The key ``value`` is compared by (``time``: epoch ms; ``number``; ``string``), or None when
    it is not one of those (it is then not counted)."""
    if value is None or isinstance(value, bool):
        return None
    if compare == "time":
        try:
            return to_epoch_ms(value)
        except ValueProblem:
            return None
    if compare == "number":
        if isinstance(value, (int, float)):
            return value
        try:
            return float(value) if isinstance(value, str) else None
        except ValueError:
            return None
    return value if isinstance(value, str) else None


class MarkTracker:
    """The largest ``mark`` of a step's written records (compared as ``compare`` says)."""

    def __init__(self, spec: Incremental, saved: dict | None, options: Any, warn: Callable[[str], None]):
        self.spec = spec
        self.options = options
        self.warn = warn
        self.best: Any = None
        self.key: Any = None
        self.unreadable = 0
        if saved is not None:  # the next mark is never before the saved one
            self.consider(saved.get("since"))

    def see(self, record: Any) -> None:
        """A record whose objects were written."""
        if self.spec.mark is None:
            return
        try:
            value = self.spec.mark.evaluate(Scope(record, {}, self.options))
        except Exception:  # a function given the wrong type by an odd record
            value = object()
        if value is not None and not self.consider(value):
            self.unreadable += 1
            if self.unreadable == 1:
                self.warn(
                    f"incremental.mark ({self.spec.mark.source}) gave {shown(value, 60)}, which is not a "
                    f"{self.spec.compare}; such records do not move the mark"
                )

    def consider(self, value: Any) -> bool:
        key = comparable(self.spec.compare, value)
        if key is None:
            return False
        try:
            if self.key is None or key > self.key:
                self.best, self.key = value, key
        except TypeError:
            return False
        return True


class StepMarks:
    """The marks of one step this run: one :class:`MarkTracker`, or one per unit (an account,
    a parent entity) for a step that runs once per unit. Each starts from the unit's saved
    mark, so a mark never goes back."""

    def __init__(
        self, spec: Incremental, saved: dict | None, per_unit: bool, options: Any, warn: Callable[[str], None]
    ):
        self.spec, self.saved, self.per_unit, self.options, self.warn = spec, saved, per_unit, options, warn
        self.trackers: dict[str | None, MarkTracker] = {}

    def see(self, record: Any, unit: str | None) -> None:
        """A record of ``unit`` (None for a step without units) whose objects were written."""
        key = unit if self.per_unit else None
        tracker = self.trackers.get(key)
        if tracker is None:
            tracker = self.trackers[key] = MarkTracker(self.spec, unit_state(self.saved, key), self.options, self.warn)
        tracker.see(record)


def advanced(step: Step, saved: dict | None, marks: StepMarks, started_ms: int) -> dict:
    """The state a step saves after a complete, successful run: its mark (or each unit's; the
    units this run did not see keep theirs)."""
    spec = step.incremental
    assert spec is not None
    state: dict[str, Any] = {
        "lastRun": started_ms,
        "mark": spec.mark.source if spec.mark is not None else None,
        "compare": spec.compare,
    }
    if not marks.per_unit:
        state["since"] = _since(marks.trackers.get(None), saved)
        return state
    units = dict((saved or {}).get("units") or {})
    for unit, tracker in marks.trackers.items():
        assert unit is not None  # a step with units names each
        units[unit] = {"since": _since(tracker, unit_state(saved, unit)), "lastRun": started_ms}
    state["units"] = units
    return state


def _since(tracker: MarkTracker | None, saved: dict | None) -> Any:
    """The mark this run reached, or the saved one when it saw none."""
    if tracker is not None and tracker.key is not None:
        return tracker.best
    return (saved or {}).get("since")
