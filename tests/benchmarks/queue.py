"""Micro-benchmark: the work queue narrowed to one facilitator's cases, behind a small and a large log.

``python -m tests.benchmarks.queue [--closed 1000,25000] [--open 200] [--reads 15]`` measures, at
each size, both ways the console has found "my cases" (``/queue?mine=1``):

- **before** (kept here as the baseline): the console replayed the whole log into its memory
  (``Gateway.read_log``: every event decoded and kept, topped up on each later request) and
  scanned it for ``FacilitatorAssigned`` events. Timed: the first request's replay, a later
  request (the top-up's round trip and the scan), and the memory the replay holds (the process's
  resident size before and after it, so approximate).
- **after**: scheduling answers ``assigned`` for the page's case ids from its projection, by the
  cases' key. Timed: ``projection.assigned`` of the ``--open`` open cases' ids, as the queue asks
  for its overdue actions and escalation deadlines.

The log (a nats-server of its own: loopback, a free port, a temp folder) holds ``--closed``
closed cases, each a copy of the test log's closed lifecycle (11 events: submitted, checks,
assigned, scheduled, held, two actions, one overdue, both completed, closed), then ``--open``
open ones (submitted, checks, assigned). The copies are plain: in a partnership's log their
personal fields are sealed and the console's replay opened each one, so "before" here is its
cheapest. Scheduling's projection (SQLite) gets the same cases' rows (``tests.benchmarks.growth``).
The sizes are read in turn, read by read, so the machine's drift falls on each alike.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import nats

from rethink.console.gateway import Gateway
from rethink.scheduling import projection as p
from rethink.shared import natsheaders, natsparser
from rethink.shared.bootstrap import bootstrap
from rethink.shared.envelope import Recorded
from rethink.shared.eventlog import Subjects
from rethink.shared.events import FacilitatorAssigned
from rethink.shared.migrations import target_for, upgrade
from rethink.shared.natsserver import EmbeddedNats, free_port
from rethink.shared.settings import Settings

from .baselines import pipelined_publish
from .common import Cleanup
from .growth import fill

TEMPLATE_CASE = "RT-AAAAAAAAAA"  # the test log's closed lifecycle
OPEN_TYPES = ("RequestSubmitted", "ChecksConfirmed", "FacilitatorAssigned")
ME = "fac-1"
CASE_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def settings(url: str, state: Path, closed: int) -> Settings:
    tag = f"Q{closed}"
    return Settings(nats_url=url, state_dir=state, stream=tag, dead_letter_stream=f"{tag}DL",
                    receipt_stream=f"{tag}RC", inbound_stream=f"{tag}IN", keys_bucket=f"{tag}KEYS",
                    access_stream=f"{tag}ACC", subject_prefix=f"q{closed}")


def template() -> list[tuple[str, bytes, bytes]]:
    """(type, plain envelope bytes, event id) of the test log's closed case."""
    from tests.unit.test_projection_batches import events

    return [(r.type, r.envelope.to_bytes(), str(r.envelope.event_id).encode())
            for r in events() if r.envelope.case_id == TEMPLATE_CASE]


def case_id(n: int) -> str:
    """The n-th case id: n in base 32, in the letters and digits a case id is made of."""
    return "RT-" + "".join(CASE_LETTERS[n >> (5 * k) & 31] for k in reversed(range(10)))


def copies(subjects: Subjects, closed: int, open_cases: int) -> Iterable[tuple[str, bytes]]:
    """The log: ``closed`` copies of the whole case, then ``open_cases`` of its first three events,
    the facilitators taken in turn."""
    case = template()
    for n in range(closed + open_cases):
        case_id_n = case_id(n)
        facilitator = b'"fac-%d"' % (n % 3 + 1)
        for event_type, body, event_id in case if n < closed else [c for c in case if c[0] in OPEN_TYPES]:
            yield subjects.event(case_id_n, event_type), (
                body.replace(TEMPLATE_CASE.encode(), case_id_n.encode()).replace(event_id, str(uuid.uuid4()).encode())
                .replace(b'"fac-1"', facilitator))


def assigned_before(log: Iterable[Recorded], fac_id: str) -> set[str]:
    """The console's way before: the cases assigned to one facilitator, from the log's FacilitatorAssigned events."""
    return {r.envelope.case_id for r in log
            if isinstance(r.payload, FacilitatorAssigned) and r.payload.facilitator_id == fac_id}


def resident_mb() -> float:
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def amain(args: argparse.Namespace, tmp: Path, cleanup: Cleanup) -> None:
    server = EmbeddedNats(free_port(), tmp / "nats").start()
    cleanup.add("stop the nats-server", server.stop)
    natsheaders.install()  # as the console does
    natsparser.install()
    nc = await nats.connect(server.url)
    cleanup.add("close the connection", lambda: None)
    gateways: dict[int, Gateway] = {}
    engines = {}
    first: dict[int, tuple[float, float, int]] = {}
    try:
        for closed in args.closed:
            s = settings(server.url, tmp / f"state-{closed}", closed)
            js = nc.jetstream(publish_async_max_pending=1000)
            await bootstrap(js, s)
            msgs = list(copies(Subjects(s.subject_prefix), closed, args.open))
            await pipelined_publish(js, msgs, s.stream, 1000)
            del msgs
            target = engines[closed] = target_for(Settings(state_dir=tmp / f"db-{closed}"), "scheduling")
            upgrade(target)
            with target.engine.begin() as conn:
                fill(conn, args.open, closed)
            gateway = gateways[closed] = Gateway(s)
            await gateway.connect()
            before = resident_mb()
            started = time.perf_counter()
            log = await gateway.read_log()
            replay = time.perf_counter() - started
            first[closed] = replay, resident_mb() - before, len(log)
            print(f"{closed:>7,} closed: {len(log):,} events in the log; the console's first narrowed queue "
                  f"replayed them in {replay:.2f} s, holding ~{first[closed][1]:,.0f} MB more")

        def open_ids(closed: int) -> list[str]:
            with engines[closed].engine.connect() as conn:
                return [r.case_id for r in conn.execute(p.select(p.cases.c.case_id).where(p._OPEN))]

        asked = {closed: open_ids(closed) for closed in args.closed}
        later: dict[int, list[float]] = {closed: [] for closed in args.closed}
        lookup: dict[int, list[float]] = {closed: [] for closed in args.closed}
        found: dict[int, tuple[int, int]] = {}
        for _ in range(args.reads + 1):  # the first round warms the caches and is left out
            for closed in args.closed:
                started = time.perf_counter()
                mine_before = assigned_before(await gateways[closed].read_log(), ME)
                later[closed].append(time.perf_counter() - started)
                with engines[closed].engine.connect() as conn:
                    started = time.perf_counter()
                    holders = p.assigned(conn, asked[closed])
                    lookup[closed].append(time.perf_counter() - started)
                found[closed] = len(mine_before), sum(1 for h in holders.values() if h == ME)
    finally:
        for gateway in gateways.values():
            await gateway.close()
        for target in engines.values():
            target.engine.dispose()
        await nc.close()

    small = args.closed[0]
    base_later, base_lookup = (statistics.median(t[small][1:]) for t in (later, lookup))
    print(f"\nmedian of {args.reads} reads, each beside the same at {small:,} closed cases")
    print(f"{'closed cases':>12} {'before: first (replay)':>22} {'held':>9} {'before: later':>14} "
          f"{'after: assigned':>16}   (mine: before / after)")
    for closed in args.closed:
        replay, held, _ = first[closed]
        late, look = statistics.median(later[closed][1:]), statistics.median(lookup[closed][1:])
        print(f"{closed:>12,} {replay * 1000:>13,.0f} ms {replay / first[small][0]:5.1f}x "
              f"{held:>6,.0f} MB {late * 1000:>8.2f} ms {late / base_later:4.1f}x "
              f"{look * 1000:>9.2f} ms {look / base_lookup:4.1f}x   "
              f"({found[closed][0]:,} of every case ever / {found[closed][1]:,} of the {len(asked[closed]):,} asked)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--closed", default="1000,25000",
                        help="closed cases in the log, comma-separated, smallest first (default 1000,25000)")
    parser.add_argument("--open", type=int, default=200, help="open cases after them (default 200)")
    parser.add_argument("--reads", type=int, default=15, help="timed reads of each (default 15)")
    args = parser.parse_args()
    try:
        args.closed = [int(n) for n in args.closed.split(",")]
    except ValueError:
        parser.error("--closed takes whole numbers, comma-separated")
    if args.open < 1 or args.reads < 1 or any(n < 0 for n in args.closed) or args.closed != sorted(args.closed):
        parser.error("--open and --reads must be at least 1, --closed at least 0 and smallest first")
    cleanup = Cleanup()
    with tempfile.TemporaryDirectory(prefix="rethink-queue-") as tmp:
        try:
            asyncio.run(amain(args, Path(tmp), cleanup))
        finally:
            cleanup.run(print)


if __name__ == "__main__":
    main()
