"""Python's cyclic garbage collector, set for a long-running server (once started)."""

from __future__ import annotations

import gc

# Net new container objects before the youngest generation is collected (Python's is 700).
# A turn frees what it made by reference counting (tests/garbage.py), so a collection
# mostly walks objects still in use: at 700 a load of 500 turns paid for 50-60 of them,
# at 5 000 for one or two (bench/BENCHMARKS.md, fourth round of issue 16).
YOUNG_COLLECTION_THRESHOLD = 5_000


def tune_collector() -> None:
    """Python's cyclic collector, set for a long-running server: what start-up built (it
    lives as long as the process) is kept out of its full passes, which otherwise walk all
    of it again (20-40 ms here), and its youngest generation is collected less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])
