"""The performance benchmark (`make bench`): each figure beside its raw JetStream baseline.

    python -m tests.benchmarks.run                 # full run, about 4-5 minutes on 2 cores
    python -m tests.benchmarks.run --quick         # smoke run, about a minute
    python -m tests.benchmarks.run --compare bench-results/<earlier>.json
    python -m tests.benchmarks.run --profile       # also py-spy the services (figures disturbed)

Everything runs in one go against one nats-server started here on a free loopback port
with its store in a temp folder (never a shared server): baselines with nats-py alone,
ingest through intake, whole case lifecycles through the four service processes,
projection rebuilds on SQLite and PostgreSQL, and case-history reads as the log grows.
Whatever happens (error, Ctrl-C, SIGTERM) the services, the server, the streams, the temp
folder and the PostgreSQL database are removed. Results: bench-results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
import traceback
from dataclasses import asdict, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats

from rethink.shared.eventlog import EventLog, Subjects
from rethink.shared.fieldcrypt import sealed_kids
from rethink.shared.natsserver import EmbeddedNats, free_port
from rethink.shared.settings import SERVICES, Settings

from . import report
from .baselines import Baselines, ordered_read, run_baselines
from .common import Cleanup, Config, Figure, fmt_ms, now
from .e2e import E2EResult, Plan, run_e2e
from .history import HistoryResult, run_history
from .ingest import IngestResult, run_ingest
from .rebuild import Postgres, RebuildResult, run_rebuild
from .workload import generated_case, request_submitted_envelope

STAGES = ("ingest", "e2e", "rebuild", "history")


def say(line: str) -> None:
    print(line, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.benchmarks.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run (~1 minute): smaller counts, shorter phases")
    p.add_argument("--only", default=",".join(STAGES),
                   help=f"comma-separated stages to run besides the baselines: {','.join(STAGES)} "
                        "(rebuild needs e2e's log)")
    p.add_argument("--sequential-messages", type=int, help="baseline: sequential js.publish count")
    p.add_argument("--pipelined-messages", type=int, help="baseline: pipelined publish count (also read back)")
    p.add_argument("--window", type=int, help="publishes in flight when pipelining (default 1000)")
    p.add_argument("--ingest-seconds", type=float)
    p.add_argument("--ingest-senders", type=int)
    p.add_argument("--e2e-rate", type=float, help="events/s offered in the latency phase (default 100)")
    p.add_argument("--e2e-seconds", type=float, help="length of the latency phase")
    p.add_argument("--unloaded-seconds", type=float, help="length of the one-lifecycle-at-a-time phase (0 to skip)")
    p.add_argument("--light-rate", type=float, help="events/s offered in the light-load phase (default 25)")
    p.add_argument("--light-seconds", type=float, help="length of the light-load phase (0 to skip)")
    p.add_argument("--saturation-seconds", type=float, help="length of the saturation phase (0 to skip)")
    p.add_argument("--saturation-concurrency", type=int, help="lifecycles kept in flight when saturating")
    p.add_argument("--poll-ms", type=float, help="how often the projections' checkpoints are read")
    p.add_argument("--history-small", type=int, help="log size for the first case-history read (default 1000)")
    p.add_argument("--history-large", type=int, help="log size for the second (default 200000)")
    p.add_argument("--history-reads", type=int, help="timed reads at each size")
    p.add_argument("--rebuild-rounds", type=int,
                   help="replays of each projection on each database; the figure is the median (default 3)")
    p.add_argument("--no-postgres", action="store_true", help="rebuild on SQLite only")
    p.add_argument("--pg-host")
    p.add_argument("--pg-port", type=int)
    p.add_argument("--pg-database", help="existing database to connect to for CREATE/DROP DATABASE (default test)")
    p.add_argument("--out-dir", type=Path, help="where results go (default bench-results)")
    p.add_argument("--profile", action="store_true",
                   help="py-spy the processes during the saturation phase (needs py-spy; disturbs the figures)")
    p.add_argument("--compare", type=Path, metavar="FILE", help="print the differences to an earlier results file")
    p.add_argument("--results", type=Path, metavar="FILE",
                   help="with --compare: compare this results file instead of running")
    return p.parse_args(argv)


def config_from(args: argparse.Namespace) -> Config:
    cfg = Config.quick_defaults() if args.quick else Config()
    names = {f.name for f in fields(Config)}
    for key, value in vars(args).items():
        if key in names and value is not None and key not in ("quick", "profile"):
            setattr(cfg, key, value)
    cfg.profile = args.profile
    cfg.postgres = not args.no_postgres
    stages = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise SystemExit(f"unknown stage(s): {', '.join(sorted(unknown))}; choose from {', '.join(STAGES)}")
    cfg.stages = stages
    if cfg.rebuild_rounds < 1:
        raise SystemExit("--rebuild-rounds must be at least 1")
    return cfg


def settings_for(url: str, tmp: Path, stage: str, tag: str) -> Settings:
    # Every stream named per stage: stages share one server, and a stream's subjects are its prefix's.
    name = f"{stage.upper()}_{tag}"
    return Settings(nats_url=url, state_dir=tmp / stage, stream=f"BENCH_{name}", dead_letter_stream=f"BENCHDL_{name}",
                    receipt_stream=f"BENCHRC_{name}", inbound_stream=f"BENCHIN_{name}",
                    subject_prefix=f"bench{stage}{tag}", overdue_check_interval_seconds=3600)


async def amain(cfg: Config, server: EmbeddedNats, monitor_url: str, tmp: Path, cleanup: Cleanup,
                stamp: str) -> dict[str, Any]:
    stopper = _Stopper(asyncio.current_task())
    tag = secrets.token_hex(3)
    nc = await nats.connect(server.url, max_reconnect_attempts=2)
    js = nc.jetstream()
    streams: list[str] = []
    out: dict[str, Any] = {"errors": {}}

    async def drop(stream: str) -> None:
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)
        with contextlib.suppress(ValueError):
            streams.remove(stream)

    try:
        say(f"Baselines (nats-py alone, {len(request_submitted_envelope())}-byte RequestSubmitted envelope)")
        s = settings_for(server.url, tmp, "baseline", tag)
        streams.append(s.stream)
        out["baselines"] = await run_baselines(nc, s, request_submitted_envelope(), cfg.sequential_messages,
                                               cfg.pipelined_messages, cfg.window, say)
        await drop(s.stream)

        if "ingest" in cfg.stages:
            say(f"Ingest (intake as a process, {cfg.ingest_senders} senders, {cfg.ingest_seconds:g}s)")
            s = settings_for(server.url, tmp, "ingest", tag)
            streams.append(s.stream)
            try:
                out["ingest"] = await run_ingest(nc, s, cfg.ingest_seconds, cfg.ingest_senders, cleanup, say)
            except Exception as exc:
                _failed(out, "ingest", exc)
            await drop(s.stream)

        e2e_settings = settings_for(server.url, tmp, "e2e", tag)
        if "e2e" in cfg.stages:
            say(f"End to end (four service processes; one case at a time {cfg.unloaded_seconds:g}s, "
                f"{cfg.light_rate:g} events/s for {cfg.light_seconds:g}s, {cfg.e2e_rate:g} events/s for "
                f"{cfg.e2e_seconds:g}s, {cfg.saturation_concurrency} cases in flight for {cfg.saturation_seconds:g}s)")
            streams.append(e2e_settings.stream)
            profile_dir = (cfg.out_dir / f"profile-{stamp}") if cfg.profile else None
            try:
                plan = Plan(cfg.unloaded_seconds, cfg.light_rate, cfg.light_seconds, cfg.e2e_rate, cfg.e2e_seconds,
                            cfg.saturation_seconds, cfg.saturation_concurrency, cfg.poll_ms)
                out["e2e"] = await run_e2e(nc, e2e_settings, plan, server.process.pid, cleanup, say, profile_dir,
                                           monitor_url)
            except Exception as exc:
                _failed(out, "e2e", exc)
            finally:
                cleanup.run_matching("service ")  # stop the services: rebuilds and reads run on a quiet box

        e2e: E2EResult | None = out.get("e2e")
        if "rebuild" in cfg.stages:
            if e2e is None:
                say("Rebuild: skipped (it replays the end-to-end log; run the e2e stage too)")
            else:
                say(f"Rebuild (replay_into, {e2e.events_in_log:,} events of the end-to-end log)")
                try:
                    read = await ordered_read(js, Subjects(e2e_settings.subject_prefix).all_events,
                                              e2e_settings.stream, e2e.events_in_log)
                    say(f"  ordered-consumer read of this log: {read:,.0f} msgs/s")
                    pg = Postgres(cfg.pg_host, cfg.pg_port, cfg.pg_database) if cfg.postgres else None
                    profile_dir = (cfg.out_dir / f"profile-{stamp}") if cfg.profile else None
                    result, meta = await run_rebuild(nc, e2e_settings, tmp / "rebuild", pg, cleanup, say, profile_dir,
                                                     cfg.rebuild_rounds)
                    result.ordered_read_of_log = read
                    out["rebuild"], out["rebuild_meta"] = result, meta
                except Exception as exc:
                    _failed(out, "rebuild", exc)

        if "history" in cfg.stages:
            s = settings_for(server.url, tmp, "history", tag)
            streams.append(s.stream)
            try:
                template = await _template_case(js, e2e_settings, e2e)
                say(f"Case history (read_case of one {len(template)}-event case; log of {cfg.history_small:,} "
                    f"then {cfg.history_large:,} events)")
                out["history"] = await run_history(nc, s, template, cfg.history_small, cfg.history_large,
                                                   cfg.history_reads, cfg.window, say)
            except Exception as exc:
                _failed(out, "history", exc)
            await drop(s.stream)
        return out
    finally:
        stopper.cleaning = True
        for stream in list(streams):
            with contextlib.suppress(BaseException):
                await drop(stream)
        with contextlib.suppress(BaseException):
            await nc.close()
        stopper.close()


class _Stopper:
    """Ctrl-C / SIGTERM cancel the run, and keep cancelling until it stops.

    nats-py swallows CancelledError in places (its flush path), so a single cancel can be
    lost; the run's own cleanup (the ``finally`` above) is not interrupted.
    """

    def __init__(self, task: asyncio.Task | None) -> None:
        assert task is not None
        self.task = task
        self.cleaning = False
        self.loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(sig, self._stop)

    def _stop(self) -> None:
        if not self.cleaning and not self.task.done():
            self.task.cancel()
            self.loop.call_later(0.2, self._stop)

    def close(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.remove_signal_handler(sig)


def _failed(out: dict[str, Any], stage: str, exc: Exception) -> None:
    say(f"  {stage} FAILED: {type(exc).__name__}: {exc}")
    out["errors"][stage] = "".join(traceback.format_exception(exc))[-2000:]


async def _template_case(js, settings: Settings, e2e: E2EResult | None) -> list[tuple[str, bytes]]:
    """A real closed case from the end-to-end log (stored bytes), or a small generated one."""
    if e2e is not None and e2e.template_case:
        history = await EventLog(js, settings.stream, Subjects(settings.subject_prefix),
                                 personal=None).read_sealed(e2e.template_case)
        # Its personal fields are sealed with that case's key, bound to its case id: copies under
        # other case ids (the history benchmark's filler) could not be opened, so use plain ones.
        if not any(sealed_kids(r.envelope.data) for r in history):
            return [(r.type, (await js.get_msg(settings.stream, r.seq)).data) for r in history]
    return generated_case("RT-BENCHAAAAA")


def figures(out: dict[str, Any], cfg: Config) -> list[Figure]:
    figs: list[Figure] = []
    b: Baselines | None = out.get("baselines")
    if b is None:
        return figs
    figs += [
        Figure("baseline.sequential", "baseline", "Baseline: sequential js.publish", b.sequential, "msgs/s"),
        Figure("baseline.pipelined", "baseline", f"Baseline: pipelined publish (window {cfg.window})", b.pipelined,
               "msgs/s"),
        Figure("baseline.ordered_read", "baseline", "Baseline: ordered-consumer read", b.ordered_read, "msgs/s"),
    ]
    ing: IngestResult | None = out.get("ingest")
    if ing is not None:
        figs.append(Figure("ingest.accepted", "ingest", f"Ingest: submissions accepted ({ing.senders} senders)",
                           ing.accepted_per_s, "req/s", "baseline.sequential", b.sequential, "msgs/s",
                           detail=f"receipt p99 {ing.latency['p99']:.1f} ms"))
    e2e: E2EResult | None = out.get("e2e")
    if e2e is not None:
        if e2e.saturation is not None:
            sat = e2e.saturation
            figs.append(Figure("e2e.events_per_s", "e2e", "End to end: events/s through all four projections",
                               sat.through_all_per_s, "events/s", "baseline.pipelined", b.pipelined, "msgs/s",
                               "ratio>=", 0.25, detail=f"{sat.concurrency} lifecycles in flight"))
            # What the CPU spent per event allows at most on this machine, whatever the waiting:
            # the services' and the server's CPU time per event, against every core busy with it.
            spent = [ms for name, ms in sat.cpu_ms_per_event.items() if name != "benchmark driver"]
            if spent and None not in spent and sum(spent) > 0:  # type: ignore[arg-type]
                cores = os.cpu_count() or 1
                figs.append(Figure("e2e.cpu_ceiling", "e2e",
                                   f"End to end: CPU ceiling ({cores} cores / CPU per event)",
                                   cores * 1000 / sum(spent), "events/s",  # type: ignore[arg-type]
                                   "baseline.pipelined", b.pipelined, "msgs/s",
                                   detail=f"{sum(spent):.2f} ms CPU per event (services and nats-server)"))  # type: ignore[arg-type]
        if e2e.unloaded is not None:
            s = e2e.unloaded.submit_to_visible.get("all four", {})
            figs.append(Figure("e2e.unloaded.p99.all_four", "e2e",
                               "Latency submit -> visible in all four, one case at a time, p99", s.get("p99"), "ms",
                               detail=f"p50 {s['p50']:.1f}, p95 {s['p95']:.1f}" if s.get("n") else ""))
        if e2e.light is not None:
            s = e2e.light.submit_to_visible.get("all four", {})
            figs.append(Figure("e2e.light.p99.all_four", "e2e",
                               f"Latency submit -> visible in all four at {e2e.light.offered_events_per_s:g} events/s, "
                               "p99", s.get("p99"), "ms",
                               detail=f"p50 {s['p50']:.1f}, p95 {s['p95']:.1f}" if s.get("n") else ""))
        lat = e2e.latency
        figs.append(Figure("e2e.latency_phase_events_per_s", "e2e",
                           f"End to end at offered {lat.offered_events_per_s:g} events/s: achieved",
                           lat.through_all_per_s, "events/s", "baseline.pipelined", b.pipelined, "msgs/s"))
        for name in ("all four", *SERVICES):
            s = lat.submit_to_visible.get(name, {})
            label = f"Latency submit -> visible in {name} at {lat.offered_events_per_s:g} events/s, p99"
            figs.append(Figure(f"e2e.p99.{name.replace(' ', '_')}", "e2e", label, s.get("p99"), "ms",
                               target_kind="value<", target=100.0,
                               detail=f"p50 {s['p50']:.1f}, p95 {s['p95']:.1f}" if s.get("n") else ""))
    rb: RebuildResult | None = out.get("rebuild")
    if rb is not None:
        for run in rb.runs:
            spread = (f"median of {len(run.rounds)}: {min(run.rounds):,.0f}-{max(run.rounds):,.0f}"
                      if len(run.rounds) > 1 else "")
            figs.append(Figure(f"rebuild.{run.database}.{run.service}", "rebuild",
                               f"Rebuild {run.service} on {run.database}", run.events_per_s, "events/s",
                               "baseline.ordered_read", b.ordered_read, "msgs/s", "ratio>=", 0.5, detail=spread))
    h: HistoryResult | None = out.get("history")
    if h is not None:
        figs.append(Figure("history.small", "history",
                           f"Case history ({h.case_events} events), {h.small.log_events:,} in log",
                           h.small.median_ms, "ms", detail="median"))
        figs.append(Figure("history.large", "history",
                           f"Case history ({h.case_events} events), {h.large.log_events:,} in log",
                           h.large.median_ms, "ms", "history.small", h.small.median_ms, "ms", "ratio<=", 1.5,
                           detail="median"))
        figs.append(Figure("history.recent", "history",
                           f"Case history of a case written last, {h.recent_at_large.log_events:,} in log",
                           h.recent_at_large.median_ms, "ms", "history.small", h.small.median_ms, "ms",
                           detail="median"))
    return figs


def details(out: dict[str, Any]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for key in ("baselines", "ingest", "e2e", "rebuild", "history"):
        if out.get(key) is not None:
            d[key] = asdict(out[key])
    d["rebuild_meta"] = out.get("rebuild_meta", {})
    return d


def print_e2e_extras(e2e: E2EResult) -> None:
    for phase in (e2e.unloaded, e2e.light, e2e.latency, e2e.saturation):
        if phase is None:
            continue
        say(f"\n{phase.name} phase: appended {phase.appended_per_s:,.0f} events/s; through each projection: "
            + ", ".join(f"{n} {v:,.0f}" for n, v in phase.per_service_per_s.items())
            + f"; backlog at the end of the window {phase.backlog_at_end} events")
        say(f"  event appended -> visible in all four: {fmt_ms(phase.append_to_visible_all)}")
        for name, s in phase.command_rtt.items():
            say(f"  command {name:<16} round trip: {fmt_ms(s)}")
        cpu = ", ".join(f"{n} {phase.cpu_share[n] * 100:.0f}% ({phase.cpu_ms_per_event[n]:.2f} ms/event)"
                        for n in phase.cpu_share if phase.cpu_share[n] is not None
                        and phase.cpu_ms_per_event.get(n) is not None)
        say(f"  CPU (share of one core, per event through all four): {cpu}")
        if phase.nats_messages_per_event:
            say("  NATS messages per event through all four: "
                + ", ".join(f"{k} {v:.1f}" for k, v in phase.nats_messages_per_event.items()))
    say(f"\nquery round trip on the idle system: ping {fmt_ms(e2e.ping_rtt)}; case {fmt_ms(e2e.case_query_rtt)}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for given in (args.compare, args.results):  # before a run of minutes, not after it
        if given is not None and not given.is_file():
            raise SystemExit(f"no results file at {given} (runs write bench-results/<UTC timestamp>.json)")
    if args.results is not None:
        if args.compare is None:
            raise SystemExit("--results is only used with --compare")
        current = json_load(args.results)
        say(report.compare(args.compare, current))
        return 0
    cfg = config_from(args)
    # The services read RETHINK_* from the environment: a developer's own settings (another
    # database, another server) must not leak into the benchmark's processes.
    for key in [k for k in os.environ if k.startswith("RETHINK_")]:
        del os.environ[key]
    stamp = report.timestamp()
    started = datetime.now(UTC)
    load_start = os.getloadavg()
    cleanup = Cleanup()
    signal.signal(signal.SIGTERM, _interrupt)  # outside the event loop: as Ctrl-C
    tmp = Path(tempfile.mkdtemp(prefix="rethink-bench-"))
    cleanup.add(f"remove {tmp}", lambda: shutil.rmtree(tmp, ignore_errors=True))
    t0 = now()
    out: dict[str, Any] | None = None
    interrupted = False
    try:
        monitor_port = free_port()
        server = EmbeddedNats(free_port(), tmp / "nats", extra_args=["-m", str(monitor_port)]).start()
        cleanup.add("stop nats-server", server.stop)
        say(f"nats-server on {server.url} (store {tmp / 'nats'}); mode {'quick' if cfg.quick else 'full'}; "
            f"load average {load_start[0]:.2f} on {os.cpu_count()} CPUs")
        if load_start[0] > 0.5:
            say("  note: something else is running on this machine; the figures will be lower than on a quiet one")
        # The monitoring port listens on the -a address (loopback), like the client port.
        out = asyncio.run(amain(cfg, server, f"http://127.0.0.1:{monitor_port}", tmp, cleanup, stamp))
    except (KeyboardInterrupt, asyncio.CancelledError):
        interrupted = True
        say("\ninterrupted: cleaning up")
    finally:
        cleanup.run(say)
    if interrupted or out is None:
        return 130
    figs = figures(out, cfg)
    say("")
    say(report.table(figs))
    if out.get("e2e") is not None:
        print_e2e_extras(out["e2e"])
        if out["e2e"].profile:
            say(f"\nprofile: {out['e2e'].profile.get('dir') or out['e2e'].profile.get('error')}")
    rb: RebuildResult | None = out.get("rebuild")
    if rb is not None:
        say(f"\nrebuild: PostgreSQL {rb.postgres}; ordered read of the end-to-end log itself: "
            f"{rb.ordered_read_of_log:,.0f} msgs/s")
    payload = {
        "started_at": started.isoformat(), "duration_s": round(now() - t0, 1),
        "mode": "quick" if cfg.quick else "full", "profiled": cfg.profile,
        "load_average": {"start": load_start, "end": os.getloadavg()}, "command": [sys.executable, *sys.argv],
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "machine": {**report.machine(), **{k: v for k, v in out.get("rebuild_meta", {}).items()}},
        "figures": [f.to_json() for f in figs], "details": details(out), "errors": out["errors"],
    }
    path = report.write_json(cfg.out_dir, stamp, payload)
    say(f"\nresults: {path} (run took {payload['duration_s']:.0f}s)")
    if args.compare is not None:
        say("")
        say(report.compare(args.compare, payload))
    return 1 if out["errors"] else 0


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def json_load(path: Path) -> dict[str, Any]:
    import json

    return json.loads(Path(path).read_text())


if __name__ == "__main__":
    sys.exit(main())
