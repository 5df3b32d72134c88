"""SIGTERM handled like Ctrl-C, so a stopped run or sync cleans up the way an interrupted one does
(the staging directory removed and the previous output kept; a sync job aborted)."""

from __future__ import annotations

import signal
from types import FrameType, TracebackType
from typing import Any


class terminate_as_interrupt:
    """While in this block (on the main thread), SIGTERM raises KeyboardInterrupt."""

    def __enter__(self) -> terminate_as_interrupt:
        def handler(_signum: int, _frame: FrameType | None) -> None:
            raise KeyboardInterrupt

        self.previous: Any = None
        try:
            self.previous = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread: signals cannot be handled here
            self.previous = None
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
