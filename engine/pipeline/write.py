"""Stage 7: write the graph in JupiterOne's ``.j1-integration`` layout, atomically.

::

    DIR/graph/<stepId>/entities/<uuid>.json        {"entities": [...]}       <= 500 objects, one _type
    DIR/graph/<stepId>/relationships/<uuid>.json   {"relationships": [...]}
    DIR/summary.json

Everything is written to a staging directory next to ``DIR``; only a run that
completes replaces ``DIR`` (see :class:`StagedOutput`). File names are UUIDs derived
from the step, type and batch number, so two runs over the same data give the same tree.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections import Counter
from pathlib import Path

from ..errors import OutputError
from ..jsonio import encode_json
from ..secrets import Redactor

BATCH_SIZE = 500
_NAMESPACE = uuid.UUID("5b0c3c8e-8f7d-4c61-9d1e-6f0a4c7d2e10")


class StagedOutput:
    """A staging directory that replaces ``target`` on :meth:`commit`, or vanishes on :meth:`discard`."""

    def __init__(self, target: Path):
        self.target = target.resolve()
        if self.target.exists() and not is_replaceable(self.target):
            raise OutputError(
                f"{target} exists and is not an etl output directory (it has other files and no summary.json); "
                f"refusing to replace it - choose another --output"
            )
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.staging-", dir=self.target.parent))
        except OSError as exc:
            raise OutputError(f"cannot create the output directory next to {target}: {exc.strerror}") from None

    def commit(self) -> None:
        backup = None
        if self.target.exists():
            backup = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
            os.replace(self.target, backup)
        os.replace(self.path, self.target)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def is_replaceable(path: Path) -> bool:
    if not path.is_dir():
        return False
    entries = [p.name for p in path.iterdir()]
    return not entries or "summary.json" in entries


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
        directory.mkdir(parents=True, exist_ok=True)
        data = encode_json({collection: objects}, pretty=self.pretty)
        (directory / f"{name}.json").write_bytes(self.redactor.bytes(data))

    def write_summary(self, summary: dict) -> None:
        (self.root / "summary.json").write_bytes(self.redactor.bytes(encode_json(summary, pretty=self.pretty)))
