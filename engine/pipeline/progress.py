"""What a run shows on stderr while it goes: per step, its records and pages, against a total
when one is known (an offset ``total`` or a page ``total_pages`` the API declares, a fan-out's
parent count), with the time elapsed and an estimate of the time left.

:func:`open_progress` chooses the display:

- **live**, on an interactive terminal: a rich progress display (a row per step, a bar, the
  counts, the elapsed time and the ETA), redrawn by rich's own thread at most
  :data:`REDRAWS_PER_SECOND` times a second and erased when the run ends. Log lines (``-v``)
  are printed above it.
- **plain**, when stderr is not a terminal or ``TERM=dumb``, ``NO_COLOR`` or ``CI`` is set:
  whole lines, without ``\\r`` or ANSI codes, for logs. A step is told about once it has run
  for :data:`PLAIN_FIRST_LINE_AFTER` seconds, then every :data:`PLAIN_LINE_EVERY` seconds,
  and its end is told if it was; quick steps print nothing (the run's summary lists every
  step), and there is never a line per page.

The runner tells a display when a step starts and ends, the totals the paginator learns and
each parent a fan-out step is done with. The counts are read from the step's result by the
display's own thread: nothing is done per record or per page, shown or not.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from .results import SUCCESS

REDRAWS_PER_SECOND = 4
PLAIN_FIRST_LINE_AFTER = 5.0  # seconds a step runs before plain mode tells about it
PLAIN_LINE_EVERY = 30.0  # seconds between plain progress lines of a step
PLAIN_POLL_SECONDS = 1.0  # how often plain mode's thread looks whether a line is due


def utc_timestamp(epoch: float) -> str:
    """``2026-11-30T14:03:12.345Z``: how log and progress lines give their time (UTC, ms)."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_interactive(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``stream`` may get a live display: a terminal, not ``TERM=dumb``, and neither
    ``NO_COLOR`` nor ``CI`` set (to a non-empty value)."""
    environ = os.environ if environ is None else environ
    if environ.get("TERM") == "dumb" or environ.get("NO_COLOR") or environ.get("CI"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class StepCounts(Protocol):
    """What a display reads of a running step (its :class:`~.results.StepResult`)."""

    records: int
    pages: int


class Progress:
    """The progress of a run as the runner tells it. This one shows nothing and costs nothing;
    :class:`LiveProgress` and :class:`PlainProgress` show it."""

    enabled = False

    def step_started(self, step_id: str, counts: StepCounts, parents: int | None = None) -> None:
        """A step started; ``counts`` grow as it runs. A fan-out step gives its ``parents``
        count, its total."""

    def total_known(self, unit: str, total: float) -> None:
        """The paginator learnt the running step's total: ``records`` or ``pages``."""

    def parent_done(self) -> None:
        """The running fan-out step is done with one more parent."""

    def step_ended(self, status: str, objects: int) -> None:
        """The running step ended with ``status``, having written ``objects`` graph objects."""

    def close(self) -> None:
        """The run ended (or was stopped): stop showing anything."""


def open_progress(stream: TextIO, *, quiet: bool = False, environ: Mapping[str, str] | None = None) -> Progress:
    """The display a run shows on ``stream``: none with ``quiet``, live on an interactive
    terminal, plain lines otherwise (see the module's docstring)."""
    if quiet:
        return Progress()
    if is_interactive(stream, environ):
        return LiveProgress(stream)
    return PlainProgress(stream)


class StepProgress:
    """One step's progress: its counts, and what its total counts (records, pages, parents)."""

    def __init__(self, step_id: str, counts: StepCounts, parents: int | None, started: float):
        self.step_id = step_id
        self.counts = counts
        self.started = started
        self.parents_done = 0
        # (unit, total), replaced as one value: a display's thread reads it while the run goes on
        self.goal: tuple[str, float | None] = ("parents", parents) if parents is not None else ("records", None)

    def know_total(self, unit: str, total: float) -> None:
        if self.goal[0] != "parents":  # a fan-out's children's totals are not the step's
            self.goal = (unit, total)

    def done(self) -> int:
        unit = self.goal[0]
        if unit == "parents":
            return self.parents_done
        return self.counts.pages if unit == "pages" else self.counts.records

    def fraction(self) -> float | None:
        """How much of the known total is done (0 to 1), None without a total."""
        total = self.goal[1]
        if total is None:
            return None
        return 1.0 if total <= 0 else min(1.0, self.done() / total)

    def describe(self) -> str:
        """``1,200 of 48,213 records (2%), 12 pages``; without a total, :meth:`counted`."""
        records, pages = count(self.counts.records, "record"), count(self.counts.pages, "page")
        unit, total = self.goal
        fraction = self.fraction()
        if total is None or fraction is None:
            return self.counted()
        head = f"{self.done():,} of {count(total, unit.removesuffix('s'))} ({fraction:.0%})"
        rest = {"records": [pages], "pages": [records]}.get(unit, [records, pages])
        return ", ".join([head, *rest])

    def counted(self) -> str:
        """``1,200 records, 12 pages``."""
        return f"{count(self.counts.records, 'record')}, {count(self.counts.pages, 'page')}"

    def left(self, elapsed: float) -> float | None:
        """Seconds left at the pace so far (None without a total or before any progress)."""
        fraction = self.fraction()
        if fraction is None or fraction <= 0:
            return None
        return elapsed * (1 - fraction) / fraction


def count(number: float, noun: str) -> str:
    """``1 record``, ``48,213 records``."""
    return f"{number:,.0f} {noun}" + ("" if number == 1 else "s")


def duration(seconds: float) -> str:
    """``12s``, ``3m05s``, ``1h02m``."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class _Display(Progress):
    """What both displays keep: the running step, told its total and its parents done by the
    run's thread, read by the display's own."""

    enabled = True

    def __init__(self) -> None:
        self.step: StepProgress | None = None

    def total_known(self, unit: str, total: float) -> None:
        step = self.step
        if step is not None:
            step.know_total(unit, total)

    def parent_done(self) -> None:
        step = self.step
        if step is not None:
            step.parents_done += 1


class PlainProgress(_Display):
    """Whole lines for logs: ``TIME etl: progress: STEP: 40s elapsed, 12,000 of 48,213 records
    (25%), 12 pages, about 2m left``. A daemon thread looks every :data:`PLAIN_POLL_SECONDS`
    whether a line is due (so a step stuck in a slow request is told about too); with
    ``watch=False`` nothing does, and :meth:`tick` is called by hand (tests). With
    ``first_line_after=0`` every step is told about as it starts."""

    def __init__(
        self,
        stream: TextIO,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        first_line_after: float | None = None,
        line_every: float | None = None,
        watch: bool = True,
    ):
        super().__init__()
        self.stream = stream
        self.clock, self.wall_clock = clock, wall_clock
        self.first_line_after = PLAIN_FIRST_LINE_AFTER if first_line_after is None else first_line_after
        self.line_every = PLAIN_LINE_EVERY if line_every is None else line_every
        self.watch = watch
        self.lock = threading.Lock()  # one line at a time, from the run's thread or the watcher
        self.next_line_at = 0.0
        self.announced = False
        self.stopping = threading.Event()
        self.watcher: threading.Thread | None = None

    def step_started(self, step_id: str, counts: StepCounts, parents: int | None = None) -> None:
        with self.lock:
            now = self.clock()
            self.step = StepProgress(step_id, counts, parents, now)
            self.next_line_at, self.announced = now + self.first_line_after, False
        if self.first_line_after <= 0:
            self.tick()
        if self.watch and self.watcher is None:
            self.watcher = threading.Thread(target=self._watch, name="etl-progress", daemon=True)
            self.watcher.start()

    def tick(self) -> None:
        """Write the running step's progress line if one is due."""
        with self.lock:
            step, now = self.step, self.clock()
            if step is None or now < self.next_line_at:
                return
            self.next_line_at, self.announced = now + self.line_every, True
            elapsed = now - step.started
            left = step.left(elapsed)
            eta = f", about {duration(left)} left" if left is not None else ""
            self._write(f"{step.step_id}: {duration(elapsed)} elapsed, {step.describe()}{eta}")

    def step_ended(self, status: str, objects: int) -> None:
        with self.lock:
            step, self.step = self.step, None
            if step is not None and self.announced:
                elapsed, built = duration(self.clock() - step.started), count(objects, "graph object")
                self._write(f"{step.step_id}: {status} after {elapsed}: {step.counted()}, {built}")

    def close(self) -> None:
        self.stopping.set()
        with self.lock:
            self.step = None

    def _watch(self) -> None:
        while not self.stopping.wait(PLAIN_POLL_SECONDS):
            self.tick()

    def _write(self, text: str) -> None:
        try:
            self.stream.write(f"{utc_timestamp(self.wall_clock())} etl: progress: {text}\n")
            self.stream.flush()
        except (OSError, ValueError):  # stderr went away (a closed pipe): the run goes on
            pass


class LiveProgress(_Display):
    """A rich display on a terminal: a row per step; the running step's row is brought up to
    date each time rich redraws (its own thread, :data:`REDRAWS_PER_SECOND` times a second),
    and the whole display is erased when the run ends."""

    def __init__(self, stream: TextIO):
        from rich.console import Console  # rich is loaded only for a live display
        from rich.live import Live
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Rows
        from rich.table import Column

        super().__init__()
        self.lock = threading.RLock()
        self.task: Any = None  # rich's Task of the running step
        console = Console(file=stream, highlight=False, soft_wrap=True)
        self.rows = Rows(
            TextColumn("{task.description}", style="bold", markup=False),
            BarColumn(bar_width=24),
            TimeElapsedColumn(table_column=Column(no_wrap=True, min_width=7)),
            TextColumn("{task.fields[counts]}", markup=False),
            console=console,
            auto_refresh=False,  # drawn by self.live, never started itself
        )
        self.live = Live(
            console=console,
            get_renderable=self._render,
            refresh_per_second=REDRAWS_PER_SECOND,
            transient=True,
            redirect_stdout=False,  # stdout may be a file or a pipe: the summary goes there untouched
            redirect_stderr=True,  # what is written to stderr meanwhile goes above the display
        )

    def step_started(self, step_id: str, counts: StepCounts, parents: int | None = None) -> None:
        with self.lock:
            self.step = StepProgress(step_id, counts, parents, time.monotonic())
            task_id = self.rows.add_task(step_id, total=parents, counts="")
            self.task = next(t for t in self.rows.tasks if t.id == task_id)
        if not self.live.is_started:
            self.live.start()

    def step_ended(self, status: str, objects: int) -> None:
        with self.lock:
            step, task, self.step = self.step, self.task, None
            if step is None:
                return
            done = max(step.done(), 1)
            outcome = "" if status == SUCCESS else f" ({status})"
            summary = f"{step.counted()}, {count(objects, 'graph object')}{outcome}"
            self.rows.update(task.id, total=done, completed=done, counts=summary)
            self.rows.stop_task(task.id)

    def close(self) -> None:
        with self.lock:
            self.step = None
        if self.live.is_started:
            self.live.stop()

    def _render(self) -> Any:
        """The display as it is now (called by rich, on its thread or the run's)."""
        with self.lock:
            step, task = self.step, self.task
            if step is not None:
                self.rows.update(task.id, total=step.goal[1], completed=step.done())
                left = task.time_remaining if step.goal[1] is not None else None
                eta = f", ETA {duration(left)}" if left is not None else ""
                self.rows.update(task.id, counts=step.describe() + eta)
            return self.rows.get_renderable()
