"""Stage 7: write the graph in JupiterOne's ``.j1-integration`` layout, atomically.

::

    DIR/graph/<stepId>/entities/<uuid>.json        {"entities": [...]}       <= 500 objects, one _type
    DIR/graph/<stepId>/relationships/<uuid>.json   {"relationships": [...]}
    DIR/summary.json
    DIR/.etl-output                                the marker: written by etl (its version); DIR may be replaced

Everything is written to a staging directory next to ``DIR``; only a run that
completes replaces ``DIR`` (see :class:`StagedOutput`). File names are UUIDs derived
from the step, type and batch number, so two runs over the same data give the same tree.

Replacing ``DIR`` safely (:class:`StagedOutput`):

* **One run at a time.** A run holds the exclusive lock of ``DIR``
  (:func:`engine.output.output_lock`, the lock file ``.DIR.lock`` beside it) from before it
  looks at ``DIR`` until ``DIR`` is replaced or the run is abandoned; ``etl sync`` holds the
  same lock shared while it uploads. A run does not wait for it (:data:`LOCK_WAIT` is 0): if
  another run or a sync holds it, the run stops at once with an :class:`OutputError` (exit 5)
  naming the lock file and the process holding it. Two runs into one directory would do the
  same work twice, and a scheduled run is better retried at its next time than queued
  behind a sync of unknown length.
* **Nothing stranded.** The swap is two renames: ``DIR`` to ``.DIR.old-<pid>``, then the
  staging directory ``.DIR.staging-<pid>-<random>`` to ``DIR``; then the backup is removed.
  A run killed between them leaves ``DIR`` missing and the previous output in the backup:
  the next run (under the lock, before anything else) renames the backup back to ``DIR``
  (and removes a backup left beside an existing ``DIR``, and the staging directories of
  processes that no longer exist).
* **Only our own directories are replaced.** ``DIR`` is replaced if it does not exist, is
  empty, or carries the marker ``.etl-output`` and holds nothing but what etl writes there
  (``graph/``, ``summary.json``, the marker, and ``index.html`` from ``etl visualize``).
  A directory with a ``summary.json`` and no marker (the output of an older etl, or of
  JupiterOne's ``j1-integration``) or with anyone else's files is refused with a message
  saying what to do; nothing in it is touched.
* **The user's umask.** Directories and files are created with the default modes, so the
  umask decides (0755 and 0644 under umask 022), as with any other program.
* **Failures are messages.** A full disk, an unwritable directory or an output path that
  is a file is an :class:`OutputError` (exit 5) naming the path and the reason; the
  previous output is left as it was.

Keys holding a secret: every file is redacted (:meth:`~engine.secrets.Redactor.bytes`),
which would turn two keys into one (``u:SECRET`` and ``u:[REDACTED]``). So before a file
is redacted, each key in it that holds a secret (or the redaction marker itself) is
replaced by the redacted key plus a digest of the original (see :class:`KeyRedaction`),
in the ``_key`` of its object and in every reference to it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import json
import os
import re
import shutil
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import OutputError
from ..jsonio import encode_json
from ..output import output_lock, pid_alive
from ..secrets import REDACTED, Redactor

BATCH_SIZE = 500
_NAMESPACE = uuid.UUID("5b0c3c8e-8f7d-4c61-9d1e-6f0a4c7d2e10")

MARKER = ".etl-output"
# What etl writes into an output directory: a directory holding anything else is not replaced.
OWN_ENTRIES = frozenset({"graph", "summary.json", MARKER, "index.html"})
LOCK_WAIT = 0.0  # seconds a run waits for the lock of its output directory (see the module's docstring)


class StagedOutput:
    """A staging directory that replaces ``target`` on :meth:`commit`, or vanishes on :meth:`discard`.

    From its creation until :meth:`commit` or :meth:`discard` it holds the exclusive lock of
    ``target``; see the module's docstring for what it guarantees."""

    def __init__(self, target: Path):
        self.given = target
        self.target = target.resolve()
        self.locks = ExitStack()
        blocker = next((p for p in self.target.parents if os.path.lexists(p)), None)
        if blocker is not None and not blocker.is_dir():
            raise OutputError(f"cannot write the output directory {target}: {blocker} is a file, not a directory")
        try:
            try:
                self.locks.enter_context(output_lock(self.target, shared=False, wait=LOCK_WAIT))
            except OSError as exc:  # the lock file cannot be made: neither can the output
                raise OutputError(f"cannot write the output directory {target}: {_reason(exc)}") from None
            recover(self.target)
            check_replaceable(self.target, target)
            self.path: Path = self._make_staging()
        except BaseException:
            self.locks.close()
            raise

    def _make_staging(self) -> Path:
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            while True:
                path = self.target.with_name(f".{self.target.name}.staging-{os.getpid()}-{os.urandom(4).hex()}")
                try:
                    path.mkdir()  # mode 0777 less the umask, as the directory it becomes
                    break
                except FileExistsError:
                    continue
            (path / MARKER).write_text(
                f"etl {__version__}\n"
                "This directory is an output of `etl run`; the next run into it replaces it whole.\n"
            )
        except OSError as exc:
            raise OutputError(f"cannot create the output directory {self.given}: {_reason(exc)}") from None
        return path

    def commit(self) -> None:
        """Replace ``target`` with the staging directory (two renames), then release the lock."""
        backup = None
        try:
            check_replaceable(self.target, self.given)  # again: something may have been put there meanwhile
            if os.path.lexists(self.target):
                backup = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
                os.rename(self.target, backup)
            os.rename(self.path, self.target)
        except BaseException as exc:
            if backup is not None and not os.path.lexists(self.target):
                with contextlib.suppress(OSError):  # if it fails, the next run restores it
                    os.rename(backup, self.target)  # put the previous output back
            self.discard()
            if isinstance(exc, OSError):
                raise OutputError(f"cannot replace the output directory {self.given}: {_reason(exc)}") from None
            raise
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
        self.locks.close()

    def discard(self) -> None:
        """Remove the staging directory and release the lock; ``target`` is left as it was."""
        try:
            shutil.rmtree(self.path, ignore_errors=True)
        finally:
            self.locks.close()


def check_replaceable(path: Path, given: Path | None = None) -> None:
    """Raise :class:`OutputError` unless ``path`` may be replaced by a run (see the module's docstring)."""
    name = given if given is not None else path
    if not os.path.lexists(path):
        return
    if not path.is_dir():
        raise OutputError(
            f"{name} exists and is a file, not a directory; refusing to replace it - choose another --output"
        )
    try:
        entries = {entry.name for entry in os.scandir(path)}
    except OSError as exc:
        raise OutputError(f"cannot read the output directory {name}: {_reason(exc)}") from None
    if not entries:
        return
    if MARKER not in entries:
        if "summary.json" in entries:
            raise OutputError(
                f"{name} has a summary.json but no {MARKER} marker: it was written by an older etl or another "
                f"tool (such as JupiterOne's j1-integration), so refusing to replace it - delete it (or move it "
                f"away) and run again, or choose another --output"
            )
        raise OutputError(
            f"{name} exists and is not an etl output directory (it has other files and no {MARKER} marker); "
            f"refusing to replace it - choose another --output"
        )
    foreign = sorted(entries - OWN_ENTRIES)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise OutputError(
            f"{name} is an etl output directory but also holds files etl did not write ({shown}); refusing to "
            f"replace it (which would delete them) - move them away, or choose another --output"
        )


def recover(target: Path) -> None:
    """Undo what a killed run left beside ``target`` (call it holding the exclusive lock).

    A backup ``.NAME.old-<pid>`` is a previous output: restored if ``target`` is missing (a run
    was killed between its two renames), removed otherwise (killed before removing it).
    A staging directory ``.NAME.staging-<pid>-*`` of a process that no longer exists (or of
    this one: no other run of it holds the lock) is removed."""
    parent = target.parent
    backups, stale = [], []
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(old|staging)-(\d+)(-[0-9a-f]+)?")
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return  # no parent yet, or unreadable: nothing to recover (and the run says why it cannot write)
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False):
            continue
        pid = int(match.group(2))
        if match.group(1) == "old" and match.group(3) is None:
            backups.append(Path(entry.path))
        elif match.group(1) == "staging" and match.group(3) and (pid == os.getpid() or not pid_alive(pid)):
            stale.append(Path(entry.path))
    backups.sort(key=lambda p: p.stat().st_mtime)
    try:
        if backups and not os.path.lexists(target):
            os.rename(backups.pop(), target)  # the newest backup is the last output
    except OSError as exc:
        raise OutputError(f"cannot restore the previous output {target} from {backups[-1]}: {_reason(exc)}") from None
    for path in backups + stale:
        shutil.rmtree(path, ignore_errors=True)


class KeyRedaction:
    """Keys holding a secret, made distinct and stable before a file is redacted.

    Redacting a file replaces each secret with ``[REDACTED]``, so the keys ``u:SECRET`` and
    ``u:[REDACTED]``, or two keys holding two different secrets, would be written as one. So
    a key that holds a secret, or the marker ``[REDACTED]`` itself, is written as the
    redacted key, ``~`` and 16 hex digits of a digest of the original key: HMAC-SHA256 keyed
    with the secrets it holds (the digest reveals nothing of them, and does not change from
    run to run while the secrets do not), or SHA-256 for a key holding the marker only.
    Every key with the marker in the output is one of these, distinct from every other key
    (no ordinary key holds the marker) and from each other (a clash, which would take a
    64-bit coincidence, lengthens the digest). The same key is always written the same way,
    so the ``_key`` of an object and every reference to it (``_fromEntityKey``,
    ``_toEntityKey``, ``_mapping.sourceEntityKey``, ``_mapping.targetEntity._key``) agree.
    Only keys like these are remembered, so memory does not grow with the graph.
    """

    def __init__(self, redactor: Redactor):
        self.redactor = redactor
        self.written: dict[str, str] = {}  # original key -> key written
        self.originals: dict[str, str] = {}  # key written -> original key

    def needed(self, data: bytes, redacted: bytes) -> bool:
        """Whether a file (``data``, and ``redacted``, what redaction made of it) may hold such keys."""
        return (redacted is not data and redacted != data) or _MARKER_BYTES in data

    def apply(self, objects: list[dict]) -> list[dict]:
        """``objects`` with their keys and references rewritten where needed (copies; the rest as they are)."""
        return [self.rewrite(obj) for obj in objects]

    def rewrite(self, obj: dict) -> dict:
        changed: dict[str, Any] = {}
        for name in ("_key", "_fromEntityKey", "_toEntityKey"):
            value = obj.get(name)
            if isinstance(value, str) and self.affected(value):
                changed[name] = self.key(value)
        mapping = obj.get("_mapping")
        if isinstance(mapping, dict):
            source, target = mapping.get("sourceEntityKey"), mapping.get("targetEntity")
            new_mapping = None
            if isinstance(source, str) and self.affected(source):
                new_mapping = {**mapping, "sourceEntityKey": self.key(source)}
            if isinstance(target, dict) and isinstance(target.get("_key"), str) and self.affected(target["_key"]):
                new_mapping = {**(new_mapping or mapping), "targetEntity": {**target, "_key": self.key(target["_key"])}}
            if new_mapping is not None:
                changed["_mapping"] = new_mapping
        return {**obj, **changed} if changed else obj

    def affected(self, key: str) -> bool:
        return REDACTED in key or self.redactor(key) != key

    def key(self, original: str) -> str:
        """The key written for ``original``."""
        known = self.written.get(original)
        if known is not None:
            return known
        held = [s for s in self.redactor.secrets if s in original]
        raw = original.encode("utf-8", "surrogatepass")
        if held or self.redactor(original) != original:
            secret = "\0".join(sorted(held or self.redactor.secrets)).encode("utf-8", "surrogatepass")
            digest = hmac.new(secret, raw, hashlib.sha256).hexdigest()
        else:
            digest = hashlib.sha256(raw).hexdigest()
        base, length = self.redactor(original), 16
        while True:
            candidate = f"{base}~{digest[:length]}"
            clash = self.originals.get(candidate)
            if (clash is None or clash == original) and self.redactor(candidate) == candidate:
                break
            length += 4
            if length > len(digest):  # a secret inside the digest itself, or a clash at full length
                digest, length = hashlib.sha256(digest.encode()).hexdigest() + digest, 16
        self.written[original] = candidate
        self.originals[candidate] = original
        return candidate


_MARKER_BYTES = REDACTED.encode()


class GraphWriter:
    """Buffers graph objects per (step, collection, _type) and writes full batches as they fill."""

    def __init__(self, root: Path, redactor: Redactor, *, pretty: bool = False, batch_size: int = BATCH_SIZE):
        self.root = root
        self.redactor = redactor
        self.pretty = pretty
        self.batch_size = batch_size
        self.buffers: dict[tuple[str, str, str], list[dict]] = {}
        self.batches: dict[tuple[str, str, str], int] = {}
        self.written: Counter = Counter()  # (step, _type) -> objects written
        self.keys = KeyRedaction(redactor)

    def add(self, step_id: str, collection: str, obj: dict) -> None:
        slot = (step_id, collection, obj["_type"])
        buffer = self.buffers.get(slot)
        if buffer is None:
            buffer = self.buffers[slot] = []
        buffer.append(obj)
        if len(buffer) >= self.batch_size:
            self._write(slot)

    def objects(self, step_id: str) -> int:
        """Objects the step added so far, written or still buffered (for progress)."""
        written = sum(n for (step, _), n in self.written.items() if step == step_id)
        return written + sum(len(b) for (step, _, _), b in self.buffers.items() if step == step_id)

    def counts(self, step_id: str) -> Counter:
        """Objects of each _type the step wrote (after flush_step: all of them)."""
        return Counter({graph_type: n for (step, graph_type), n in self.written.items() if step == step_id})

    def flush_step(self, step_id: str) -> None:
        for slot in [s for s in self.buffers if s[0] == step_id]:
            self._write(slot)

    def _write(self, slot: tuple[str, str, str]) -> None:
        objects = self.buffers.pop(slot, [])
        if not objects:
            return
        step_id, collection, graph_type = slot
        self.written[(step_id, graph_type)] += len(objects)
        number = self.batches.get(slot, 0)
        self.batches[slot] = number + 1
        name = uuid.uuid5(_NAMESPACE, f"{step_id}/{collection}/{graph_type}/{number}")
        directory = self.root / "graph" / step_id / collection
        data = self._encode({collection: objects})
        redacted = self.redactor.bytes(data)
        if self.redactor and self.keys.needed(data, redacted):
            data = self._encode({collection: self.keys.apply(objects)})
            redacted = self.redactor.bytes(data)
        self._write_file(directory / f"{name}.json", redacted)

    def write_summary(self, summary: dict) -> None:
        self._write_file(self.root / "summary.json", self.redactor.bytes(self._encode(summary)))

    def _encode(self, value: Any) -> bytes:
        try:
            return encode_json(value, pretty=self.pretty)
        except UnicodeEncodeError:  # a lone surrogate (JSON allows one, UTF-8 does not): escaped
            return json.dumps(value, indent=2 if self.pretty else None).encode()

    def _write_file(self, path: Path, data: bytes) -> None:
        """Write one file of the output; a failure (a full disk, say) is an :class:`OutputError`."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except OSError as exc:
            raise OutputError(
                f"cannot write the output directory {_target_of(self.root)}: {_reason(exc)}; "
                f"the previous output was left as it was"
            ) from None


def _target_of(root: Path) -> Path:
    """The output directory a staging directory becomes (``root`` itself if it is not one)."""
    match = re.fullmatch(r"\.(.+)\.staging-\d+-[0-9a-f]+", root.name)
    return root.with_name(match.group(1)) if match else root


def _reason(exc: OSError) -> str:
    """An OSError in words: its message, and what to do for the usual ones."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason += " (free some space, or choose another --output)"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason += " (choose an --output you can write to)"
    if exc.filename and str(exc.filename) not in reason:
        reason = f"{exc.filename}: {reason}"
    return reason
