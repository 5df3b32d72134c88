"""What a run shows on stderr while it goes (engine/pipeline/progress.py), and the times on log lines.

- The runner tells the display each step's start and end, the total the paginator learns (an
  offset ``total``, a page ``total_pages``: once, before the first page's records, not per
  page) and each fan-out parent done (the parent count is the step's total) - never a call
  per record or per page.
- Plain mode (stderr not a terminal, TERM=dumb, NO_COLOR, CI): whole timestamped lines, no
  ``\\r`` or ANSI; a step is told about after a few seconds, then every so often, with a
  percentage and the time left when the total is known; quick steps print nothing.
- Live mode (a terminal): a rich display with the step, its counts against the total, and the
  elapsed time, erased at the end.
- ``-v`` log lines start with their UTC time.
"""

from __future__ import annotations

import io
import logging
import re
import sys
import threading
from types import SimpleNamespace

import pytest
from rich.console import Console

from engine.cli.common import setup_logging
from engine.pipeline import progress as progress_module
from engine.pipeline.compile import compile_file
from engine.pipeline.config import resolve_config
from engine.pipeline.progress import (
    LiveProgress,
    PlainProgress,
    Progress,
    StepProgress,
    count,
    duration,
    is_interactive,
    open_progress,
    utc_timestamp,
)
from engine.pipeline.runner import RunOptions, run_plan
from tests.fakes.paging import PagingApi, item_mapping, tags_step, write_mapping

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
ANSI_OR_CR = re.compile(r"\x1b|\r")

OFFSET = {"kind": "offset", "limit": 10, "total": "meta.total"}
PAGES = {"kind": "page", "size": 10, "total_pages": "meta.total_pages"}
CURSOR = {"kind": "cursor", "size": 10, "cursor": "next_cursor"}


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class Recorder(Progress):
    """Every call the runner makes, with the step's counts at that moment."""

    enabled = True

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.counts = SimpleNamespace(records=0, pages=0)

    def step_started(self, step_id, counts, parents=None):
        self.counts = counts
        self.calls.append(("started", step_id, parents))

    def total_known(self, unit, total):
        self.calls.append(("total", unit, total, self.counts.pages))

    def parent_done(self):
        self.calls.append(("parent",))

    def step_ended(self, status, objects):
        self.calls.append(("ended", status, objects, self.counts.records, self.counts.pages))

    def close(self):
        self.calls.append(("closed",))


def run_with(progress: Progress, tmp_path, kind: str, pagination: dict, total: int = 23, **mapping):
    with PagingApi(kind, total) as api:
        path = write_mapping(tmp_path / "m.yaml", item_mapping(pagination, **mapping))
        plan = compile_file(path)
        config = resolve_config(plan, {}, environ={}, dotenv=None)
        options = RunOptions(output=tmp_path / "out", base_urls=((None, api.url),))
        return run_plan(plan, config, options, progress)


# -- what the runner tells ------------------------------------------------------------------------


def test_the_runner_tells_steps_the_declared_total_and_fan_out_parents_never_records(tmp_path):
    recorder = Recorder()
    result = run_with(recorder, tmp_path, "offset", OFFSET, steps_after=[tags_step()])
    assert result.exit_code == 0
    assert recorder.calls == [
        ("started", "fetch-items", None),
        ("total", "records", 23, 0),  # before the first page's records, and only once
        ("ended", "success", 23, 23, 3),
        ("started", "fetch-tags", 23),  # a fan-out's total: its parents
        *[("parent",)] * 23,
        ("ended", "success", 46, 46, 23),
        ("closed",),
    ]


@pytest.mark.parametrize(
    "kind, pagination, told",
    [
        ("page", PAGES, [("total", "pages", 3, 0)]),
        ("cursor", CURSOR, []),  # no declared total: nothing to tell
    ],
)
def test_a_page_count_is_a_total_and_a_cursor_has_none(tmp_path, kind, pagination, told):
    recorder = Recorder()
    run_with(recorder, tmp_path, kind, pagination)
    assert [c for c in recorder.calls if c[0] == "total"] == told
    assert recorder.calls[-2:] == [("ended", "success", 23, 23, 3), ("closed",)]


# -- choosing a display ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "environ, interactive",
    [
        ({}, True),
        ({"TERM": "xterm-256color"}, True),
        ({"TERM": "dumb"}, False),
        ({"NO_COLOR": "1"}, False),
        ({"NO_COLOR": ""}, True),  # set but empty does not count (no-color.org)
        ({"CI": "true"}, False),
    ],
)
def test_live_only_on_a_terminal_that_is_not_dumb_without_no_color_or_ci(environ, interactive):
    assert is_interactive(Terminal(), environ) is interactive
    assert is_interactive(io.StringIO(), environ) is False


def test_a_closed_stream_is_not_a_terminal():
    stream = io.StringIO()
    stream.close()  # its isatty() raises
    assert is_interactive(stream, {}) is False


def test_open_progress_chooses_the_display():
    assert type(open_progress(Terminal(), quiet=True, environ={})) is Progress
    assert type(open_progress(io.StringIO(), environ={})) is PlainProgress
    assert type(open_progress(Terminal(), environ={"CI": "true"})) is PlainProgress
    live = open_progress(Terminal(), environ={})
    assert type(live) is LiveProgress
    live.close()  # never started: nothing to stop


# -- what a step's progress says -------------------------------------------------------------------


@pytest.mark.parametrize(
    "parents, total, records, pages, done, text",
    [
        (None, None, 1200, 12, 0, "1,200 records, 12 pages"),
        (None, ("records", 48213), 12000, 12, 0, "12,000 of 48,213 records (25%), 12 pages"),
        (None, ("pages", 49), 1200, 12, 0, "12 of 49 pages (24%), 1,200 records"),
        (240, ("records", 10), 3400, 130, 120, "120 of 240 parents (50%), 3,400 records, 130 pages"),
        (None, ("records", 1), 1, 1, 0, "1 of 1 record (100%), 1 page"),
        (None, ("records", 20), 30, 3, 0, "30 of 20 records (100%), 3 pages"),  # a total that lied
        (None, ("records", 0), 0, 1, 0, "0 of 0 records (100%), 1 page"),
    ],
)
def test_a_step_describes_its_counts_against_its_total(parents, total, records, pages, done, text):
    step = StepProgress("s", SimpleNamespace(records=records, pages=pages), parents, 0.0)
    step.parents_done = done
    if total is not None:
        step.know_total(*total)  # a fan-out keeps its parent count: children's totals are not the step's
    assert step.describe() == text


def test_time_left_at_the_pace_so_far():
    step = StepProgress("s", SimpleNamespace(records=250, pages=3), None, 0.0)
    assert step.left(10.0) is None  # no total
    step.know_total("records", 1000)
    assert step.left(10.0) == pytest.approx(30.0)
    step.counts.records = 0
    assert step.left(10.0) is None  # no progress yet: no estimate


@pytest.mark.parametrize("seconds, text", [(0.4, "0s"), (12, "12s"), (185, "3m05s"), (3720, "1h02m")])
def test_durations(seconds, text):
    assert duration(seconds) == text


def test_counts_are_grammatical():
    assert (count(1, "record"), count(0, "page"), count(48213, "record")) == ("1 record", "0 pages", "48,213 records")


def test_utc_timestamps():
    assert utc_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert utc_timestamp(1796047392.25) == "2026-11-30T14:03:12.250Z"


# -- plain mode ------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def plain(stream, clock, **options) -> PlainProgress:
    return PlainProgress(
        stream, clock=clock, wall_clock=lambda: 0.0, first_line_after=5, line_every=30, watch=False, **options
    )


def test_plain_mode_tells_a_long_step_now_and_then_and_its_end(tmp_path):
    stream, clock = io.StringIO(), Clock()
    display = plain(stream, clock)
    counts = SimpleNamespace(records=0, pages=0)
    display.step_started("fetch-items", counts)
    display.total_known("records", 48213)
    clock.now += 4.9
    display.tick()
    assert stream.getvalue() == ""  # not yet
    counts.records, counts.pages, clock.now = 12000, 12, 105.0
    display.tick()
    clock.now = 120.0
    display.tick()  # the next line is due 30 s after the first
    counts.records, counts.pages, clock.now = 40000, 40, 135.0
    display.tick()
    counts.records, counts.pages, clock.now = 48213, 49, 141.0
    display.step_ended("success", 48213)
    display.close()
    assert stream.getvalue().splitlines() == [
        "1970-01-01T00:00:00.000Z etl: progress: fetch-items: 5s elapsed, 12,000 of 48,213 records (25%), "
        "12 pages, about 15s left",
        "1970-01-01T00:00:00.000Z etl: progress: fetch-items: 35s elapsed, 40,000 of 48,213 records (83%), "
        "40 pages, about 7s left",
        "1970-01-01T00:00:00.000Z etl: progress: fetch-items: success after 41s: 48,213 records, 49 pages, "
        "48,213 graph objects",
    ]


def test_plain_mode_says_nothing_of_a_quick_step():
    stream, clock = io.StringIO(), Clock()
    display = plain(stream, clock)
    display.step_started("fetch-users", SimpleNamespace(records=5, pages=1))
    clock.now += 4.0
    display.tick()
    display.step_ended("success", 5)
    display.close()
    assert stream.getvalue() == ""


def test_plain_mode_without_a_total_has_no_estimate():
    stream, clock = io.StringIO(), Clock()
    display = plain(stream, clock)
    display.step_started("fetch-users", SimpleNamespace(records=70, pages=7))
    clock.now += 6
    display.tick()
    assert stream.getvalue() == "1970-01-01T00:00:00.000Z etl: progress: fetch-users: 6s elapsed, 70 records, 7 pages\n"


def test_plain_mode_tells_a_step_stuck_in_a_request(monkeypatch):
    """The display's own thread tells about a step while the run's thread is blocked."""
    monkeypatch.setattr(progress_module, "PLAIN_POLL_SECONDS", 0.01)
    written = threading.Event()

    class Stream(io.StringIO):
        def write(self, text):
            result = super().write(text)
            written.set()
            return result

    stream = Stream()
    display = PlainProgress(stream, first_line_after=0.05)
    display.step_started("fetch-items", SimpleNamespace(records=0, pages=0))
    try:
        assert written.wait(10), "the watcher never wrote"
    finally:
        display.close()
    assert re.fullmatch(rf"{STAMP} etl: progress: fetch-items: \d+s elapsed, 0 records, 0 pages\n", stream.getvalue())


def test_a_run_on_a_pipe_prints_whole_lines_and_nothing_for_quick_steps(etl, tmp_path, monkeypatch):
    mapping = write_mapping(tmp_path / "m.yaml", item_mapping(OFFSET, steps_after=[tags_step()]))
    with PagingApi("offset", 23) as api:
        quick = etl("run", mapping, "--base-url", api.url, "--output", tmp_path / "out")
        monkeypatch.setattr(progress_module, "PLAIN_FIRST_LINE_AFTER", 0)  # every step told as it starts
        told = etl("run", mapping, "--base-url", api.url, "--output", tmp_path / "out")
    assert quick.exit_code == 0 and quick.stderr == ""
    assert told.exit_code == 0, told.stderr
    assert not ANSI_OR_CR.search(told.stderr)
    lines = [re.sub(r"\b\d+s\b", "Ns", re.sub(STAMP, "TIME", line)) for line in told.stderr.splitlines()]
    assert lines == [
        "TIME etl: progress: fetch-items: Ns elapsed, 0 records, 0 pages",
        "TIME etl: progress: fetch-items: success after Ns: 23 records, 3 pages, 23 graph objects",
        "TIME etl: progress: fetch-tags: Ns elapsed, 0 of 23 parents (0%), 0 records, 0 pages",
        "TIME etl: progress: fetch-tags: success after Ns: 46 records, 23 pages, 46 graph objects",
    ]


def test_quiet_shows_no_progress(etl, tmp_path, monkeypatch):
    monkeypatch.setattr(progress_module, "PLAIN_FIRST_LINE_AFTER", 0)
    mapping = write_mapping(tmp_path / "m.yaml", item_mapping(OFFSET))
    with PagingApi("offset", 23) as api:
        result = etl("run", mapping, "--base-url", api.url, "--output", tmp_path / "out", "--quiet")
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""


# -- live mode -------------------------------------------------------------------------------------


def rendered(renderable) -> str:
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def test_live_mode_shows_the_running_step_against_its_total():
    display = LiveProgress(Terminal())
    counts = SimpleNamespace(records=50, pages=5)
    try:
        display.step_started("fetch-items", counts)
        assert "fetch-items" in rendered(display._render())
        assert "50 records, 5 pages" in rendered(display._render())
        display.total_known("records", 200)
        row = rendered(display._render())
        assert "50 of 200 records (25%), 5 pages" in row
        assert re.search(r"\d:\d\d:\d\d", row)  # the elapsed time
        display.step_ended("success", 50)
        display.step_started("fetch-tags", SimpleNamespace(records=0, pages=0), parents=50)
        rows = rendered(display._render()).splitlines()
        assert "50 records, 5 pages, 50 graph objects" in rows[0]  # the finished step stays, with its totals
        assert "0 of 50 parents (0%), 0 records, 0 pages" in rows[1]
    finally:
        display.close()


def test_a_run_on_a_terminal_draws_with_rich_and_erases_the_display(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: the row is one line
    terminal, stderr = Terminal(), sys.stderr
    result = run_with(LiveProgress(terminal), tmp_path, "offset", OFFSET)
    assert result.exit_code == 0
    drawn = terminal.getvalue()
    assert drawn.startswith("\x1b[?25l")  # the cursor hidden while drawing
    assert "fetch-items" in drawn and "23 records, 3 pages, 23 graph objects\n" in drawn  # the last frame
    assert drawn.endswith("\x1b[?25h\r\x1b[1A\x1b[2K")  # the cursor shown again, the display's line erased
    assert sys.stderr is stderr  # while drawing, stderr went through the display; given back


# -- log lines -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "verbose, timestamps, stamped",
    [(0, False, False), (1, False, True), (2, False, True), (0, True, True)],
)
def test_log_lines_carry_a_utc_time_with_v_or_on_a_schedule(monkeypatch, verbose, timestamps, stamped):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)  # the handler writes to sys.stderr as it is at the time
    setup_logging(verbose, False, timestamps=timestamps)
    logging.getLogger("etl.test").warning("something to see")
    line = stream.getvalue()
    if stamped:
        assert re.fullmatch(rf"{STAMP} etl: WARNING: something to see\n", line), line
    else:
        assert line == "etl: WARNING: something to see\n"


def test_every_line_of_a_verbose_run_starts_with_its_time(etl, tmp_path):
    mapping = write_mapping(tmp_path / "m.yaml", item_mapping(OFFSET))
    with PagingApi("offset", 23) as api:
        result = etl("run", mapping, "--base-url", api.url, "--output", tmp_path / "out", "-v")
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) >= 4  # the step, and a line per request
    assert all(re.match(rf"{STAMP} etl: (INFO|DEBUG|WARNING): ", line) for line in lines), lines
