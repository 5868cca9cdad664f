"""Micro-benchmark: scheduling's live reads with a small and a large history behind the same open work.

``python -m tests.benchmarks.growth [--closed 1000,25000] [--open 200] [--reads 15] [--postgres]``
makes scheduling's projection (migrated to head, as a service does) once per history size: the
same ``--open`` open cases (a facilitator, an active meeting with five invitees, two open
actions, an open escalation stage), behind that many closed cases (each with its held meeting,
its actions and its resolved escalation, as a finished lifecycle leaves them). Then it times,
median of ``--reads``:

- ``reminder_items``: what the reminder job reads every ``reminder_interval_seconds``, on the
  service's event loop (nothing else in the service runs meanwhile);
- ``load_by_facilitator``: what each ``ChecksConfirmed`` reads to pick the facilitator.

Each figure is printed beside the same read at the smallest history, measured in the same run
(the sizes read in turn), with the ratio. A region's year is about 25,000 cases (200,000 events at eight a lifecycle, the
case-history benchmark's large log); what the live path reads should grow with the open work,
not with that. The rows are written straight into the tables: the reads see only the rows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert

from rethink.scheduling import projection as p
from rethink.shared.migrations import target_for, upgrade
from rethink.shared.settings import Settings

from .common import Cleanup
from .rebuild import Postgres

FACILITATORS = ("fac-1", "fac-2", "fac-3")
T0 = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


def _person(n: int, k: int) -> dict[str, str]:
    return {"name": f"Person {k} of case {n}", "agency": "Children's Social Care",
            "email": f"person{k}.case{n}@council.example.org"}


def _rows(n: int, closed: bool, fac: str | None = None,
          status: str = "scheduled") -> dict[str, dict[str, Any] | list[dict[str, Any]]]:
    """One case's rows, as its events leave them (a closed case: held, actions done, stage resolved)."""
    case_id = f"RT-{n:010d}"
    fac = fac or FACILITATORS[n % len(FACILITATORS)]
    meeting = f"M-{n:08d}"
    return {
        "case": {"case_id": case_id, "case_reference": f"CSC-{n}", "facilitator_id": fac,
                 "facilitator_name": f"Facilitator {fac}", "facilitator_email": f"{fac}@pscp.example.org",
                 "closed": closed},
        "meeting": {"meeting_id": meeting, "case_id": case_id, "facilitator_id": fac,
                    "starts_at": T0 + timedelta(days=n % 30), "duration_minutes": 90, "mode": "virtual",
                    "venue": None, "status": "held" if closed else status,
                    "invitees": json.dumps([_person(n, k) for k in range(5)]), "seq": 10 * n + 3},
        "actions": [{"case_id": case_id, "action_id": f"A-{n}-{k}", "meeting_id": meeting,
                     "owner": json.dumps(_person(n, k)), "due_date": date(2027, 1, 10) + timedelta(days=k),
                     "completed": closed} for k in range(2)],
        "escalation": {"case_id": case_id, "escalation_id": f"E-{n}", "stage": 1,
                       "stage_name": "Stage 1: practitioners", "holder": "Team manager",
                       "deadline": date(2027, 1, 20), "resolved": closed},
    }


def fill(conn: Connection, open_cases: int, closed_cases: int) -> None:
    """``open_cases`` open cases and ``closed_cases`` closed ones, interleaved as a log would leave them.

    The open ones go to each facilitator in turn, and every fourth has had its meeting cancelled
    (it is to be scheduled again)."""
    tables = {"case": p.cases, "meeting": p.meetings, "actions": p.actions, "escalation": p.escalations}
    every = max(1, (open_cases + closed_cases) // max(1, open_cases))
    batch: dict[str, list[dict[str, Any]]] = {k: [] for k in tables}
    opened = 0
    for n in range(open_cases + closed_cases):
        is_open = opened < open_cases and (n % every == 0 or open_cases + closed_cases - n <= open_cases - opened)
        rows = (_rows(n, False, FACILITATORS[opened % len(FACILITATORS)], "cancelled" if opened % 4 == 3 else "scheduled")
                if is_open else _rows(n, True))
        opened += is_open
        for key, value in rows.items():
            batch[key] += value if isinstance(value, list) else [value]
        if len(batch["case"]) >= 2000 or n == open_cases + closed_cases - 1:
            for key, table in tables.items():
                conn.execute(insert(table), batch[key])
                batch[key] = []


def timed(engine: Any, read: Callable[[Connection], Any]) -> tuple[float, Any]:
    """One read's seconds, on a connection of its own (as the service does)."""
    with engine.connect() as conn:
        started = time.perf_counter()
        result = read(conn)
        return time.perf_counter() - started, result


def run(url_of: Callable[[int], tuple[str, str | None]], label: str, args: argparse.Namespace,
        tmp: Path) -> None:
    reads: dict[str, Callable[[Connection], Any]] = {
        "reminder_items": p.reminder_items, "load_by_facilitator": p.load_by_facilitator,
        "to_schedule": lambda c: p.to_schedule(c, None, 100),
        "to_schedule (one)": lambda c: p.to_schedule(c, "fac-2", 100),
        "active_meetings": lambda c: p.active_meetings(c, None, 100),
        "active_meetings (one)": lambda c: p.active_meetings(c, "fac-2", 100)}
    engines = {}
    try:
        for closed in args.closed:
            url, schema = url_of(closed)
            s = Settings(state_dir=tmp, database_url={"scheduling": url},
                         database_schema={"scheduling": schema or "scheduling"})
            target = engines[closed] = target_for(s, "scheduling")
            upgrade(target)
            with target.engine.begin() as conn:
                fill(conn, args.open, closed)
                if target.engine.dialect.name == "postgresql":
                    conn.exec_driver_sql("ANALYZE")  # as autovacuum would have, long before a year's cases
        for name, read in reads.items():
            # The sizes taken in turn, read by read, so the machine's drift falls on each alike;
            # the first round warms the caches and is left out.
            times: dict[int, list[float]] = {closed: [] for closed in args.closed}
            sizes: dict[int, int] = {}
            for _ in range(args.reads + 1):
                for closed, target in engines.items():
                    seconds, result = timed(target.engine, read)
                    times[closed].append(seconds)
                    sizes[closed] = len(result) if isinstance(result, list) else sum(result.values())
            first = statistics.median(times[args.closed[0]][1:])
            for closed in args.closed:
                seconds = statistics.median(times[closed][1:])
                print(f"{label:<11} {name:<22} {closed:>7,} closed {args.open:>5,} open "
                      f"{seconds * 1000:9.2f} ms  {seconds / first:6.2f}x the first   ({sizes[closed]:,} read)")
    finally:
        for target in engines.values():
            target.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--closed", default="1000,25000",
                        help="closed cases behind the open ones, comma-separated (default 1000,25000)")
    parser.add_argument("--open", type=int, default=200, help="open cases (default 200)")
    parser.add_argument("--reads", type=int, default=15, help="timed reads of each (default 15)")
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL at 127.0.0.1:5432")
    args = parser.parse_args()
    try:
        args.closed = [int(n) for n in args.closed.split(",")]
    except ValueError:
        parser.error("--closed takes whole numbers, comma-separated")
    if args.open < 1 or args.reads < 1 or any(n < 0 for n in args.closed):
        parser.error("--open and --reads must be at least 1, --closed at least 0")
    cleanup = Cleanup()
    with tempfile.TemporaryDirectory(prefix="rethink-growth-") as tmp:
        try:
            run(lambda n: (f"sqlite:///{Path(tmp) / f'scheduling-{n}.db'}", None), "sqlite", args, Path(tmp))
            if args.postgres:
                url = Postgres("127.0.0.1", 5432, "test").create(cleanup)
                run(lambda n: (url, f"growth_{n}"), "postgresql", args, Path(tmp))
        finally:
            cleanup.run(print)


if __name__ == "__main__":
    main()
