"""Fan-out: a function over many items, a bounded number at a time, results in input order.

The calls run on :class:`Workers`, daemon threads that nothing ever waits for: Ctrl-C or
SIGTERM stops a run at once even while a worker is blocked reading a response that never
comes (``concurrent.futures`` executors join their threads on shutdown and again at
interpreter exit, which would hold the run until the read timed out). The prefetch of
the next page (``paginate.py``) runs on them too.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from enum import Enum
from typing import Any, Final, Literal, TypeVar

from ..errors import FetchError

T = TypeVar("T")
R = TypeVar("R")


class Workers:
    """Up to ``size`` daemon threads running submitted calls; :meth:`shutdown` never waits.

    Threads start as calls are submitted (never more threads than calls). On shutdown,
    calls not yet started are cancelled and idle threads end; a call already running is
    abandoned: it finishes (or its read times out) on its own and nobody reads its result.
    """

    def __init__(self, size: int, name: str):
        self.size = max(1, size)
        self.name = name
        self.threads = 0
        self._tasks: queue.SimpleQueue[tuple[Future, Callable[..., Any], tuple] | None] = queue.SimpleQueue()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def submit(self, func: Callable[..., R], *args: Any) -> Future[R]:
        future: Future[R] = Future()
        self._tasks.put((future, func, args))
        if self.threads < self.size:
            self.threads += 1
            threading.Thread(target=self._work, name=f"{self.name}-{self.threads}", daemon=True).start()
        return future

    def shutdown(self) -> None:
        """Cancel what has not started and let idle threads end; do not wait for running calls."""
        while True:
            try:
                task = self._tasks.get_nowait()
            except queue.Empty:
                break
            if task is not None:
                task[0].cancel()
        for _ in range(self.threads):
            self._tasks.put(None)

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            future, func, args = task
            task = None  # no reference cycles through a traceback (the run turns the cycle collector off)
            if future.set_running_or_notify_cancel():
                try:
                    result = func(*args)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
                    del result
            del future, func, args


def ordered_map(func: Callable[[T], R], items: Iterable[T], concurrency: int) -> Iterator[tuple[T, R | FetchError]]:
    """``(item, func(item))`` for every item, in input order, running up to ``concurrency``
    calls at once. A FetchError is returned in place of the result; other exceptions
    propagate. At most ``2 * concurrency`` results wait in memory."""

    def call(item: T) -> R | FetchError:
        try:
            return func(item)
        except FetchError as exc:
            return exc

    if concurrency <= 1:
        for item in items:
            yield item, call(item)
        return
    pending: deque[tuple[T, Future[R | FetchError]]] = deque()
    source = iter(items)
    with Workers(concurrency, "etl-fetch") as pool:
        for item in source:
            pending.append((item, pool.submit(call, item)))
            if len(pending) >= 2 * concurrency:
                break
        while pending:
            item, future = pending.popleft()
            result = future.result()
            following: T | Literal[_End.END] = next(source, _END)
            if following is not _END:
                pending.append((following, pool.submit(call, following)))
            yield item, result


class _End(Enum):
    """The end of the items (a sentinel no item can be, unlike None)."""

    END = 0


_END: Final = _End.END
