"""Interpreter settings for the length of ``superfan import``'s bulk call (10^5 rows), restored after.

They change the whole interpreter, so only the import command uses them, never ``superfan run``.
An import of a large file runs in them from its first row read to its last recorded: the rows it
holds are freed by reference counting (reference cycles, which only the collector frees: none at
all over a 400k-row import's batches)."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: The GIL switch interval while a bulk call runs (Python's default is 5 ms).
BULK_SWITCH_INTERVAL_S = 0.0005

_depth = 0
_saved: tuple[bool, float] = (True, 0.005)


@contextmanager
def bulk_mode(on: bool = True) -> Iterator[None]:
    """Hold off the cyclic garbage collector and shorten the GIL switch interval through a bulk call.

    The collector: a collection in the middle of an import walks every one of the call's 10^5-item
    lists (and the caller's items) again and again, and they hold no cycles; once the call returns
    they are freed by reference counting and the next collection finds little.

    The switch interval: a bulk call's inserts run in aiosqlite's thread while this thread works
    out the next slices. Each statement needs the GIL to bind its parameters and to hand back its
    result, and under the default interval it waited up to 5 ms for it each time behind this busy
    thread: a 200k-row import spent 1.9 s in its insert statements, which take 1.1 s run alone.
    At 0.5 ms they take 1.1 s inside the import too. Only waiting threads are affected: with none,
    no switch is forced.

    ``on`` false (a small batch) changes nothing. Bulk calls that overlap (two imports in one
    event loop) share the settings: the first to enter saves them, the last to leave restores them.
    """
    global _depth, _saved
    if not on:
        yield
        return
    if _depth == 0:
        _saved = (gc.isenabled(), sys.getswitchinterval())
        gc.disable()
        sys.setswitchinterval(BULK_SWITCH_INTERVAL_S)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            collector, interval = _saved
            sys.setswitchinterval(interval)
            if collector:
                gc.enable()

