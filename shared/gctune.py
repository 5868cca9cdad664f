"""The garbage collector's settings for long work: a running service, a replay of the log.

Both make many short-lived containers per event (messages, headers, decoded models, statement
parameters). CPython's default collects the youngest objects every 700 allocations; here that
was a third of a rebuild's CPU (measured with the collector on and off, docs/performance.md),
so the youngest generation is collected every ``YOUNG`` allocations instead: collections an
order of magnitude rarer, each over the few objects still alive (most die by reference count
first). What lives for the whole run (modules, schemas, prebuilt statements) is frozen out of
the collector's sight, so a full collection walks only what the work made.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

YOUNG = 10_000


def settle() -> None:
    """For a started service: freeze what starting made, and collect the young less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, *gc.get_threshold()[1:])


@contextlib.contextmanager
def batch_job() -> Iterator[None]:
    """The same for one long job inside a process that goes on after it (a replay), undone after."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(YOUNG, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
