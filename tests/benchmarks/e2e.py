"""End to end: whole case lifecycles through the four service processes.

Each lifecycle is submit -> (FacilitatorAssigned) -> schedule -> record a resolved meeting
with one action -> (ActionRecorded) -> complete the action -> (CaseClosed): four commands,
four reactions, eight events. The driver learns of reactions from an ordered consumer on
the log (no polling of the services), and reads the services' checkpoints from their
SQLite files to see when each event became visible in each projection.

Four phases:
- unloaded: one lifecycle at a time, back to back: latency with no queueing behind other cases;
- light: an open-loop load at a low fixed rate (default 25 events/s);
- latency: an open-loop load at the issue's rate (default 100 events/s = 12.5 lifecycles/s);
  submission-to-visibility latency per projection, p50/p95/p99;
- saturation: a fixed number of lifecycles always in flight (closed loop); the events/s that
  make it through all four projections is the system's capacity.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.js import api

from rethink.shared.eventlog import Subjects
from rethink.shared.settings import SERVICES, Settings

from . import workload
from .common import Cleanup, cpu_seconds, now, summary_ms
from .profiling import Profiler
from .system import Checkpoints, ping, start_services

EVENTS_PER_CASE = 8
STEP_TIMEOUT = 60.0


class LifecycleFailed(RuntimeError):
    pass


class Monitor:
    """Every event of the log as it is appended: its seq, when it was seen, and who waits for it."""

    def __init__(self, js, settings: Settings) -> None:
        self.js = js
        self.settings = settings
        self.seen: dict[str, dict[str, tuple[int, float]]] = defaultdict(dict)
        self.seq_seen: dict[int, float] = {}
        self.seq_case: dict[int, str] = {}
        self._waiters: dict[tuple[str, str], list[asyncio.Future[tuple[int, float]]]] = defaultdict(list)
        self._sub = None

    async def start(self) -> None:
        self._sub = await self.js.subscribe(Subjects(self.settings.subject_prefix).all_events,
                                            stream=self.settings.stream, cb=self._on, ordered_consumer=True,
                                            deliver_policy=api.DeliverPolicy.ALL)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    async def _on(self, msg) -> None:
        t = now()
        seq = msg.metadata.sequence.stream
        _, case_id, event_type = msg.subject.rsplit(".", 2)
        self.seq_seen[seq] = t
        self.seq_case[seq] = case_id
        self.seen[case_id].setdefault(event_type, (seq, t))
        for fut in self._waiters.pop((case_id, event_type), []):
            if not fut.done():
                fut.set_result((seq, t))

    async def wait(self, case_id: str, event_type: str, timeout: float = STEP_TIMEOUT) -> tuple[int, float]:
        if event_type in self.seen.get(case_id, {}):
            return self.seen[case_id][event_type]
        fut: asyncio.Future[tuple[int, float]] = asyncio.get_running_loop().create_future()
        self._waiters[(case_id, event_type)].append(fut)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise LifecycleFailed(f"{case_id}: no {event_type} within {timeout}s") from None


@dataclass
class Trace:
    phase: str
    t_submit: float
    case_id: str | None = None
    closed: bool = False
    error: str | None = None


@dataclass
class Driver:
    nc: nats.NATS
    settings: Settings
    monitor: Monitor
    slots: workload.Slots = field(default_factory=workload.Slots)
    rtt: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    traces: list[Trace] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.subjects = Subjects(self.settings.subject_prefix)
        self.body = workload.submission_bytes()

    async def _request(self, phase: str, name: str, subject: str, body: bytes) -> dict[str, Any]:
        t = now()
        msg = await self.nc.request(subject, body, timeout=STEP_TIMEOUT)
        self.rtt[(phase, name)].append(now() - t)
        reply = json.loads(msg.data)
        if reply.get("status") != "accepted":
            raise LifecycleFailed(f"{name} refused: {json.dumps(reply)[:300]}")
        return reply

    async def _command(self, phase: str, service: str, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        return await self._request(phase, name, self.subjects.command(service, name), json.dumps(payload).encode())

    async def lifecycle(self, phase: str) -> Trace:
        trace = Trace(phase, now())
        self.traces.append(trace)
        try:
            receipt = await self._request(phase, "submit", self.subjects.intake("northside-school", "submit"), self.body)
            case_id = trace.case_id = receipt["case_id"]
            await self.monitor.wait(case_id, "FacilitatorAssigned")
            await self._command(phase, "scheduling", "schedule", workload.schedule_command(case_id, self.slots.next()))
            held = await self._command(phase, "meeting", "record", workload.record_command(case_id))
            await self.monitor.wait(case_id, "ActionRecorded")
            await self._command(phase, "meeting", "complete_action",
                                workload.complete_command(case_id, held["action_ids"][0]))
            await self.monitor.wait(case_id, "CaseClosed")
            trace.closed = True
        except (LifecycleFailed, nats.errors.Error, TimeoutError) as exc:
            trace.error = f"{type(exc).__name__}: {exc}"[:300]
        return trace


@dataclass
class Phase:
    name: str
    seconds: float
    window: tuple[float, float] = (0.0, 0.0)
    offered_events_per_s: float | None = None
    concurrency: int | None = None
    started: int = 0
    closed: int = 0
    failed: int = 0
    unfinished: int = 0  # still in flight when the phase's lifecycles were given up on
    skipped: int = 0  # open loop: not started because too many were already in flight
    appended_per_s: float = 0.0
    through_all_per_s: float = 0.0
    per_service_per_s: dict[str, float] = field(default_factory=dict)
    backlog_at_end: int = 0
    submit_to_visible: dict[str, dict[str, Any]] = field(default_factory=dict)
    append_to_visible_all: dict[str, Any] = field(default_factory=dict)
    lifecycle_seconds: dict[str, Any] = field(default_factory=dict)
    command_rtt: dict[str, dict[str, Any]] = field(default_factory=dict)
    cpu_ms_per_event: dict[str, float | None] = field(default_factory=dict)
    cpu_share: dict[str, float | None] = field(default_factory=dict)
    nats_messages_per_event: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class E2EResult:
    unloaded: Phase | None
    light: Phase | None
    latency: Phase
    saturation: Phase | None
    events_in_log: int
    ping_rtt: dict[str, Any]
    case_query_rtt: dict[str, Any]
    template_case: str | None
    profile: dict[str, Any] | None = None


def _measure(phase: Phase, driver: Driver, cps: Checkpoints, monitor: Monitor) -> None:
    t0, t1 = phase.window
    dt = t1 - t0
    per_service = {n: (cps.applied_by(n, t1) - cps.applied_by(n, t0)) / dt for n in cps.names}
    phase.per_service_per_s = per_service
    phase.through_all_per_s = min(per_service.values())
    phase.appended_per_s = sum(1 for t in monitor.seq_seen.values() if t0 <= t < t1) / dt
    last_appended = max((s for s, t in monitor.seq_seen.items() if t < t1), default=0)
    phase.backlog_at_end = last_appended - min(cps.applied_by(n, t1) for n in cps.names)

    traces = [tr for tr in driver.traces if tr.phase == phase.name and t0 <= tr.t_submit < t1]
    phase.started = len([tr for tr in driver.traces if tr.phase == phase.name])
    phase.closed = sum(tr.closed for tr in driver.traces if tr.phase == phase.name)
    phase.failed = sum(tr.error is not None for tr in driver.traces if tr.phase == phase.name)
    phase.unfinished = sum(tr.error is None and not tr.closed for tr in driver.traces if tr.phase == phase.name)
    phase.errors = sorted({tr.error for tr in driver.traces if tr.phase == phase.name and tr.error})[:5]

    by_service: dict[str, list[float]] = {n: [] for n in cps.names}
    lifecycles: list[float] = []
    in_all: list[float] = []
    for tr in traces:
        seen = monitor.seen.get(tr.case_id or "", {})
        if "RequestSubmitted" not in seen:
            continue  # refused or never answered: counted as failed, not as a latency
        seq = seen["RequestSubmitted"][0]
        ats = {n: cps.visible_at(n, seq) for n in cps.names}
        for n, at in ats.items():
            if at is not None:
                by_service[n].append(at - tr.t_submit)
        # Never visible by the end (the projections are waited for first) counts as infinitely late.
        in_all.append(max(at if at is not None else float("inf") for at in ats.values()) - tr.t_submit)
        if tr.closed:
            closed_at = cps.visible_at("escalation", seen["CaseClosed"][0])
            if closed_at is not None:
                lifecycles.append(closed_at - tr.t_submit)
    phase.submit_to_visible = {n: summary_ms(v) for n, v in by_service.items()}
    phase.submit_to_visible["all four"] = summary_ms(in_all)
    appended_to_all = []
    for seq, t in monitor.seq_seen.items():
        if t0 <= t < t1:
            ats = [cps.visible_at(n, seq) for n in cps.names]
            if all(a is not None for a in ats):
                appended_to_all.append(max(ats) - t)
    phase.append_to_visible_all = summary_ms(appended_to_all)
    phase.lifecycle_seconds = {k: (v / 1000 if isinstance(v, float) else v) for k, v in summary_ms(lifecycles).items()}
    phase.command_rtt = {name: summary_ms(v) for (p, name), v in driver.rtt.items() if p == phase.name}


async def _open_loop(driver: Driver, phase: Phase, rate_events: float, max_inflight: int) -> list[asyncio.Task]:
    cases_per_s = rate_events / EVENTS_PER_CASE
    tasks: list[asyncio.Task] = []
    start = now()
    k = 0
    while True:
        due = start + k / cases_per_s
        if due >= start + phase.seconds:
            break
        delay = due - now()
        if delay > 0:
            await asyncio.sleep(delay)
        if sum(not t.done() for t in tasks) < max_inflight:
            tasks.append(asyncio.create_task(driver.lifecycle(phase.name)))
        else:
            phase.skipped += 1
        k += 1
    return tasks


async def _closed_loop(driver: Driver, phase: Phase, concurrency: int) -> list[asyncio.Task]:
    stop_at = now() + phase.seconds

    async def worker() -> None:
        while now() < stop_at:
            await driver.lifecycle(phase.name)

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(phase.seconds)
    return tasks


async def _finish(tasks: list[asyncio.Task], timeout: float) -> None:
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for t in pending:
        t.cancel()


@dataclass
class Probe:
    """CPU time of every process, and the server's message counters (its monitoring port, on loopback)."""

    pids: dict[str, int]
    monitor_url: str | None = None

    def snapshot(self) -> dict[str, float | None]:
        out = {name: cpu_seconds(pid) for name, pid in self.pids.items() if name != "benchmark driver"}
        out["benchmark driver"] = time.process_time()
        if self.monitor_url:
            try:
                with urllib.request.urlopen(f"{self.monitor_url}/varz", timeout=2) as resp:
                    varz = json.load(resp)
                out[MSGS_IN], out[MSGS_OUT] = float(varz["in_msgs"]), float(varz["out_msgs"])
            except (OSError, ValueError, KeyError):
                pass
        return out


MSGS_IN, MSGS_OUT = "nats messages in", "nats messages out"


@dataclass
class Plan:
    """What the end-to-end stage runs; a phase of 0 seconds is skipped."""

    unloaded_seconds: float = 10.0
    light_rate: float = 25.0
    light_seconds: float = 20.0
    rate: float = 100.0
    seconds: float = 45.0
    saturation_seconds: float = 40.0
    concurrency: int = 24
    poll_ms: float = 5.0


async def run_e2e(nc: nats.NATS, settings: Settings, plan: Plan, server_pid: int, cleanup: Cleanup, say,
                  profile_dir=None, monitor_url: str | None = None) -> E2EResult:
    procs = await start_services(nc, settings, SERVICES, cleanup)
    say(f"  four services up (pids {', '.join(f'{n} {p.pid}' for n, p in procs.items())})")
    js = nc.jetstream()
    monitor = Monitor(js, settings)
    await monitor.start()
    cps = Checkpoints(settings, SERVICES, plan.poll_ms / 1000.0)
    cps.start()
    driver = Driver(nc, settings, monitor)
    pids = {**{n: p.pid for n, p in procs.items()}, "nats-server": server_pid, "benchmark driver": os.getpid()}
    probe = Probe(pids, monitor_url)
    profile: dict[str, Any] | None = None

    async def run_phase(phase: Phase, warm: float, load, profiled: bool = False) -> Phase:
        nonlocal profile
        profiler = None
        if profiled and profile_dir is not None:
            profiler = Profiler(profile_dir, pids, duration=max(1.0, phase.seconds - warm))
            profiler.start()
        mark = asyncio.create_task(_mark_after(warm, probe))  # the first `warm` seconds are not counted
        tasks = await load()  # returns when the phase's time is up, its lifecycles still in flight
        (t0, cpu0), t1, cpu1 = await mark, now(), probe.snapshot()
        phase.window = (t0, t1)
        await _finish(tasks, STEP_TIMEOUT)
        if profiler is not None:
            profile = await profiler.finish()
        if not await cps.wait_for((await js.stream_info(settings.stream)).state.last_seq, 90):
            say(f"  warning: projections did not catch up within 90s after the {phase.name} phase")
        _measure(phase, driver, cps, monitor)
        _cpu(phase, cpu0, cpu1)
        _say_phase(say, phase)
        return phase

    try:
        # Warm the services (imports, first queries, SQLite files) before anything is measured.
        await asyncio.gather(*(driver.lifecycle("warm-up") for _ in range(4)))
        unloaded = light = saturation = None
        if plan.unloaded_seconds > 0:
            # One lifecycle at a time, back to back: latency with no queueing behind other cases.
            unloaded = Phase("unloaded", plan.unloaded_seconds, concurrency=1)
            await run_phase(unloaded, 0.0, lambda: _closed_loop(driver, unloaded, 1))
        if plan.light_seconds > 0:
            light = Phase("light", plan.light_seconds, offered_events_per_s=plan.light_rate)
            await run_phase(light, min(2.0, plan.light_seconds / 5),
                            lambda: _open_loop(driver, light, plan.light_rate, max_inflight=50))
        latency = Phase("latency", plan.seconds, offered_events_per_s=plan.rate)
        await run_phase(latency, min(2.0, plan.seconds / 5),
                        lambda: _open_loop(driver, latency, plan.rate, max_inflight=max(50, int(plan.rate))))
        if plan.saturation_seconds > 0:
            saturation = Phase("saturation", plan.saturation_seconds, concurrency=plan.concurrency)
            await run_phase(saturation, min(3.0, plan.saturation_seconds / 4),
                            lambda: _closed_loop(driver, saturation, plan.concurrency), profiled=True)

        ping_rtt, case_rtt = await _query_rtts(nc, settings, driver)
        template = next((tr.case_id for tr in driver.traces if tr.closed and tr.phase == "latency"), None)
        events = (await js.stream_info(settings.stream)).state.messages
        return E2EResult(unloaded, light, latency, saturation, events, ping_rtt, case_rtt, template, profile)
    finally:
        await cps.stop()
        await monitor.stop()


async def _mark_after(delay: float, probe: Probe) -> tuple[float, dict[str, float | None]]:
    await asyncio.sleep(delay)
    return now(), probe.snapshot()


def _cpu(phase: Phase, cpu0: dict[str, float | None], cpu1: dict[str, float | None]) -> None:
    """CPU seconds each process used over the measured window: its share of one core, and per event."""
    elapsed = phase.window[1] - phase.window[0]
    events = phase.through_all_per_s * elapsed
    for name in (MSGS_IN, MSGS_OUT):
        a, b = cpu0.pop(name, None), cpu1.pop(name, None)
        if a is not None and b is not None and events:
            phase.nats_messages_per_event[name.removeprefix("nats messages ")] = (b - a) / events
    for name, a in cpu0.items():
        b = cpu1.get(name)
        if a is None or b is None:
            phase.cpu_ms_per_event[name] = phase.cpu_share[name] = None
            continue
        phase.cpu_share[name] = (b - a) / elapsed
        phase.cpu_ms_per_event[name] = (b - a) * 1000 / events if events else None


def _say_phase(say, p: Phase) -> None:
    load = (f"offered {p.offered_events_per_s:g} events/s" if p.offered_events_per_s
            else f"{p.concurrency} lifecycles in flight")
    say(f"  {p.name}: {load}; {p.appended_per_s:,.0f} events/s appended, {p.through_all_per_s:,.0f} events/s "
        f"through all four projections; {p.started} lifecycles started, {p.closed} closed, {p.failed} failed, {p.unfinished} unfinished, "
        f"{p.skipped} not started")
    for name, s in p.submit_to_visible.items():
        if s.get("n"):
            say(f"    submit -> visible in {name}: p50 {s['p50']:.1f}, p95 {s['p95']:.1f}, p99 {s['p99']:.1f} ms")
    for e in p.errors:
        say(f"    error: {e}")


async def _query_rtts(nc: nats.NATS, settings: Settings, driver: Driver) -> tuple[dict, dict]:
    """Round trip of a query on an idle system: what a screen adds on top of projection visibility."""
    pings: list[float] = []
    cases: list[float] = []
    case_id = next((tr.case_id for tr in driver.traces if tr.closed), None)
    subjects = Subjects(settings.subject_prefix)
    for _ in range(50):
        for name in SERVICES:
            t = now()
            await ping(nc, settings, name)
            pings.append(now() - t)
            if case_id:
                t = now()
                await nc.request(subjects.query(name, "case"), json.dumps({"case_id": case_id}).encode(), timeout=5)
                cases.append(now() - t)
    return summary_ms(pings), summary_ms(cases)

