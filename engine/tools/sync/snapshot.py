"""One consistent run: the directory's shared lock, and what was read pinned and checked."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from ... import output as outputs
from ...errors import (
    OutputDirError,
    OutputError,
    SyncError,
)
from ...output import COLLECTIONS, OutputDir, output_lock

log = logging.getLogger("etl.sync")


@dataclass(frozen=True)
class FileId:
    """What changes when a file is replaced or rewritten (inode numbers alone can be reused)."""

    device: int
    inode: int
    size: int
    mtime_ns: int


def file_id(path: Path) -> FileId | None:
    """The identity of ``path`` now; None when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileId(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _dir_id(path: Path) -> tuple[int, int] | None:
    """A directory's identity: its device and inode (its mtime moves with any file added to it)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class Snapshot:
    """What ``etl sync`` read of an output directory, pinned: the directory itself,
    summary.json (identity and digest) and every graph file (identity), listed once at
    the start. :meth:`check_file` and :meth:`verify` say whether it still holds."""

    def __init__(self, root: Path):
        self.root = root
        self.root_id = _dir_id(root)
        self.summary_path = root / "summary.json"
        self.summary_id = file_id(self.summary_path)
        self.summary_digest = _digest(self.summary_path)
        self.directory = OutputDir.open(root)  # reads summary.json after it was pinned
        self.files: dict[str, list[tuple[Path, FileId | None]]] = {
            collection: [(path, file_id(path)) for path in self.directory.files(collection)]
            for collection in COLLECTIONS
        }
        self.verify_summary()  # nothing changed while summary.json was read and the files listed

    def changed(self, detail: str) -> SyncError:
        return SyncError(
            f"{self.root} changed during the upload: {detail}. Something wrote to it without waiting for its "
            f"lock; the job was aborted rather than finalized with a mix of two runs - sync again once the "
            f"directory holds one finished run"
        )

    def relative(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def verify_root(self) -> None:
        if _dir_id(self.root) != self.root_id:
            raise self.changed("the directory was replaced (it is not the one whose files were listed)")

    def verify_summary(self) -> None:
        self.verify_root()
        if file_id(self.summary_path) is None:
            raise self.changed("summary.json vanished")
        if file_id(self.summary_path) != self.summary_id or _digest(self.summary_path) != self.summary_digest:
            raise self.changed("summary.json was rewritten")

    def check_file(self, path: Path, pinned: FileId | None) -> None:
        """Before and after a graph file is read: is it still the file that was listed?"""
        self.verify_root()
        now = file_id(path)
        if now is None:
            raise self.changed(f"{self.relative(path)} vanished")
        if now != pinned:
            raise self.changed(f"{self.relative(path)} was rewritten")

    def objects(self, collection: str) -> Iterator[dict]:
        """The objects of ``collection``, one pinned file at a time."""
        for path, pinned in self.files[collection]:
            self.check_file(path, pinned)
            try:
                objects = outputs.read_graph_file(path, collection)
            except OutputDirError:
                self.check_file(path, pinned)  # a file that vanished or changed says so
                raise
            self.check_file(path, pinned)
            yield from objects

    def verify(self) -> None:
        """Before finalizing: the directory, summary.json and the list and identity of every graph file."""
        self.verify_summary()
        for collection in COLLECTIONS:
            listed = [path for path, _ in self.files[collection]]
            now = self.directory.files(collection)
            added = sorted(set(now) - set(listed))
            if added:
                names = ", ".join(self.relative(p) for p in added[:3]) + (", ..." if len(added) > 3 else "")
                raise self.changed(f"graph files appeared: {names}")
            for path, pinned in self.files[collection]:
                self.check_file(path, pinned)


def hold_shared_lock(stack: ExitStack, root: Path, wait: float) -> None:
    """Take the shared lock of ``root`` (a run replacing it takes it exclusively), waiting up to
    ``wait`` seconds for a run to finish. Where the lock file cannot be made (a read-only
    parent directory), go on without it: the snapshot's checks still stop a mixed upload."""
    try:
        stack.enter_context(output_lock(root, shared=True, wait=0.0))
        return
    except OutputError:
        pass
    except OSError as exc:
        log.warning(
            "cannot take the lock of %s (%s): uploading without it; a run replacing it meanwhile aborts the job",
            root,
            exc.strerror or exc,
        )
        return
    log.warning("%s is locked: a run is replacing it; waiting up to %.0fs for it to finish", root, wait)
    try:
        stack.enter_context(output_lock(root, shared=True, wait=wait))
    except OutputError as exc:
        raise SyncError(f"{exc} (waited {wait:.0f}s; no job was created)") from None
    log.info("%s: the run finished replacing it; uploading it now", root)
