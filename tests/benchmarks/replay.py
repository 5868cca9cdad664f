"""Micro-benchmark: replaying a log of sealed events into each projection, beside reading it.

``python -m tests.benchmarks.replay [--copies 400] [--rounds 3] [--postgres]`` starts its own
nats-server (loopback, a free port, a temp folder), appends ``--copies`` copies of the
interleaved three-case test log (``tests/unit/test_projection_batches``: every table of every
service, personal fields sealed with each case's key, a person as actor), then per round times
an ordered-consumer read of that log (nats-py alone: the baseline) and ``replay_into`` of each
projection into a fresh SQLite file (and a fresh PostgreSQL database with ``--postgres``).
It prints events/s, the ratio to the same round's ordered read, and CPU per event (both
threads), with the median over the rounds. The ordered read parses headers as the replay does
(``natsheaders``), so it is the faster baseline: without it, reading these messages (each has
the four headers an append sends) costs nats-py about twice as much. The full benchmark (``make bench``) replays the
end-to-end stage's log instead; this one isolates the replay, on a log as large as asked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import nats

from rethink.shared import natsheaders
from rethink.shared.bootstrap import bootstrap
from rethink.shared.eventlog import EventLog, Subjects
from rethink.shared.natsserver import EmbeddedNats, free_port
from rethink.shared.privacy import personal_data
from rethink.shared.rebuild import projection_store, replay_into
from rethink.shared.settings import SERVICES, Settings

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


async def ordered_read(js, s: Settings, total: int) -> float:
    done, seen = asyncio.Event(), 0

    async def count(_msg) -> None:
        nonlocal seen
        seen += 1
        if seen >= total:
            done.set()

    start = time.perf_counter()
    sub = await js.subscribe(f"{s.subject_prefix}.>", cb=count, ordered_consumer=True)
    await done.wait()
    rate = total / (time.perf_counter() - start)
    await sub.unsubscribe()
    return rate


async def replay(js, s: Settings, service: str, url: str) -> tuple[float, float]:
    """(events/s, µs of CPU per event) of one replay into a fresh store at ``url``."""
    store = projection_store(service, url)
    try:
        cpu, start = time.process_time(), time.perf_counter()
        result = await replay_into(js, s, store)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        store.engine.dispose()
    return result.events_read / seconds, cpu * 1e6 / result.events_read


async def amain(args: argparse.Namespace, tmp: Path) -> None:
    natsheaders.install()  # as `rethink projections rebuild` does
    server = EmbeddedNats(free_port(), tmp / "nats").start()
    pg = None
    try:
        s = settings(server.url, tmp / "state")
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await bootstrap(js, s)
        started = time.perf_counter()
        total = await fill(js, s, args.copies)
        print(f"log: {total:,} events ({args.copies} copies of the test log) appended in "
              f"{time.perf_counter() - started:.1f}s")
        if args.postgres:
            pg = _Postgres()
        rows: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        reads: list[float] = []
        for rnd in range(args.rounds):
            read = await ordered_read(js, s, total)
            reads.append(read)
            targets = [("sqlite", lambda svc, r=rnd: f"sqlite:///{tmp / f'{svc}-{r}.db'}")]
            if pg is not None:
                targets.append(("postgresql", lambda _svc: pg.fresh()))
            for label, url in targets:
                for service in SERVICES:
                    rate, cpu = await replay(js, s, service, url(service))
                    rows.setdefault((label, service), []).append((rate, rate / read, cpu))
            print(f"round {rnd + 1}: ordered read {read:,.0f} msgs/s")
        await nc.close()
        print(f"\nmedian of {args.rounds} rounds; ordered read of this log {statistics.median(reads):,.0f} msgs/s")
        print(f"{'database':<11} {'projection':<11} {'events/s':>9} {'x read':>7} {'CPU/event':>10}")
        for (label, service), runs in rows.items():
            rate, ratio, cpu = (statistics.median(x[i] for x in runs) for i in range(3))
            print(f"{label:<11} {service:<11} {rate:9,.0f} {ratio:6.2f}x {cpu:7.0f} µs")
    finally:
        if pg is not None:
            pg.drop_all()
        server.stop()


class _Postgres:
    """Fresh databases on 127.0.0.1:5432 (trust auth), each dropped at the end."""

    def __init__(self) -> None:
        import psycopg

        self._psycopg, self.made = psycopg, []

    def fresh(self) -> str:
        name = f"rethink_replay_{uuid.uuid4().hex[:10]}"
        with self._psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        self.made.append(name)
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

    def drop_all(self) -> None:
        with self._psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
            for name in self.made:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=400, help="copies of the 25-event test log (default 400)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", action="store_true", help="also replay into PostgreSQL at 127.0.0.1:5432")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rethink-replay-") as tmp:
        asyncio.run(amain(args, Path(tmp)))


if __name__ == "__main__":
    main()
