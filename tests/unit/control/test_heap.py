"""The head's garbage collector: long-lived objects frozen, thawed and collected now and
then (a full collection over a big head's every object stalled its loop)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from cluster.control.fakes import FakeClock
from cluster.control.heap import Heap


class Cycle:
    """Garbage only the cyclic collector frees."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_what_survived_is_frozen_and_cyclic_garbage_waits_for_the_thaw() -> None:
    clock = FakeClock()
    heap = Heap(clock, freeze_s=30, thaw_s=900)
    gc.unfreeze()
    cycle = Cycle()
    alive = weakref.ref(cycle)
    heap.tick()
    assert gc.get_freeze_count() == 0  # nothing is due yet
    clock.advance(30)
    heap.tick()
    assert gc.get_freeze_count() > 0  # the cycle (and the rest) is frozen
    del cycle
    gc.collect()
    assert alive() is not None  # frozen: a full collection does not look at it
    clock.advance(870)
    heap.tick()
    assert alive() is None and heap.thaws == 1  # thawed, collected, frozen again
    assert gc.get_freeze_count() > 0


def test_young_cyclic_garbage_is_collected_before_a_freeze() -> None:
    clock = FakeClock()
    heap = Heap(clock, freeze_s=30, thaw_s=900)
    gc.unfreeze()
    cycle = Cycle()
    alive = weakref.ref(cycle)
    del cycle
    clock.advance(30)
    heap.tick()
    assert alive() is None
