"""The ordered pool (engine/pipeline/fanout.py) that fan-outs, accounts, detail requests and
export files go through: results in input order whatever finishes first, a bounded number
of calls at once and of values waiting, errors where they belong, producers that stop when
their reader does."""

from __future__ import annotations

import threading
import time

import pytest

from engine.errors import FetchError
from engine.pipeline.fanout import ordered_map, ordered_streams


def test_ordered_map_keeps_the_input_order_and_bounds_the_calls():
    running, most = 0, 0
    lock = threading.Lock()

    def slow_first(n: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02 * (10 - n))  # the first items take longest
        with lock:
            running -= 1
        return n * n

    results = list(ordered_map(slow_first, range(10), concurrency=3))
    assert results == [(n, n * n) for n in range(10)]
    assert 1 < most <= 3


def test_ordered_map_returns_a_fetch_error_in_place_and_goes_on():
    def call(n: int) -> int:
        if n == 2:
            raise FetchError("item 2 failed")
        return n

    results = list(ordered_map(call, range(5), concurrency=2))
    assert [item for item, _ in results] == [0, 1, 2, 3, 4]
    assert isinstance(results[2][1], FetchError) and results[3][1] == 3


def test_ordered_map_yields_what_was_read_before_the_items_failed():
    """Reading the items (a generator of records, say) raises after three: the three results
    come first, then the error."""

    def items():
        yield from (1, 2, 3)
        raise ValueError("the listing broke")

    seen = []
    with pytest.raises(ValueError, match="the listing broke"):
        for item, result in ordered_map(lambda n: n * 10, items(), concurrency=4):
            seen.append((item, result))
    assert seen == [(1, 10), (2, 20), (3, 30)]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_ordered_streams_reads_each_stream_whole_in_input_order(concurrency):
    def stream(n: int):
        for i in range(n):
            time.sleep(0.001 * (5 - n))
            yield (n, i)

    out = [(item, list(values)) for item, values in ordered_streams(stream, [3, 0, 5, 1], concurrency)]
    assert out == [(3, [(3, 0), (3, 1), (3, 2)]), (0, []), (5, [(5, i) for i in range(5)]), (1, [(1, 0)])]


def test_ordered_streams_runs_producers_ahead_but_only_a_few_values_ahead():
    produced: dict[int, int] = {0: 0, 1: 0}

    def stream(n: int):
        for i in range(1000):
            produced[n] += 1
            yield i

    streams = ordered_streams(stream, [0, 1], concurrency=2, buffer=4)
    first, values = next(streams)
    assert (first, next(values)) == (0, 0)
    time.sleep(0.3)  # both producers run, until their buffers are full
    assert produced[0] <= 1 + 4 + 1 and produced[1] <= 4 + 1
    assert produced[1] > 0  # the second stream was started before the first was read
    streams.close()


def test_ordered_streams_raises_an_error_where_its_stream_reached_it():
    def stream(n: int):
        yield f"{n}a"
        if n == 1:
            raise FetchError("account 1 failed after one page")
        yield f"{n}b"

    seen, errors = [], []
    for item, values in ordered_streams(stream, [0, 1, 2], concurrency=3):
        try:
            seen.extend(values)
        except FetchError as exc:
            errors.append((item, str(exc)))
    assert seen == ["0a", "0b", "1a", "2a", "2b"]
    assert errors == [(1, "account 1 failed after one page")]


def test_ordered_streams_stops_the_producers_of_a_reader_that_leaves():
    stopped = threading.Event()

    def endless(n: int):
        try:
            while True:
                yield n
        finally:
            stopped.set()  # closed: the producer noticed that nobody reads any more

    streams = ordered_streams(endless, [7, 8], concurrency=2, buffer=2)
    item, values = next(streams)
    assert (item, next(values)) == (7, 7)
    streams.close()
    assert stopped.wait(5)
