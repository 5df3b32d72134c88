"""Read an output directory of ``etl run`` (or of JupiterOne's ``j1-integration collect``).

::

    DIR/summary.json                               steps, statuses, metadata.partialDatasets.types
    DIR/graph/<stepId>/entities/<name>.json        {"entities": [...]}
    DIR/graph/<stepId>/relationships/<name>.json   {"relationships": [...]}

Every tool that reads a run (diff, alerts, sync, visualize, schedules) reads it here.
:meth:`OutputDir.open` checks the summary; :meth:`OutputDir.objects` streams the graph
objects of a collection one file at a time (steps in the summary's order, then any other
by name), so memory holds one file, not the graph. Every problem is an
:class:`~engine.errors.OutputDirError` naming the file.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import OutputDirError, OutputError
from .jsonio import decode_json

COLLECTIONS = ("entities", "relationships")
RAW_DATA = "_rawData"
_HINT = "; give a directory written by `etl run MAPPING --output DIR`"


@dataclass(frozen=True)
class OutputDir:
    """An output directory whose ``summary.json`` was read and checked."""

    path: Path
    graph: Path  # where the step directories are (path/graph, or path itself for a bare graph folder)
    summary: dict
    steps: tuple[dict, ...]  # summary.json's integrationStepResults
    partial_types: frozenset[str]

    @classmethod
    def open(cls, path: Path, role: str = "", *, summary_required: bool = True) -> OutputDir:
        """Check that ``path`` is an output directory and read its summary. ``role`` ("OLD",
        "NEW") starts messages. Without ``summary_required``, a directory without
        ``summary.json`` (a bare ``graph/`` folder, say) reads as a run with no metadata."""
        label = f"{role} " if role else ""
        if not path.exists():
            raise OutputDirError(f"{label}{path} does not exist{_HINT}")
        if not path.is_dir():
            raise OutputDirError(f"{label}{path} is not a directory{_HINT}")
        summary_path = path / "summary.json"
        if not summary_path.is_file():
            if summary_required:
                raise OutputDirError(f"{label}{path} is not an etl output directory: it has no summary.json{_HINT}")
            graph = path / "graph" if (path / "graph").is_dir() else path
            return cls(path, graph, {}, (), frozenset())
        summary = read_json(summary_path)
        steps = summary.get("integrationStepResults") if isinstance(summary, dict) else None
        if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
            raise OutputDirError(f"{summary_path} is not a run summary (no integrationStepResults list of steps)")
        partial: Any = summary.get("metadata", {})
        for name in ("partialDatasets", "types"):
            partial = partial.get(name, {} if name == "partialDatasets" else []) if isinstance(partial, dict) else None
        if not isinstance(partial, list) or not all(isinstance(t, str) for t in partial):
            raise OutputDirError(f"{summary_path}: metadata.partialDatasets.types is not a list of type names")
        return cls(path, path / "graph", summary, tuple(steps), frozenset(partial))

    @property
    def started_ms(self) -> int | None:
        """When the run started (its earliest step start), in epoch ms, if the summary says."""
        starts = [s.get("startTime") for s in self.steps]
        times: list[int] = [t for t in starts if isinstance(t, int) and not isinstance(t, bool)]
        return min(times) if times else None

    def files(self, collection: str) -> list[Path]:
        """The graph files of one collection: steps in summary.json's order, then any other, by name."""
        if not self.graph.is_dir():
            return []
        order = {str(s.get("id")): n for n, s in enumerate(self.steps)}
        step_dirs = sorted(
            (p for p in self.graph.iterdir() if p.is_dir()), key=lambda p: (order.get(p.name, len(order)), p.name)
        )
        return [f for d in step_dirs for f in sorted((d / collection).glob("*.json")) if f.is_file()]

    def objects(self, collection: str, drop: frozenset[str] = frozenset()) -> Iterator[dict]:
        """Every object of ``collection``, one file at a time, without the ``drop``ped properties."""
        for path in self.files(collection):
            objects = read_graph_file(path, collection)
            if drop:
                yield from ({k: v for k, v in obj.items() if k not in drop} for obj in objects)
            else:
                yield from objects

    def all_objects(self, drop: frozenset[str] = frozenset()) -> Iterator[tuple[str, dict]]:
        """``(collection, object)`` for every entity, then every relationship."""
        for collection in COLLECTIONS:
            for obj in self.objects(collection, drop):
                yield collection, obj


def read_graph_file(path: Path, collection: str) -> list[dict]:
    """The objects of one graph file, each checked to be a graph object (a string _key and _type)."""
    data = read_json(path)
    objects = data.get(collection) if isinstance(data, dict) and len(data) == 1 else None
    if not isinstance(objects, list):
        raise OutputDirError(f'{path} is not a graph file of {collection} (expected {{"{collection}": [...]}})')
    for number, obj in enumerate(objects):
        if not isinstance(obj, dict) or not isinstance(obj.get("_key"), str) or not isinstance(obj.get("_type"), str):
            raise OutputDirError(
                f"{path}: {collection}[{number}] is not a graph object (an object with a string _key and _type)"
            )
    return objects


def read_json(path: Path) -> Any:
    """One JSON file of an output directory."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise OutputDirError(f"{path}: cannot read it: {exc.strerror}") from None
    try:
        return decode_json(content)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise OutputDirError(f"{path}: cannot read it as JSON ({reason}); is it compressed or cut short?") from None


# -- the lock of an output directory ----------------------------------------------------------


def lock_path(directory: Path) -> Path:
    """The lock file of an output directory: ``.<name>.lock`` beside it (it survives the swap)."""
    resolved = directory.resolve()
    return resolved.with_name(f".{resolved.name}.lock")


@contextmanager
def output_lock(directory: Path, *, shared: bool, wait: float = 0.0) -> Iterator[None]:
    """Hold the lock of ``directory``: exclusive while a run replaces it, shared while a reader
    (``etl sync``) needs one consistent run. Waits up to ``wait`` seconds for the other holder,
    then raises :class:`OutputError` naming what holds it (its process id, when the holder
    wrote it into the lock file). The lock file cannot be made: ``OSError``.

    The lock file is removed by the last holder to leave, so a run leaves nothing beside the
    directory; a process that locked a file removed meanwhile locks the new one instead."""
    path = lock_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait
    mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(handle, mode)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise OutputError(_locked_message(directory, path, shared)) from None
                    time.sleep(0.05)
            if _same_file(handle, path):
                break
        except BaseException:
            os.close(handle)
            raise
        os.close(handle)  # its last holder removed it as we locked it: lock the one there now
    try:
        _note_holder(handle)
        yield
    finally:
        _release(handle, path, shared)


def _same_file(handle: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(handle)
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


def _note_holder(handle: int) -> None:
    """Write this process's id into the lock file, for the message of whoever finds it locked."""
    try:
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # a hint only


def _release(handle: int, path: Path, shared: bool) -> None:
    """Unlock; the last holder removes the lock file (a shared holder is the last if it can
    take the lock exclusively on its way out)."""
    try:
        if shared:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another reader still holds it
        if _same_file(handle, path):
            path.unlink(missing_ok=True)
    except OSError:
        pass  # the file stays: harmless
    finally:
        os.close(handle)  # closing releases the lock


def _locked_message(directory: Path, path: Path, shared: bool) -> str:
    what = "a run is replacing it" if shared else "another etl command is using it"
    holder = lock_holder(path)
    by = f": process {holder}" if holder is not None else ""
    return f"{directory} is locked ({what}{by}; lock file {path}); try again when it has finished"


def lock_holder(path: Path) -> int | None:
    """The process id written in a lock file, if that process is alive."""
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (it may belong to another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
