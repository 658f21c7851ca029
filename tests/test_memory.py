"""The allocator and collector settings an import runs under (cimtwin.memory)."""

from __future__ import annotations

import gc
import weakref

import pytest

from cimtwin import memory


def test_fewer_collections_freezes_and_restores() -> None:
    before_threshold = gc.get_threshold()
    before_frozen = gc.get_freeze_count()
    with memory.fewer_collections():
        assert gc.get_threshold()[0] == memory.BULK_GEN0_THRESHOLD
        assert gc.get_threshold()[1:] == before_threshold[1:]
        assert gc.get_freeze_count() > before_frozen  # what was alive is out of the scans
    assert gc.get_threshold() == before_threshold
    assert gc.get_freeze_count() == 0


def test_cyclic_garbage_is_still_collected() -> None:
    """Cycles made during the bulk work are freed by a collection; they only wait longer."""

    class Node:
        pass

    with memory.fewer_collections():
        a, b = Node(), Node()
        a.other, b.other = b, a
        alive = weakref.ref(a)
        del a, b
        gc.collect()
        assert alive() is None


def test_settings_restored_after_an_error() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), memory.fewer_collections():
        raise RuntimeError("import failed")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
