"""Micro-benchmark: a rebuild's batch of writes on PostgreSQL, as COPY (``pgcopy``) and as executemany.

``python -m tests.benchmarks.batchwrites [--copies 160] [--rounds 6] [--services intake,meeting]`` groups
``--copies`` copies of the interleaved three-case test log (``tests/unit/test_projection_batches``:
every table of every service; 25 events a copy, fresh case and meeting ids each) into one batch of
writes per service (``WriteBatch``, as ``ProjectionStore.apply_batch`` does) and runs it into the
service's emptied, migrated schema in a PostgreSQL database of its own at 127.0.0.1:5432 (dropped at
the end), one transaction per run. Per round, alternating which goes first, it runs the batch

- ``copy``: as the code does: an INSERT's group of many rows as ``COPY … FROM STDIN``, an upsert's
  through its stage;
- ``executemany``: every group as psycopg's ``executemany``, as before the seventh round (the
  baseline, the same statements and parameters otherwise).

It prints, per service, the median over the rounds of the CPU (``time.process_time``, this process:
psycopg's work) and wall time (the server's work too) per event, in µs, and the ratio of each.
No figure is asserted: this is a measurement, the machine is shared.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Iterator

from rethink.shared import pgcopy
from rethink.shared.envelope import Recorded
from rethink.shared.migrations import service_store, upgrade
from rethink.shared.projection import ProjectionStore, WriteBatch
from rethink.shared.settings import Settings

from .apply import copies_of_test_log, log_arguments, parse_log_arguments
from .common import Cleanup
from .rebuild import Postgres

WAYS = ("copy", "executemany")


@contextlib.contextmanager
def copying(on: bool) -> Iterator[None]:
    """COPY as the code does it, or never (no group has so many rows)."""
    saved = pgcopy.COPY_FROM_ROWS, pgcopy.STAGED_FROM_ROWS
    if not on:
        pgcopy.COPY_FROM_ROWS = pgcopy.STAGED_FROM_ROWS = 1 << 62
    try:
        yield
    finally:
        pgcopy.COPY_FROM_ROWS, pgcopy.STAGED_FROM_ROWS = saved


def timed(store: ProjectionStore, events: list[Recorded]) -> tuple[float, float]:
    """CPU and wall µs per event: the batch's groups in one transaction (grouping not timed)."""
    store.reset()
    batch = WriteBatch()
    for r in events:
        batch.add(store._plan("postgresql", r))  # type: ignore[misc]
    compiled = store._batch_compiled()
    assert compiled is not None, "nothing may listen to the engine: the batch would not run on the cursor"
    cpu, wall = time.process_time(), time.perf_counter()
    with store.engine.begin() as conn:
        batch.run(conn, compiled)
    return ((time.process_time() - cpu) * 1e6 / len(events), (time.perf_counter() - wall) * 1e6 / len(events))


def run(store: ProjectionStore, events: list[Recorded], rounds: int) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {w: [] for w in WAYS}
    for rnd in range(rounds):
        for way in (WAYS if rnd % 2 == 0 else tuple(reversed(WAYS))):  # alternate: neither always first
            with copying(way == "copy"):
                out[way].append(timed(store, events))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    log_arguments(parser, copies=160, rounds=6)
    args, services = parse_log_arguments(parser)
    events = copies_of_test_log(args.copies)
    cleanup = Cleanup()
    results: dict[str, dict[str, list[tuple[float, float]]]] = {}
    try:
        url = Postgres("127.0.0.1", 5432, "test").create(cleanup)
        for service in services:
            store = service_store(Settings(database_url={service: url}, database_schema={service: f"{service}_copy"}),
                                  service)
            upgrade(store)
            try:
                results[service] = run(store, events, args.rounds)
            finally:
                store.engine.dispose()
    finally:
        cleanup.run(print)
    print(f"{len(events):,} events per batch ({args.copies} copies of the test log), median of {args.rounds} "
          "rounds; µs per event, CPU (wall)")
    print(f"{'projection':<11} " + " ".join(f"{w:>15}" for w in WAYS) + "   CPU    wall  (copy / executemany)")
    for service, ways in results.items():
        med = {w: (statistics.median(c for c, _ in v), statistics.median(t for _, t in v)) for w, v in ways.items()}
        cells = " ".join(f"{med[w][0]:6.1f} ({med[w][1]:5.1f})" for w in WAYS)
        print(f"{service:<11} {cells}  {med['copy'][0] / med['executemany'][0]:5.2f}x {med['copy'][1] / med['executemany'][1]:5.2f}x")


if __name__ == "__main__":
    main()
