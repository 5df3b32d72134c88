"""Fan-out: a function over many items, a bounded number at a time, results in input order."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from enum import Enum
from typing import Final, Literal, TypeVar

from ..errors import FetchError

T = TypeVar("T")
R = TypeVar("R")


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
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="etl-fetch") as pool:
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
