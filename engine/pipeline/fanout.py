"""Fan-out: a function over many items, a bounded number at a time, results in input order
(:func:`ordered_map`), or the streams of values of many items, read in input order while the
next ones are produced, each a bounded number of values ahead (:func:`ordered_streams`).

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
from itertools import islice
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
    propagate. At most ``2 * concurrency`` results wait in memory.

    ``items`` is read ahead of the results, on the caller's thread; when reading it raises
    an exception, the results of the items read before are yielded first, then it is raised.
    """

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
    source = _Ahead(items)
    with Workers(concurrency, "etl-fetch") as pool:
        while len(pending) < 2 * concurrency and (item := source.next()) is not _END:
            pending.append((item, pool.submit(call, item)))
        while pending:
            item, future = pending.popleft()
            result = future.result()
            following = source.next()
            if following is not _END:
                pending.append((following, pool.submit(call, following)))
            yield item, result
    source.raise_failure()


class _Ahead:
    """An iterator read ahead: its items, then ``_END`` for good - also when reading it
    raised, which :meth:`raise_failure` raises later (after the items read before it)."""

    def __init__(self, items: Iterable[T]):
        self.source: Iterator[T] | None = iter(items)
        self.failure: Exception | None = None

    def next(self) -> Any:
        if self.source is None:
            return _END
        try:
            return next(self.source)
        except StopIteration:
            self.source = None
        except Exception as exc:
            self.source, self.failure = None, exc
        return _END

    def raise_failure(self) -> None:
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure


def ordered_streams(
    func: Callable[[T], Iterable[R]], items: Iterable[T], concurrency: int, buffer: int = 4
) -> Iterator[tuple[T, Iterator[R]]]:
    """``(item, the values of func(item))`` for every item, in input order: while the caller
    reads one item's values, those of the next ``concurrency - 1`` items are produced, each
    at most ``buffer`` values ahead, so memory stays bounded however long a stream is. An
    exception of ``func`` is raised in the caller's reading, where its stream reached it.

    The caller reads (some of) each item's values before asking for the next item; what it
    leaves unread is dropped, and its producer stops. With ``concurrency`` 1 everything runs
    on the caller's thread."""
    if concurrency <= 1:
        for item in items:
            values = iter(func(item))
            try:
                yield item, values
            finally:
                _close(values)
        return
    pending: deque[tuple[T, _Stream]] = deque()
    source = iter(items)
    with Workers(concurrency, "etl-stream") as pool:
        try:
            for item in islice(source, concurrency):
                pending.append((item, _Stream.start(pool, func, item, buffer)))
            while pending:
                item, stream = pending.popleft()
                try:
                    yield item, stream.read()
                finally:
                    stream.stop()
                following: T | Literal[_End.END] = next(source, _END)
                if following is not _END:
                    pending.append((following, _Stream.start(pool, func, following, buffer)))
        finally:
            for _, stream in pending:
                stream.stop()


class _Stream:
    """The values of one call, produced on a worker into a bounded queue and read in order."""

    def __init__(self, buffer: int):
        self.queue: queue.Queue[tuple[str, Any]] = queue.Queue(max(1, buffer))
        self.stopped = threading.Event()

    @classmethod
    def start(cls, pool: Workers, func: Callable[[T], Iterable[R]], item: T, buffer: int) -> _Stream:
        stream = cls(buffer)
        pool.submit(stream.produce, func, item)
        return stream

    def produce(self, func: Callable[[T], Iterable[R]], item: T) -> None:
        """On a worker: every value of ``func(item)``, then the end (or what it raised)."""
        values: Iterator[R] | None = None
        try:
            values = iter(func(item))
            for value in values:
                if not self._put(("value", value)):
                    return
            self._put(("end", None))
        except Exception as exc:
            self._put(("raised", exc))
        finally:
            if values is not None:
                _close(values)

    def _put(self, event: tuple[str, Any]) -> bool:
        """Queue ``event`` when there is room; False when the reader stopped meanwhile."""
        while not self.stopped.is_set():
            try:
                self.queue.put(event, timeout=_STOP_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def read(self) -> Iterator[Any]:
        while True:
            kind, value = self.queue.get()
            if kind == "value":
                yield value
            elif kind == "end":
                return
            else:
                raise value

    def stop(self) -> None:
        self.stopped.set()


_STOP_POLL_SECONDS = 0.1  # how soon a producer waiting for room notices that its reader stopped


def _close(values: Iterator[Any]) -> None:
    close = getattr(values, "close", None)
    if close is not None:
        close()


class _End(Enum):
    """The end of the items (a sentinel no item can be, unlike None)."""

    END = 0


_END: Final = _End.END
