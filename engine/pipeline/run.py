"""A run as a user asks for one: compile the mapping, resolve its config, replay or record
HTTP, treat SIGTERM like Ctrl-C, and hand the plan to the :class:`~.runner.Runner`.

:func:`run_mapping` is what every command that runs a mapping calls (``etl run``,
``preview``, ``coverage``, ``explain``); it raises :class:`~engine.errors.EtlError`.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from ..errors import EtlError, RunInterrupted, UsageError, ValueProblem
from ..lang.functions import to_epoch_ms
from ..secrets import Redactor, log_redaction
from ..signals import terminate_as_interrupt
from .compile import compile_file
from .config import parse_assignments, resolve_config
from .observer import Observer
from .plan import OfflineReplay, Plan
from .progress import open_progress
from .results import RunResult
from .runner import RunOptions, run_plan
from .state import FileState, StateOptions, state_file


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
    full_refresh: bool = False  # ignore the saved incremental state: every incremental step runs in full


def run_mapping(
    request: RunRequest,
    *,
    output: Path,
    pretty: bool = False,
    observer: Observer | None = None,
    record_limit: int | None = None,
    state: StateOptions | None = None,
) -> tuple[Plan, RunResult, Redactor]:
    """Compile, configure and run a mapping as ``request`` says; raises EtlError.

    Incremental state is read from, and written to, the state file beside ``output``
    (``.<output name>.state.json``) unless ``state`` says otherwise (a preview reads the
    state of the default output and writes none; ``--store`` reads the store's)."""
    try:
        plan = compile_file(request.mapping)
        for step_id in request.steps:
            if step_id not in {s.id for s in plan.steps}:
                raise UsageError(f"--step: {request.mapping} has no step '{step_id}'")
        overrides = parse_assignments(list(request.config_pairs))
        cassette_path, mode, defaults, recorded_at, bundled = replay_settings(
            plan, request.cassette, request.record_mode, request.offline, overrides
        )
        as_of = request.as_of if request.as_of is not None else recorded_at
        config = resolve_config(
            plan,
            overrides,
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
            bundled_cassette=bundled,
            state=file_state(output, request.full_refresh) if state is None else state,
        )
        with cassette_context(cassette_path, mode, redactor), terminate_as_interrupt():
            progress = open_progress(sys.stderr, quiet=request.quiet)  # live on a terminal, else plain lines
            result = run_plan(plan, config, options, progress, observer)
    except KeyboardInterrupt:
        raise RunInterrupted("interrupted; the previous output was left untouched") from None
    return plan, result, redactor


class ReplaySettings(NamedTuple):
    """How a run replays or records HTTP, as --cassette / --record-mode / --offline ask."""

    cassette: Path | None
    mode: str  # none (replay only), once or all
    defaults: dict[str, Any]  # the config the cassette was recorded with (--offline)
    as_of: str | None  # the clock of the recording (--offline), for when --as-of is not given
    bundled: bool  # the cassette is one the mapping's offline section names


def replay_settings(
    plan: Plan,
    cassette_path: Path | None,
    record_mode: str | None,
    offline: bool,
    overrides: Mapping[str, str] = MappingProxyType({}),
) -> ReplaySettings:
    """The cassette, record mode, config defaults and clock for --cassette / --record-mode /
    --offline. With --offline, the config (``overrides``: --config, then the environment,
    .env and the offline config) may choose another of the mapping's bundled cassettes
    (``offline.by_config``); ``--cassette`` naming one of them replays it with its config and
    clock.

    Recording (``--record-mode once|all``) into the mapping's own cassette writes where the
    mapping says: only inside the mapping's repository (see
    :func:`check_cassette_inside_repository`). Replaying reads it from anywhere."""
    bundled = plan.offline.cassettes if plan.offline is not None else frozenset()
    if offline:
        if plan.offline is None:
            raise EtlError(f"{plan.path} has no 'offline' section naming a bundled cassette; use --cassette")
        replay = named_replay(plan, cassette_path) or offline_replay(plan, overrides)
        mode = record_mode or "none"
        if cassette_path is None and mode != "none":
            check_cassette_inside_repository(replay.cassette, Path(plan.path), mode)
        cassette = cassette_path or replay.cassette
        return ReplaySettings(cassette, mode, dict(replay.config), replay.as_of, cassette.resolve() in bundled)
    if record_mode and cassette_path is None:
        raise UsageError("--record-mode needs --cassette")
    is_bundled = cassette_path is not None and cassette_path.resolve() in bundled
    return ReplaySettings(cassette_path, record_mode or "none", {}, None, is_bundled)


def named_replay(plan: Plan, cassette_path: Path | None) -> OfflineReplay | None:
    """The bundled replay (cassette, config, clock) whose cassette ``--cassette`` names, if any."""
    assert plan.offline is not None
    if cassette_path is None:
        return None
    replays = (plan.offline.default, *(choice.replay for choice in plan.offline.choices))
    return next((r for r in replays if r.cassette == cassette_path.resolve()), None)


def offline_replay(plan: Plan, overrides: Mapping[str, str]) -> OfflineReplay:
    """The bundled cassette an --offline run replays: the one the config chooses
    (``offline.by_config``), else the section's own."""
    assert plan.offline is not None
    fields = plan.offline.choice_fields
    if not fields:
        return plan.offline.default
    values = choosing_values(plan, overrides, fields)
    chosen = plan.offline.choices_for(values)
    if len(chosen) > 1:
        said = " and ".join(f"{c.field}={shown_value(values[c.field])} chooses {c.replay.cassette}" for c in chosen)
        raise UsageError(
            f"--offline: {len(chosen)} bundled cassettes fit this run's config ({plan.path}, offline.by_config): "
            f"{said}; pass --cassette with the one to replay"
        )
    return chosen[0].replay if chosen else plan.offline.default


def shown_value(value: Any) -> str:
    """A config value as it is written on the command line (booleans as true/false)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def choosing_values(plan: Plan, overrides: Mapping[str, str], fields: tuple[str, ...]) -> Mapping[str, Any]:
    """The values the run will give the config ``fields`` (never secret: compile checks it),
    resolved as the run resolves them, with the offline config as defaults."""
    assert plan.offline is not None
    only = dataclasses.replace(plan, config_fields=tuple(f for f in plan.config_fields if f.name in fields))
    given = {name: value for name, value in overrides.items() if name in fields}
    return resolve_config(only, given, defaults=dict(plan.offline.config)).values


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


def file_state(output: Path, full_refresh: bool, *, write: bool = True) -> StateOptions:
    """Incremental state in the file beside ``output``: read (unless ``full_refresh``), and
    written after the run when ``write``."""
    path = state_file(output)
    return StateOptions(source=FileState(path), file=path if write else None, full_refresh=full_refresh)


def cassette_context(path: Path | None, mode: str, redactor: Redactor) -> AbstractContextManager[Any]:
    """Route HTTP through the cassette at ``path`` (nothing without one)."""
    if path is None:
        return nullcontext()
    from ..http.cassette import cassette  # vcrpy is only loaded when a cassette is used

    return cassette(path, mode, redactor)
