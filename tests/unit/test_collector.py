"""`chatms serve` sets the cyclic collector for a long-running server (chatms/collector.py)."""

from __future__ import annotations

import gc

from chatms.collector import YOUNG_COLLECTION_THRESHOLD, tune_collector


def test_startup_objects_are_frozen_and_the_young_generation_waits_longer() -> None:
    before = gc.get_threshold()
    try:
        tune_collector()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
