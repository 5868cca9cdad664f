"""Micro-benchmark: replaying a log of sealed events into each projection, beside reading it.

``python -m tests.benchmarks.replay [--copies 400] [--rounds 3] [--postgres]`` starts its own
nats-server (loopback, a free port, a temp folder), appends ``--copies`` copies of the
interleaved three-case test log (``tests/unit/test_projection_batches``: every table of every
service, personal fields sealed with each case's key, a person as actor), then per round times
an ordered-consumer read of that log (nats-py alone: the baseline) and ``replay_into`` of each
projection into a fresh SQLite file (and, with ``--postgres``, its schema in a PostgreSQL database
of its own, dropped at the end).
It prints events/s, the ratio to the same round's ordered read, and CPU per event (both
threads), with the median over the rounds. ``--unfolded`` replays each projection both with its
batches folding a row's later writes into the write that made it (``folding``) and without, whatever
the code decides for the database (it folds on PostgreSQL, not on SQLite), the two ways alternated
within each round, and prints the unfolded row beneath with the ratios of the two. The ordered read parses headers as the replay does
(``natsheaders``), so it is the faster baseline: without it, reading these messages (each has
the four headers an append sends) costs nats-py about twice as much. The full benchmark
(``make bench``) replays the end-to-end stage's log instead; this one isolates the replay, on a
log as large as asked.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import time
import uuid
from pathlib import Path

import nats

from rethink.shared import natsheaders, natsparser
from rethink.shared.bootstrap import bootstrap
from rethink.shared.eventlog import EventLog, Subjects
from rethink.shared.natsserver import EmbeddedNats, free_port
from rethink.shared.privacy import personal_data
from rethink.shared.settings import SERVICES, Settings

from .baselines import ordered_read
from .common import Cleanup, run_in_temp
from .rebuild import Postgres, RebuildRun, replay_once

ACTOR = "sw@council.example.org"
CASE_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def settings(url: str, state: Path) -> Settings:
    return Settings(nats_url=url, state_dir=state, stream="REPLAY", dead_letter_stream="REPLAYDL",
                    receipt_stream="REPLAYRC", inbound_stream="REPLAYIN", keys_bucket="REPLAYKEYS",
                    access_stream="REPLAYACC", subject_prefix="replay")


def case_id() -> str:
    return "RT-" + "".join(secrets.choice(CASE_LETTERS) for _ in range(10))


async def fill(js, s: Settings, copies: int) -> int:
    """Append the test log ``copies`` times: fresh case, event and meeting ids for each copy."""
    from tests.unit.test_projection_batches import events

    log = EventLog(js, s.stream, Subjects(s.subject_prefix), personal=personal_data(js, s))
    template = [r for r in events() if r.type != "PersonalDataErased"]  # an erasure needs its key destroyed
    last: dict[str, int] = {}
    for n in range(copies):
        ids = {c: case_id() for c in {r.envelope.case_id for r in template}}
        for r in template:
            case = ids[r.envelope.case_id]
            data = json.loads(json.dumps(r.envelope.data).replace("M-000000", f"M-{n:06d}"))
            env = r.envelope.model_copy(update={"case_id": case, "event_id": uuid.uuid4(), "data": data,
                                                "actor": ACTOR})
            last[case] = (await log.append(case, [env], last.get(case, 0)))[-1]
    return (await js.stream_info(s.stream)).state.messages


async def amain(args: argparse.Namespace, tmp: Path, cleanup: Cleanup) -> None:
    server = EmbeddedNats(free_port(), tmp / "nats").start()
    cleanup.add("stop the nats-server", server.stop)
    natsheaders.install()  # as `rethink projections rebuild` does, and before the baseline's read
    natsparser.install()
    s = settings(server.url, tmp / "state")
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await bootstrap(js, s)
    started = time.perf_counter()
    total = await fill(js, s, args.copies)
    print(f"log: {total:,} events ({args.copies} copies of the test log) appended in "
          f"{time.perf_counter() - started:.1f}s")
    targets = [("sqlite", lambda svc, r: f"sqlite:///{tmp / f'{svc}-{r}.db'}")]
    if args.postgres:  # one database: each projection has its schema, and a replay starts by emptying it
        url = Postgres("127.0.0.1", 5432, "test").create(cleanup)
        targets.append(("postgresql", lambda _svc, _r: url))
    rows: dict[tuple[str, str, str], list[RebuildRun]] = {}
    reads: list[float] = []
    ways = ("folded", "unfolded") if args.unfolded else ("",)  # "": as the code decides
    for rnd in range(args.rounds):
        reads.append(await ordered_read(js, Subjects(s.subject_prefix).all_events, s.stream, total))
        for label, url_of in targets:
            for service in SERVICES:
                for way in (ways if rnd % 2 == 0 else ways[::-1]):  # alternated: neither always first
                    folds = None if not way else way == "folded"
                    rows.setdefault((label, service, way), []).append(
                        await replay_once(js, s, service, url_of(service, f"{rnd}{way}"), label, folds=folds))
        print(f"round {rnd + 1}: ordered read {reads[-1]:,.0f} msgs/s")
    await nc.close()
    read = statistics.median(reads)
    print(f"\nmedian of {args.rounds} rounds; ordered read of this log {read:,.0f} msgs/s")
    print(f"{'database':<11} {'projection':<20} {'events/s':>9} {'x read':>7} {'CPU/event':>10}")
    medians: dict[tuple[str, str, str], tuple[float, float]] = {}
    for (label, service, way), runs in rows.items():
        rate = statistics.median(r.events_per_s for r in runs)
        cpu = statistics.median(r.cpu_per_event_us for r in runs)
        medians[label, service, way] = rate, cpu
        name = f"{service} ({way})" if way else service
        line = f"{label:<11} {name:<20} {rate:9,.0f} {rate / read:6.2f}x {cpu:7.0f} µs"
        if way == "unfolded":
            code = medians[label, service, "folded"]
            line += f"   folded / unfolded: events/s {code[0] / rate:4.2f}x, CPU {code[1] / cpu:4.2f}x"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=400, help="copies of the 25-event test log (default 400)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", action="store_true", help="also replay into PostgreSQL at 127.0.0.1:5432")
    parser.add_argument("--unfolded", action="store_true",
                        help="also replay with no update folded into its insert, alternated (the baseline)")
    args = parser.parse_args()
    if args.copies < 1 or args.rounds < 1:
        parser.error("--copies and --rounds must be at least 1")
    run_in_temp(amain, args, "rethink-replay-")


if __name__ == "__main__":
    main()
