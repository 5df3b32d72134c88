"""A one-line progress display on stderr for long runs: step, pages, records, graph objects.

Shown only on a terminal (and not with --quiet or -v, whose log lines it would garble);
updated at most a few times a second, and erased when the run ends.
"""

from __future__ import annotations

import time
from typing import TextIO

REFRESH_SECONDS = 0.2


class Progress:
    def __init__(self, stream: TextIO, *, enabled: bool):
        self.stream = stream
        self.enabled = enabled
        self.shown = False
        self.last = 0.0

    def update(self, step_id: str, pages: int, records: int, objects: int, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < REFRESH_SECONDS:
            return
        self.last = now
        text = f"{step_id}: {pages} page{'s' if pages != 1 else ''}, {records} records, {objects} graph objects"
        self.stream.write(f"\r\x1b[K{text}")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False
