"""What a partnership's cases cost in disk and memory, and whether it grows with the log.

``python -m tests.benchmarks.footprint [--cases 500,2000] [--inflight 16]``
starts the whole system as ``rethink up`` does (a nats-server of its own on loopback, a temp
folder, the four services as processes, SQLite projections) and drives whole case lifecycles
through it (the end-to-end benchmark's: submit, assigned, scheduled, held with one action, the
action completed, closed; eight events a case, personal fields sealed with each case's key).
At each size, once every projection has applied the whole log, it measures:

- **disk**: each JetStream stream's bytes as the server counts them (the log, its receipts, the
  inbound queue, the case keys, the access log, dead letters), each SQLite file and its
  write-ahead log, and the emails the embedded default writes as ``.eml`` files;
- **memory**: each service's resident set, after the traffic and again after a restart behind
  the same log;
- **start-up**: seconds from a restart until every service answers a ping, behind that log.

The baseline, measured in the same run: the events' own bytes (the envelopes as appended),
beside what the log keeps for them. Each size's figures are printed beside the first size's as
bytes per case, so what grows with the cases and what does not can be read off, and a region's
year (25,000 cases, as the growth and case-history benchmarks take it) is projected from the
increments. Sizes are cumulative: the second size's cases are added to the first's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats.js import api

from rethink.shared.natsserver import EmbeddedNats, free_port
from rethink.shared.settings import SERVICES, Settings

from .common import Cleanup, now, run_in_temp, stop_process
from .e2e import Driver, LifecycleFailed, Monitor
from .system import Checkpoints, start_services

REGION_YEAR = 25_000


@dataclass
class Size:
    cases: int
    events: int
    event_bytes: int  # the envelopes as appended (the baseline)
    streams: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (messages, bytes)
    files: dict[str, int] = field(default_factory=dict)  # SQLite file, its -wal, the .eml folder -> bytes
    rss_after_traffic: dict[str, int] = field(default_factory=dict)  # service -> kB
    rss_after_restart: dict[str, int] = field(default_factory=dict)
    start_seconds: float = 0.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks.footprint", description=__doc__.split("\n")[0])
    p.add_argument("--cases", default="500,2000", help="cumulative numbers of closed cases, ascending")
    p.add_argument("--inflight", type=int, default=16, help="lifecycles driven at once")
    args = p.parse_args(argv)
    try:
        args.sizes = [int(x) for x in args.cases.split(",")]
    except ValueError:
        p.error(f"--cases takes whole numbers separated by commas, not {args.cases!r}")
    if len(args.sizes) < 2 or any(n < 1 for n in args.sizes) or args.sizes != sorted(set(args.sizes)):
        p.error("--cases needs at least two sizes, each at least 1, ascending")
    if args.inflight < 1:
        p.error("--inflight must be at least 1")
    return args


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def stream_names(s: Settings) -> dict[str, str]:
    return {"the log": s.stream, "receipts": s.receipt_stream, "inbound": s.inbound_stream,
            "case keys": f"KV_{s.keys_bucket}", "access log": s.access_stream, "dead letters": s.dead_letter_stream}


def sqlite_files(state: Path) -> dict[str, int]:
    """Each SQLite file's bytes, and its write-ahead log's (``<name> wal``: the benchmark's own reader of
    the checkpoints keeps each file open, so it stays as it is while a service runs)."""
    sizes: dict[str, int] = {}
    for f in state.glob("*.db"):
        sizes[f.stem] = f.stat().st_size
        wal = f.with_name(f.name + "-wal")
        if wal.exists():
            sizes[f"{f.stem} wal"] = wal.stat().st_size
    # The embedded default's mail adapter writes each email as a file here (SMTP in production).
    sizes["mail (.eml files)"] = sum(f.stat().st_size for f in (state / "mail").rglob("*") if f.is_file())
    return sizes


async def event_bytes(js, s: Settings, last: int) -> int:
    """The envelopes' own bytes, read back in order (what an agency's and the services' events are)."""
    total = 0
    done = asyncio.get_running_loop().create_future()

    async def on(msg) -> None:
        nonlocal total
        total += len(msg.data)
        if msg.metadata.sequence.stream >= last and not done.done():
            done.set_result(None)

    sub = await js.subscribe(f"{s.subject_prefix}.events.>", stream=s.stream, cb=on, ordered_consumer=True,
                             deliver_policy=api.DeliverPolicy.ALL)
    try:
        await asyncio.wait_for(done, 120)
    finally:
        await sub.unsubscribe()
    return total


async def drive(driver: Driver, n: int, inflight: int) -> None:
    """``n`` lifecycles to their close, ``inflight`` at a time; any that fails stops the run."""
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            trace = await driver.lifecycle("footprint")
            if not trace.closed:
                raise LifecycleFailed(trace.error or "not closed")

    await asyncio.gather(*(worker() for _ in range(min(inflight, n))))


async def amain(args: argparse.Namespace, tmp: Path, cleanup: Cleanup) -> None:
    for key in [k for k in os.environ if k.startswith("RETHINK_")]:
        del os.environ[key]  # a developer's own settings must not reach the services, nor these settings
    server = EmbeddedNats(free_port(), tmp / "nats").start()
    cleanup.add("stop nats-server", server.stop)
    state = tmp / "state"
    s = Settings(nats_url=server.url, state_dir=state, overdue_check_interval_seconds=3600)
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    procs = await start_services(nc, s, SERVICES, cleanup)
    monitor = Monitor(js, s)
    await monitor.start()
    driver = Driver(nc, s, monitor)
    cps = Checkpoints(s, SERVICES, 0.05)
    cps.start()
    sizes: list[Size] = []
    done = 0
    try:
        for n in args.sizes:
            t = now()
            await drive(driver, n - done, args.inflight)
            done = n
            last = max(monitor.seq_seen)
            if not await cps.wait_for(last, 120):
                raise RuntimeError(f"the projections did not reach seq {last}")
            print(f"{n:,} cases: {last:,} events driven in {now() - t:.0f}s")
            size = Size(n, last, await event_bytes(js, s, last))
            size.rss_after_traffic = {name: rss_kb(p.pid) for name, p in procs.items()}
            for proc in procs.values():  # stopped first: the files are measured at rest
                stop_process(proc)
            size.files = sqlite_files(state)
            for label, stream in stream_names(s).items():
                info = await js.stream_info(stream)
                size.streams[label] = (info.state.messages, info.state.bytes)
            t = now()
            procs = await start_services(nc, s, SERVICES, cleanup)
            size.start_seconds = now() - t
            size.rss_after_restart = {name: rss_kb(p.pid) for name, p in procs.items()}
            sizes.append(size)
    finally:
        await cps.stop()
        await monitor.stop()
        await nc.close()
    report(sizes)


def report(sizes: list[Size]) -> None:
    first, last = sizes[0], sizes[-1]
    dn = last.cases - first.cases

    def per_case(a: int, b: int) -> float:
        return (b - a) / dn

    print(f"\nBaseline: the events' own bytes, {last.event_bytes / last.events:,.0f} bytes an event, "
          f"{per_case(first.event_bytes, last.event_bytes):,.0f} bytes a case")
    print(f"\n{'Disk':<26}" + "".join(f"{s.cases:>14,} cases" for s in sizes)
          + f"{'per added case':>18}{'x events':>10}{'at ' + format(REGION_YEAR, ',') + ' cases':>20}")
    base = per_case(first.event_bytes, last.event_bytes)
    rows = [(f"stream: {k}", {s.cases: s.streams[k][1] for s in sizes}) for k in first.streams]
    rows += [(f"file: {k}", {s.cases: s.files.get(k, 0) for s in sizes}) for k in sorted(last.files)]
    for label, by in rows:
        inc = per_case(by[first.cases], by[last.cases])
        region = by[last.cases] + inc * (REGION_YEAR - last.cases)
        print(f"{label:<26}" + "".join(f"{by[s.cases] / 1e6:>17.2f} MB" for s in sizes)
              + f"{inc:>15,.0f} B{inc / base:>9.2f}x{region / 1e6:>17,.0f} MB")
    print(f"\n{'Memory (RSS)':<26}" + "".join(f"{s.cases:>14,} cases" for s in sizes) + f"{'per added case':>18}")
    for name in first.rss_after_traffic:
        for label, attr in (("after traffic", "rss_after_traffic"), ("after restart", "rss_after_restart")):
            by = [getattr(s, attr)[name] for s in sizes]
            print(f"{name + ' ' + label:<26}" + "".join(f"{kb / 1024:>17.1f} MB" for kb in by)
                  + f"{(by[-1] - by[0]) * 1024 / dn:>16,.0f} B")
    print(f"\n{'Start-up, to serving':<26}" + "".join(f"{s.start_seconds:>19.2f} s" for s in sizes))


def main(argv: list[str] | None = None) -> None:
    run_in_temp(amain, parse_args(argv), "rethink-footprint-")


if __name__ == "__main__":
    main()
