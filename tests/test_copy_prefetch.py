"""The COPY's chunk prefetch: chunks made ahead in a thread, a bounded number at a time, and
an error on either side stops both."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from cimtwin.spatial.bulk import prefetched


def test_items_arrive_in_order_and_all() -> None:
    assert list(prefetched(iter(range(100)), depth=2)) == list(range(100))


def test_the_producer_runs_at_most_depth_ahead() -> None:
    made: list[int] = []

    def items() -> Iterator[int]:
        for i in range(50):
            made.append(i)
            yield i

    stream = prefetched(items(), depth=2)
    assert next(stream) == 0
    time.sleep(0.3)  # room for the thread to run ahead as far as it may
    # the one handed over, two queued, and one made that waits for room
    assert len(made) <= 4
    assert list(stream) == list(range(1, 50))


def test_an_error_while_making_chunks_is_raised_in_the_consumer() -> None:
    def items() -> Iterator[int]:
        yield 1
        raise ValueError("row 7: bad geometry")

    stream = prefetched(items(), depth=1)
    assert next(stream) == 1
    with pytest.raises(ValueError, match="row 7"):
        next(stream)


def test_a_consumer_that_stops_stops_the_producer() -> None:
    """A failed COPY leaves the loop: the thread must not keep making (or hang on) chunks."""

    def items() -> Iterator[int]:
        i = 0
        while True:
            yield i
            i += 1

    before = threading.active_count()
    stream = prefetched(items(), depth=1)
    assert next(stream) == 0
    stream.close()  # what leaving a for loop with an exception does to the generator
    assert threading.active_count() == before
