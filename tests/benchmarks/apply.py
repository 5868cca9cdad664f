"""Micro-benchmark: one live event applied to a projection (``ProjectionStore.apply``), beside a floor.

``python -m tests.benchmarks.apply [--copies 40] [--rounds 5] [--services intake,meeting] [--no-postgres]``
applies ``--copies`` copies of the interleaved three-case test log (``tests/unit/test_projection_batches``:
every table of every service; 25 events a copy, fresh case and meeting ids each) to each service's
migrated projection, one event per transaction as the live consumer does, on a SQLite file and (unless
``--no-postgres``) in a PostgreSQL database of its own at 127.0.0.1:5432 (dropped at the end). Per round,
alternating, it times three ways of applying the same events to emptied tables:

- ``store``: ``ProjectionStore.apply`` as the services call it;
- ``engine``: the same transaction through ``engine.begin()`` and ``Connection.execute`` (a pool
  checkout, SQLAlchemy's execution of each statement, a pool return), which is what ``apply`` did
  before it kept its connection (for an A/B in the same minutes);
- ``raw``: the floor: the same SQL with the same (already processed) parameters on one DB-API
  connection held open: a conditional ``UPDATE`` of the checkpoint, the writes, a commit. No plan
  is run and no parameter processed in the timed part, so the gap to ``store`` is all overhead.

It prints, per database and service, the median over the rounds of the CPU (``time.process_time``)
and wall time per event, in µs. No figure is asserted: this is a measurement, the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rethink.shared.envelope import Recorded
from rethink.shared.migrations import service_store, upgrade
from rethink.shared.privacy import ERASURE
from rethink.shared.projection import ProjectionStore
from rethink.shared.settings import SERVICES, Settings
from rethink.shared.sqlwriter import compiled_write

from .common import Cleanup
from .rebuild import Postgres
from .replay import case_id


def copies_of_test_log(copies: int) -> list[Recorded]:
    """The test log ``copies`` times over, with fresh case and meeting ids per copy, in one sequence."""
    from tests.unit.test_projection_batches import events

    template = events()
    out: list[Recorded] = []
    for n in range(copies):
        ids = {c: case_id() for c in {r.envelope.case_id for r in template}}
        for r in template:
            env = r.envelope
            data = json.loads(json.dumps(env.data).replace("M-000000", f"M-{n:06d}"))
            payload = type(r.payload).model_validate(data)
            env = env.model_copy(update={"case_id": ids[env.case_id], "event_id": uuid.uuid4(), "data": data})
            out.append(Recorded(envelope=env, seq=len(out) + 1, payload=payload, digest=r.digest))
    return out


def log_arguments(parser: argparse.ArgumentParser, copies: int, rounds: int) -> None:
    """The flags of a benchmark over copies of the test log, per service."""
    parser.add_argument("--copies", type=int, default=copies, help=f"copies of the 25-event test log (default {copies})")
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--services", default=",".join(SERVICES), help="comma-separated (default: all four)")


def parse_log_arguments(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, list[str]]:
    """The flags, checked, and the services asked for."""
    args = parser.parse_args()
    services = [s for s in args.services.split(",") if s]
    if args.copies < 1 or args.rounds < 1 or any(s not in SERVICES for s in services):
        parser.error(f"--copies and --rounds at least 1; --services among {', '.join(SERVICES)}")
    return args, services


def engine_apply(store: ProjectionStore, recorded: Recorded) -> bool:
    """``apply`` as it was: a pool checkout and SQLAlchemy's execution per statement (the A/B's "before");
    the store keeps that way for what its own connection does not cover."""
    applied = store._apply_on_engine(recorded)
    if applied and recorded.type == ERASURE:
        store.scrub()
    return applied


def raw_applier(store: ProjectionStore, events: list[Recorded]) -> tuple[Callable[[Recorded], bool], Callable[[], None]]:
    """The floor: every event's SQL and final parameters prepared beforehand (not timed), then each event
    run on one DB-API connection kept open: the checkpoint's conditional UPDATE, the writes, a commit."""
    dialect = store.engine.dialect
    prepared: dict[int, list[tuple[str, Any]]] = {}
    for r in events:
        writes = [(compiled_write(dialect, s, p), p) for s, p, _ in store._plan(dialect.name, r)]  # type: ignore[misc]
        prepared[r.seq] = [w.prepare(p) for w, p in writes if w is not None]
    move_cp = compiled_write(dialect, store._move_cp, {"c": "", "s": 0})
    insert_cp = compiled_write(dialect, store._insert_cp, {"consumer": "", "last_seq": 0})
    assert move_cp is not None and insert_cp is not None
    raw = store.engine.raw_connection()
    dbapi = raw.dbapi_connection

    def apply(r: Recorded) -> bool:
        cur = dbapi.cursor()
        cur.execute(*move_cp.prepare({"c": store.consumer, "s": r.seq}))
        if not cur.rowcount:
            cur.execute(*insert_cp.prepare({"consumer": store.consumer, "last_seq": r.seq}))
        for sql, params in prepared[r.seq]:
            cur.execute(sql, params)
        dbapi.commit()
        if r.type == ERASURE:  # as ``apply`` does after the transaction
            store.scrub()
        return True

    return apply, raw.close


def timed(apply: Callable[[Recorded], bool], events: list[Recorded]) -> tuple[float, float]:
    """CPU and wall µs per event."""
    cpu, wall = time.process_time(), time.perf_counter()
    for r in events:
        apply(r)
    return ((time.process_time() - cpu) * 1e6 / len(events), (time.perf_counter() - wall) * 1e6 / len(events))


WAYS = ("store", "engine", "raw")


def run(store: ProjectionStore, events: list[Recorded], rounds: int) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {w: [] for w in WAYS}
    for rnd in range(rounds):
        order = WAYS if rnd % 2 == 0 else tuple(reversed(WAYS))  # alternate, so no way always runs first
        for way in order:
            store.reset()
            if way == "raw":
                apply, close = raw_applier(store, events)
                try:
                    out[way].append(timed(apply, events))
                finally:
                    close()
            elif way == "engine":
                out[way].append(timed(lambda r: engine_apply(store, r), events))
            else:
                out[way].append(timed(store.apply, events))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    log_arguments(parser, copies=40, rounds=5)
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args, services = parse_log_arguments(parser)
    events = copies_of_test_log(args.copies)
    cleanup = Cleanup()
    results: dict[tuple[str, str], dict[str, list[tuple[float, float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="rethink-apply-") as tmp:
        try:
            backends: list[tuple[str, Callable[[str], Settings]]] = [
                ("sqlite", lambda _svc: Settings(state_dir=Path(tmp)))]
            if not args.no_postgres:
                url = Postgres("127.0.0.1", 5432, "test").create(cleanup)
                backends.append(("postgresql", lambda svc: Settings(database_url={svc: url},
                                                                    database_schema={svc: f"{svc}_apply"})))
            for label, settings_for in backends:
                for service in services:
                    store = service_store(settings_for(service), service)
                    upgrade(store)
                    try:
                        results[(label, service)] = run(store, events, args.rounds)
                    finally:
                        store.engine.dispose()
                    print(f"{label:<11} {service:<11} done", flush=True)
        finally:
            cleanup.run(print)
    print(f"\n{len(events):,} events per round ({args.copies} copies of the test log), median of {args.rounds} "
          "rounds; µs per event, CPU (wall)")
    print(f"{'database':<11} {'projection':<11} " + " ".join(f"{w:>15}" for w in WAYS) + "  store/raw")
    for (label, service), ways in results.items():
        med = {w: (statistics.median(c for c, _ in v), statistics.median(t for _, t in v)) for w, v in ways.items()}
        cells = " ".join(f"{med[w][0]:6.0f} ({med[w][1]:5.0f})" for w in WAYS)
        print(f"{label:<11} {service:<11} {cells}  {med['store'][0] / med['raw'][0]:8.1f}x")


if __name__ == "__main__":
    main()
