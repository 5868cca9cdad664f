"""Micro-benchmark: what the console reads of the log, behind a small and a large log.

``python -m tests.benchmarks.console_reads [--closed 1000,25000] [--open 200] [--reads 15]``
measures, at each size, the console's two reads that used to replay the whole log into its
memory (every event decoded, personal fields opened, and kept; topped up on each later request),
beside what replaced them:

- **the work queue narrowed to one facilitator's cases** (``/queue?mine=1``): before, a scan of
  the kept log for ``FacilitatorAssigned`` events; after, scheduling's ``assigned`` for the page's
  case ids, by the cases' key (``projection.assigned`` of the ``--open`` open cases' ids, as the
  queue asks for its overdue actions and escalation deadlines);
- **the reports** (``/reports``): before, every kept event grouped by case and walked on each
  request; after, each event folded into its case's few facts as it is read and let go
  (``Gateway.report_facts``), the tables built from the facts.

Timed: the first request (the whole log read), a later one (the top-up's round trip and the
work), and the memory the first one leaves held (the process's resident size before and after,
so approximate). The "before" replay is kept here as the baseline (the console's code until
this round).

The log (a nats-server of its own: loopback, a free port, a temp folder) holds ``--closed``
closed cases, each a copy of the test log's closed lifecycle (11 events: submitted, checks,
assigned, scheduled, held, two actions, one overdue, both completed, closed), then ``--open``
open ones (submitted, checks, assigned). The copies are plain: in a partnership's log their
personal fields are sealed and each read opens them, so both first reads here are their cheapest.
Scheduling's projection (SQLite) gets the same numbers of cases (``tests.benchmarks.growth``).
The sizes are read in turn, read by read, so the machine's drift falls on each alike.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import date
from pathlib import Path
from typing import Any

import nats
from nats.js import api

from rethink.console import reports
from rethink.console.gateway import Gateway
from rethink.scheduling import projection as p
from rethink.shared import natsheaders, natsparser
from rethink.shared.bootstrap import bootstrap
from rethink.shared.envelope import Recorded, new_case_id
from rethink.shared.eventlog import EventLog, Subjects
from rethink.shared.events import FacilitatorAssigned
from rethink.shared.migrations import target_for, upgrade
from rethink.shared.natsserver import EmbeddedNats, free_port
from rethink.shared.settings import Settings

from .baselines import pipelined_publish
from .common import Cleanup, run_in_temp
from .growth import fill

TEMPLATE_CASE = "RT-AAAAAAAAAA"  # the test log's closed lifecycle
OPEN_TYPES = ("RequestSubmitted", "ChecksConfirmed", "FacilitatorAssigned")
ME = "fac-1"


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


def copies(subjects: Subjects, closed: int, open_cases: int) -> Iterable[tuple[str, bytes]]:
    """The log: ``closed`` copies of the whole case, then ``open_cases`` of its first three events,
    the facilitators taken in turn."""
    case = template()
    for n in range(closed + open_cases):
        case_id_n = new_case_id(f"bench-console-{n}")
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


class EveryEvent:
    """The console's read of the log until this round: every event decoded, opened and kept."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway, self.log = gateway, []  # type: ignore[var-annotated]

    async def read(self) -> list[Recorded]:
        g = self.gateway
        assert g.nc is not None
        js = g.nc.jetstream()
        last = (await js.stream_info(g.settings.stream)).state.last_seq
        start = self.log[-1].seq + 1 if self.log else 1
        if last < start:
            return self.log
        sub = await js.pull_subscribe(g.subjects.all_events, stream=g.settings.stream, config=api.ConsumerConfig(
            ack_policy=api.AckPolicy.NONE, mem_storage=True, inactive_threshold=30.0,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start))
        try:
            seq = start - 1
            while seq < last:
                msgs = await sub.fetch(500, timeout=5)
                for m in msgs:
                    seq = m.metadata.sequence.stream
                    if seq > last:
                        break
                    self.log.extend(await g._event_log().decode([(m.data, seq)]))
                if msgs and msgs[-1].metadata.num_pending == 0:
                    break
        finally:
            await sub.unsubscribe()
        return self.log


async def first_read(read: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """Seconds and MB held of a first read."""
    before = resident_mb()
    started = time.perf_counter()
    await read()
    return time.perf_counter() - started, resident_mb() - before


async def own_server(tmp: Path, cleanup: Cleanup) -> tuple[EmbeddedNats, nats.NATS]:
    """A nats-server of the benchmark's own (loopback, a free port, its store under ``tmp``, stopped at
    the end), and a connection to it as the console and the CLI make theirs (their parsers installed)."""
    server = EmbeddedNats(free_port(), tmp / "nats").start()
    cleanup.add("stop the nats-server", server.stop)
    natsheaders.install()
    natsparser.install()
    return server, await nats.connect(server.url)


async def amain(args: argparse.Namespace, tmp: Path, cleanup: Cleanup) -> None:
    server, nc = await own_server(tmp, cleanup)
    gateways: dict[int, Gateway] = {}
    old: dict[int, EveryEvent] = {}
    engines = {}
    firsts: dict[tuple[str, int], tuple[float, float]] = {}
    today = date.today()
    period = reports.default_period(today)
    try:
        for closed in args.closed:
            s = settings(server.url, tmp / f"state-{closed}", closed)
            js = nc.jetstream(publish_async_max_pending=1000)
            await bootstrap(js, s)
            await pipelined_publish(js, list(copies(Subjects(s.subject_prefix), closed, args.open)), s.stream, 1000)
            target = engines[closed] = target_for(Settings(state_dir=tmp / f"db-{closed}"), "scheduling")
            upgrade(target)
            with target.engine.begin() as conn:
                fill(conn, args.open, closed)
            gateway = gateways[closed] = Gateway(s)
            await gateway.connect()
            old[closed] = EveryEvent(gateway)
            # The facts first: measured after the big replay, its freed pages would hide what they hold.
            firsts["facts", closed] = await first_read(gateway.report_facts)
            firsts["every event", closed] = await first_read(old[closed].read)
            print(f"{closed:>7,} closed cases, {len(old[closed].log):,} events: first read of the whole log "
                  f"{firsts['every event', closed][0]:.2f} s keeping every event, "
                  f"{firsts['facts', closed][0]:.2f} s keeping the facts")

        def open_ids(closed: int) -> list[str]:
            with engines[closed].engine.connect() as conn:
                return [r.case_id for r in conn.execute(p.select(p.cases.c.case_id).where(p._OPEN))]

        asked = {closed: open_ids(closed) for closed in args.closed}

        async def queue_before(closed: int) -> int:
            return len(assigned_before(await old[closed].read(), ME))

        async def queue_after(closed: int) -> int:
            with engines[closed].engine.connect() as conn:
                return sum(1 for holder in p.assigned(conn, asked[closed]).values() if holder == ME)

        async def reports_before(closed: int) -> list[reports.Table]:
            return reports.build(reports.fold({}, await old[closed].read()), period, (), today)

        async def reports_after(closed: int) -> list[reports.Table]:
            return reports.build(await gateways[closed].report_facts(), period, (), today)

        ways = {"queue, before": queue_before, "queue, after": queue_after,
                "reports, before": reports_before, "reports, after": reports_after}
        times: dict[tuple[str, int], list[float]] = {(w, c): [] for w in ways for c in args.closed}
        answers: dict[tuple[str, int], Any] = {}
        for _ in range(args.reads + 1):  # the first round warms the caches and is left out
            for closed in args.closed:
                for way, read in ways.items():
                    started = time.perf_counter()
                    answers[way, closed] = await read(closed)
                    times[way, closed].append(time.perf_counter() - started)
        for closed in args.closed:  # the same figures both ways, so the two reads do the same job
            assert answers["reports, before", closed] == answers["reports, after", closed]
    finally:
        for gateway in gateways.values():
            await gateway.close()
        for target in engines.values():
            target.engine.dispose()
        await nc.close()

    small = args.closed[0]
    print(f"\nfirst request (the whole log read) and what it leaves held; later requests, median of {args.reads}; "
          f"each beside the same at {small:,} closed cases")
    for kind in ("every event", "facts"):
        for closed in args.closed:
            seconds, held = firsts[kind, closed]
            print(f"  first read keeping {kind:<12} {closed:>7,} closed  {seconds * 1000:>9,.0f} ms "
                  f"{seconds / firsts[kind, small][0]:5.1f}x   held ~{held:>8,.1f} MB")
    for way in ways:
        base = statistics.median(times[way, small][1:])
        for closed in args.closed:
            later = statistics.median(times[way, closed][1:])
            print(f"  later request, {way:<16} {closed:>7,} closed  {later * 1000:>9.2f} ms {later / base:5.1f}x")
    print(f"  (mine: {answers['queue, before', args.closed[-1]]:,} cases of every case ever before, "
          f"{answers['queue, after', args.closed[-1]]:,} of the {len(asked[args.closed[-1]]):,} asked after)")


def add_closed(parser: argparse.ArgumentParser) -> None:
    """``--closed``: the log's sizes, as this benchmark and ``audit_search`` take them."""
    parser.add_argument("--closed", default="1000,25000",
                        help="closed cases in the log, comma-separated, smallest first (default 1000,25000)")


def parse_closed(parser: argparse.ArgumentParser, args: argparse.Namespace, least: int) -> None:
    try:
        args.closed = [int(n) for n in args.closed.split(",")]
    except ValueError:
        parser.error("--closed takes whole numbers, comma-separated")
    if any(n < least for n in args.closed) or args.closed != sorted(args.closed):
        parser.error(f"--closed takes sizes of at least {least}, smallest first")


async def published_log(nc: nats.NATS, url: str, state: Path, closed: int,
                        messages: Callable[[Subjects], Iterable[tuple[str, bytes]]]) -> tuple[Settings, EventLog]:
    """A log of its own for ``closed`` cases (streams named by the size), filled with ``messages``;
    its settings, and the log read without keys."""
    s = settings(url, state, closed)
    js = nc.jetstream(publish_async_max_pending=1000)
    await bootstrap(js, s)
    await pipelined_publish(js, list(messages(Subjects(s.subject_prefix))), s.stream, 1000)
    return s, EventLog(nc.jetstream(), s.stream, Subjects(s.subject_prefix), personal=None)


def timed_both_ways(doc: str, amain: Callable[[argparse.Namespace, Path, Cleanup], Awaitable[None]],
                    prefix: str, rounds: str) -> None:
    """``main`` of the benchmarks that time a read before and after behind logs of ``--closed`` sizes."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    add_closed(parser)
    parser.add_argument("--rounds", type=int, default=3, help=f"{rounds} each way (default 3)")
    args = parser.parse_args()
    parse_closed(parser, args, least=1)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    run_in_temp(amain, args, prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_closed(parser)
    parser.add_argument("--open", type=int, default=200, help="open cases after them (default 200)")
    parser.add_argument("--reads", type=int, default=15, help="timed reads of each (default 15)")
    args = parser.parse_args()
    parse_closed(parser, args, least=0)
    if args.open < 1 or args.reads < 1:
        parser.error("--open and --reads must be at least 1")
    run_in_temp(amain, args, "rethink-console-reads-")


if __name__ == "__main__":
    main()
