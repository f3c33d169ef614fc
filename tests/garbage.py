"""What only the cyclic collector could free: objects left in reference cycles.

chatms frees a finished turn or connection by reference counting alone. What waits for the
collector waits for its full passes, which walk the whole heap (tens of milliseconds in
the benchmark's chatms process) and land in bursts of requests (bench/BENCHMARKS.md).
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cyclic_garbage() -> Iterator[list[object]]:
    """The collector is off inside the block; once it is left, the list holds what the
    block left in cycles (collected here with DEBUG_SAVEALL, so it can be looked at)."""
    gc.collect()
    gc.disable()
    found: list[object] = []
    try:
        yield found
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def kinds(objects: list[object], *modules: str) -> Counter[str]:
    """How many objects of each type defined in `modules` (a prefix: "chatms.")."""
    names = (f"{type(o).__module__}.{type(o).__qualname__}" for o in objects)
    return Counter(name for name in names if name.startswith(modules))
