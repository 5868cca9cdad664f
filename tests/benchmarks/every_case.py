"""Micro-benchmark: the CLI's passes over every case (``audit anchor``, ``audit verify --all``, ``privacy sweep``).

``python -m tests.benchmarks.every_case [--closed 1000,25000] [--rounds 3]``
times, at each size, the three commands' reads of the log both ways, and checks they give the same:

- **before** (their code until the thirteenth round, kept here as the baseline): the log's case ids
  from the stream's subjects, then each case read in turn, sealed (a consumer made, read and deleted
  per case): its last event taken as its head, its chain checked by ``verify_chain``, or its
  retention decided from its history (the functions the sweep used, kept in the unit test as its oracle);
- **after** (``rethink.shared.cli.chains``, ``rethink.shared.erasure.sweep``): the log read once in
  order, each event handed to its case's ``ChainWalk`` or ``RetentionFold``; a case that is not
  whole would be read again (none is here).

The sweep is timed as a dry run (``--apply`` erases, and then reads each erased case to chain its
record onto it, as before).

``verify`` is timed with the anchors ``anchor`` made, as a scheduled audit runs it. The log (a
nats-server of its own: loopback, a free port, a temp folder) is the console benchmark's closed
lifecycle (11 events a case) copied ``--closed`` times, each copy chained as the services chain a
case (each event pointing at the one before with its digest). Median of ``--rounds``; the process's
resident memory after each way is printed beside it.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path

from rethink.shared.audit import Anchor, ChainReport, verify_chain
from rethink.shared.cli.chains import heads, verify_all
from rethink.shared.cli.client import Client
from rethink.shared.envelope import Envelope, digest, new_case_id
from rethink.shared.erasure import SweepItem, sweep
from rethink.shared.eventlog import EventLog, Subjects
from tests.unit.test_retention_fold import already_erased, closed_on, retention_due

from .common import Cleanup
from .console_reads import TEMPLATE_CASE, own_server, published_log, resident_mb, template, timed_both_ways

AT = "2026-11-27T10:00:00+00:00"
WHAT = ("anchor", "verify", "sweep")
NOW = datetime(2040, 1, 1, tzinfo=UTC)  # every copy closed long enough ago to be due
TODAY, YEARS = NOW.date(), 6


def chained_copies(subjects: Subjects, closed: int) -> Iterable[tuple[str, bytes]]:
    """``closed`` copies of the closed case, each with its own case id and event ids, chained."""
    case = [(kind, Envelope.from_bytes(body)) for kind, body, _ in template()]
    for n in range(closed):
        case_id = new_case_id(f"bench-verify-{n}")
        prev: tuple[uuid.UUID, bytes] | None = None
        for kind, env in case:
            data = Envelope.model_validate_json(env.to_bytes().replace(TEMPLATE_CASE.encode(), case_id.encode()))
            body = data.model_copy(update={"event_id": uuid.uuid4(), "prev_event_id": prev[0] if prev else None,
                                           "prev_hash": digest(prev[1]) if prev else None}).to_bytes()
            prev = (Envelope.from_bytes(body).event_id, body)
            yield subjects.event(case_id, kind), body


async def anchors_before(log: EventLog) -> dict[str, Anchor]:
    out = {}
    for case_id in await log.case_ids():
        history = await log.read_sealed(case_id)
        if history:
            out[case_id] = Anchor.of(history[-1], AT)
    return out


async def verify_before(log: EventLog, anchors: dict[str, Anchor]) -> list[ChainReport]:
    ids = sorted(set(await log.case_ids()) | set(anchors))
    return [verify_chain(c, await log.read_sealed(c), anchors.get(c)) for c in ids]


async def sweep_before(log: EventLog, years: int, today: date) -> list[SweepItem]:
    """The dry run's read until the thirteenth round."""
    items = []
    for case_id in await log.case_ids():
        history = await log.read_sealed(case_id)
        due = retention_due(history, years)
        action = "kept" if due is None or due > today else "already erased" if already_erased(history) else "due"
        items.append(SweepItem(case_id, closed_on(history), due, action))
    return items


async def amain(args: argparse.Namespace, tmp: Path, cleanup: Cleanup) -> None:
    server, nc = await own_server(tmp, cleanup)
    times: dict[tuple[str, str, int], list[float]] = {}
    memory: dict[tuple[str, int], float] = {}
    events: dict[int, int] = {}
    try:
        for closed in args.closed:
            s, log = await published_log(nc, server.url, tmp / f"state-{closed}", closed,
                                         lambda subjects, n=closed: chained_copies(subjects, n))
            events[closed] = (await nc.jetstream().stream_info(s.stream)).state.messages
            async with Client(s) as client:
                for way in ("before", "after"):
                    for _ in range(args.rounds):
                        started = time.perf_counter()
                        anchors = await (anchors_before(log) if way == "before" else heads(client, AT))
                        times.setdefault(("anchor", way, closed), []).append(time.perf_counter() - started)
                        started = time.perf_counter()
                        reports = await (verify_before(log, anchors) if way == "before" else verify_all(client, anchors))
                        times.setdefault(("verify", way, closed), []).append(time.perf_counter() - started)
                        started = time.perf_counter()
                        swept = await (sweep_before(log, YEARS, TODAY) if way == "before"
                                       else sweep(log, YEARS, TODAY, False, "bench", NOW))
                        times.setdefault(("sweep", way, closed), []).append(time.perf_counter() - started)
                    memory[way, closed] = resident_mb()
                    if way == "before":
                        expected = (anchors, reports, swept)
                    else:  # the same heads, reports and decisions
                        assert (anchors, reports, swept) == expected, "the two ways differ"
                    assert len(reports) == closed and all(r.intact for r in reports), "a copy's chain is broken"
                    assert {i.action for i in swept} == {"due"}, "the sweep's decisions are not the ones asked for"
            print(f"{closed:>7,} closed cases ({events[closed]:,} events): " + ", ".join(
                f"{what} {way} {statistics.median(times[what, way, closed]):.2f} s"
                for what in WHAT for way in ("before", "after")))
    finally:
        await nc.close()

    small = args.closed[0]
    print(f"\nrethink audit anchor, then audit verify --all --anchors, then privacy sweep (dry run), median of "
          f"{args.rounds}; each beside the same at {small:,} closed cases")
    for what in WHAT:
        for closed in args.closed:
            b, a = (statistics.median(times[what, w, closed]) for w in ("before", "after"))
            b0, a0 = (statistics.median(times[what, w, small]) for w in ("before", "after"))
            print(f"  {what:<6} {closed:>7,} closed  before {b:>7.2f} s {b / b0:5.1f}x   after {a:>6.2f} s "
                  f"{a / a0:5.1f}x   {b / a:5.1f} times faster ({events[closed] / a:,.0f} events/s)")
    print("  resident memory after each way: " + ", ".join(
        f"{way} {memory[way, c]:.0f} MB at {c:,}" for c in args.closed for way in ("before", "after")))


def main() -> None:
    timed_both_ways(__doc__, amain, "rethink-every-case-", "timed runs")


if __name__ == "__main__":
    main()
