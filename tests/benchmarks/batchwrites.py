"""Micro-benchmark: a rebuild's batch of writes on PostgreSQL, as the code writes it and as before.

``python -m tests.benchmarks.batchwrites [--copies 160] [--rounds 6] [--services intake,meeting]
[--against executemany|unfolded]`` groups ``--copies`` copies of the interleaved three-case test log
(``tests/unit/test_projection_batches``: every table of every service; 25 events a copy, fresh case
and meeting ids each) into one batch of writes per service (``WriteBatch``, as
``ProjectionStore.apply_batch`` does) and runs it into the service's emptied, migrated schema in a
PostgreSQL database of its own at 127.0.0.1:5432 (dropped at the end), one transaction per run. Per
round, alternating which goes first, it runs the batch

- ``code``: as the code does: a row's updates folded into its insert (``folding``), an INSERT's group
  of many rows as ``COPY … FROM STDIN``, an upsert's through its stage;
- the baseline, ``--against``: ``executemany`` (the default), every group as psycopg's
  ``executemany``, as before the seventh round; or ``unfolded``, no update folded, as before the
  eighth. The same statements and parameters otherwise.

It prints, per service, the median over the rounds of the CPU (``time.process_time``, this process:
the grouping and psycopg's work) and wall time (the server's work too) per event, in µs, and the
ratio of each. No figure is asserted: this is a measurement, the machine is shared.
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


def timed(store: ProjectionStore, events: list[Recorded], fold: bool) -> tuple[float, float]:
    """CPU and wall µs per event: the events' writes grouped, and the groups run in one transaction
    (the plans are made first, untimed: they are the same both ways)."""
    store.reset()
    writes = [list(store._plan("postgresql", r)) for r in events]  # type: ignore[misc]
    compiled = store._batch_compiled()
    assert compiled is not None, "nothing may listen to the engine: the batch would not run on the cursor"
    cpu, wall = time.process_time(), time.perf_counter()
    batch = WriteBatch(fold=fold)
    for w in writes:
        batch.add(w)
    with store.engine.begin() as conn:
        batch.run(conn, compiled)
    return ((time.process_time() - cpu) * 1e6 / len(events), (time.perf_counter() - wall) * 1e6 / len(events))


def run(store: ProjectionStore, events: list[Recorded], rounds: int, against: str
        ) -> dict[str, list[tuple[float, float]]]:
    ways = ("code", against)
    out: dict[str, list[tuple[float, float]]] = {w: [] for w in ways}
    for rnd in range(rounds):
        for way in (ways if rnd % 2 == 0 else tuple(reversed(ways))):  # alternate: neither always first
            with copying(way != "executemany"):
                out[way].append(timed(store, events, fold=way != "unfolded"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    log_arguments(parser, copies=160, rounds=6)
    parser.add_argument("--against", choices=("executemany", "unfolded"), default="executemany",
                        help="the baseline: every group as executemany (default), or no update folded")
    args, services = parse_log_arguments(parser)
    ways = ("code", args.against)
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
                results[service] = run(store, events, args.rounds, args.against)
            finally:
                store.engine.dispose()
    finally:
        cleanup.run(print)
    print(f"{len(events):,} events per batch ({args.copies} copies of the test log), median of {args.rounds} "
          "rounds; µs per event, CPU (wall)")
    print(f"{'projection':<11} " + " ".join(f"{w:>15}" for w in ways) + f"   CPU    wall  (code / {args.against})")
    for service, found in results.items():
        med = {w: (statistics.median(c for c, _ in v), statistics.median(t for _, t in v)) for w, v in found.items()}
        cells = " ".join(f"{med[w][0]:6.1f} ({med[w][1]:5.1f})" for w in ways)
        base = med[args.against]
        print(f"{service:<11} {cells}  {med['code'][0] / base[0]:5.2f}x {med['code'][1] / base[1]:5.2f}x")


if __name__ == "__main__":
    main()
