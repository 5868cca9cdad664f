"""The garbage collector's settings for long work: a replay of the log, a running service.

What lives for the whole run (modules, schemas, prebuilt statements) is frozen out of the
collector's sight, so a full collection walks only what the work made: a running service's
pauses were tens of ms shorter (docs/performance.md, third round).

A replay also makes thousands of short-lived containers per batch (messages, payloads, models,
statement parameters) that are still alive when CPython's default collects the youngest objects,
every 700 allocations: that was a third of a replay's CPU (measured with the collector on and
off, docs/performance.md, fourth round). A replay collects them every ``YOUNG`` allocations
instead: about what the batch it holds makes (``rebuild.BATCH``; two on PostgreSQL, one decoded
while one is written), so a collection comes a few times per replay rather than once per batch,
each walking the whole batch (~5 µs per event for scheduling at 10,000 and batches of 500; the
fifth round). A service keeps the default: its events come a few
at a time, and a larger young generation would lengthen each pause on the path whose p99 is a
target, where no gain was measured.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

YOUNG = 100_000


def settle() -> None:
    """For a started service: freeze what starting made."""
    gc.collect()
    gc.freeze()


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
