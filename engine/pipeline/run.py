"""A run as a user asks for one: compile the mapping, resolve its config, replay or record
HTTP, treat SIGTERM like Ctrl-C, and hand the plan to the :class:`~.runner.Runner`.

:func:`run_mapping` is what every command that runs a mapping calls (``etl run``,
``preview``, ``coverage``, ``explain``); it raises :class:`~engine.errors.EtlError`.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EtlError, RunInterrupted, UsageError, ValueProblem
from ..lang.functions import to_epoch_ms
from ..secrets import Redactor, log_redaction
from ..signals import terminate_as_interrupt
from .compile import compile_file
from .config import parse_assignments, resolve_config
from .plan import Plan
from .progress import Progress
from .results import RunResult
from .runner import Observer, RunOptions, run_plan


@dataclass(frozen=True)
class RunRequest:
    """What the shared run options of the command line asked for."""

    mapping: Path
    config_pairs: tuple[str, ...] = ()
    base_urls: tuple[str, ...] = ()  # "URL" or "SOURCE=URL"
    cassette: Path | None = None
    record_mode: str | None = None
    offline: bool = False
    steps: tuple[str, ...] = ()
    concurrency: int = 8
    as_of: str | None = None
    verbose: int = 0
    quiet: bool = False


def run_mapping(
    request: RunRequest,
    *,
    output: Path,
    pretty: bool = False,
    observer: Observer | None = None,
    record_limit: int | None = None,
) -> tuple[Plan, RunResult, Redactor]:
    """Compile, configure and run a mapping as ``request`` says; raises EtlError."""
    try:
        plan = compile_file(request.mapping)
        for step_id in request.steps:
            if step_id not in {s.id for s in plan.steps}:
                raise UsageError(f"--step: {request.mapping} has no step '{step_id}'")
        cassette_path, mode, defaults = replay_settings(plan, request.cassette, request.record_mode, request.offline)
        as_of = request.as_of
        if as_of is None and request.offline and plan.offline is not None:
            as_of = plan.offline.as_of
        config = resolve_config(
            plan,
            parse_assignments(list(request.config_pairs)),
            defaults=defaults,
            secret_placeholders=cassette_path is not None and mode == "none",
        )
        redactor = config.redactor
        log_redaction.use(redactor)
        options = RunOptions(
            output=output,
            base_urls=parse_base_urls(request.base_urls),
            steps=request.steps,
            pretty=pretty,
            concurrency=1 if cassette_path is not None else request.concurrency,
            now=parse_time(as_of, "--as-of"),
            record_limit=record_limit,
            prefetch=cassette_path is None and record_limit is None,
        )
        with cassette_context(cassette_path, mode, redactor), terminate_as_interrupt():
            progress = Progress(sys.stderr, enabled=sys.stderr.isatty() and not request.quiet and not request.verbose)
            result = run_plan(plan, config, options, progress, observer)
    except KeyboardInterrupt:
        raise RunInterrupted("interrupted; the previous output was left untouched") from None
    return plan, result, redactor


def replay_settings(
    plan: Plan, cassette_path: Path | None, record_mode: str | None, offline: bool
) -> tuple[Path | None, str, dict[str, Any]]:
    """(cassette, record mode, config defaults) for --cassette / --record-mode / --offline.

    Recording (``--record-mode once|all``) into the mapping's own ``offline.cassette`` writes
    where the mapping says: only inside the mapping's repository (see
    :func:`check_cassette_inside_repository`). Replaying reads it from anywhere."""
    if offline:
        if plan.offline is None:
            raise EtlError(f"{plan.path} has no 'offline' section naming a bundled cassette; use --cassette")
        mode = record_mode or "none"
        if cassette_path is None and mode != "none":
            check_cassette_inside_repository(plan.offline.cassette, Path(plan.path), mode)
        return cassette_path or plan.offline.cassette, mode, dict(plan.offline.config)
    if record_mode and cassette_path is None:
        raise UsageError("--record-mode needs --cassette")
    return cassette_path, record_mode or "none", {}


def mapping_repository(mapping: Path) -> Path:
    """The repository a mapping file belongs to: the nearest directory above it holding
    ``.git`` (a directory, or a file in a worktree), else the mapping's own directory."""
    directory = mapping.resolve().parent
    for candidate in (directory, *directory.parents):
        if (candidate / ".git").exists():
            return candidate
    return directory


def check_cassette_inside_repository(cassette: Path, mapping: Path, mode: str) -> None:
    """Refuse to record the mapping's cassette outside the mapping's repository: a mapping
    from elsewhere must not make ``--offline --record-mode`` write files where it likes."""
    root = mapping_repository(mapping)
    if not cassette.resolve().is_relative_to(root):
        raise UsageError(
            f"--record-mode {mode} --offline would write the mapping's cassette {cassette}, which is outside "
            f"the mapping's repository ({root}); refusing. Record with --cassette PATH instead, or point "
            "offline.cassette inside the repository"
        )


def parse_base_urls(values: tuple[str, ...]) -> tuple[tuple[str | None, str], ...]:
    """``--base-url`` values as (source name or None for the default source, URL)."""
    out: list[tuple[str | None, str]] = []
    for value in values:
        name, sep, url = value.partition("=")
        if sep and "://" not in name:
            out.append((name, url))
        else:
            out.append((None, value))
    return tuple(out)


def parse_time(text: str | None, option: str) -> int | None:
    """An ISO-8601 time given as ``option``, in epoch milliseconds (None stays None)."""
    if text is None:
        return None
    try:
        value = to_epoch_ms(text)
    except ValueProblem:
        value = None
    if value is None:
        raise UsageError(f"{option}: {text!r} is not an ISO-8601 time")
    return value


def cassette_context(path: Path | None, mode: str, redactor: Redactor) -> AbstractContextManager[Any]:
    """Route HTTP through the cassette at ``path`` (nothing without one)."""
    if path is None:
        return nullcontext()
    from ..http.cassette import cassette  # vcrpy is only loaded when a cassette is used

    return cassette(path, mode, redactor)
