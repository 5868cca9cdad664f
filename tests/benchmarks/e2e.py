"""End to end: whole case lifecycles through the four service processes.

Each lifecycle is submit -> (FacilitatorAssigned) -> schedule -> record a resolved meeting
with one action -> (ActionRecorded) -> complete the action -> (CaseClosed): four commands,
four reactions, eight events. The driver learns of reactions from an ordered consumer on
the log (no polling of the services), and reads the services' checkpoints from their
SQLite files to see when each event became visible in each projection.

Three phases:
- unloaded: one lifecycle at a time, the latency floor with no queueing;
- latency: an open-loop load at a fixed rate (default 100 events/s = 12.5 lifecycles/s);
  submission-to-visibility latency per projection, p50/p95/p99;
- saturation: a fixed number of lifecycles always in flight (closed loop); the events/s that
  make it through all four projections is the system's capacity.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.js import api

from rethink.shared.eventlog import Subjects
from rethink.shared.settings import SERVICES, Settings

from . import workload
from .common import Cleanup, cpu_seconds, now, percentile, summary_ms
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
    rtt: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    traces: list[Trace] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.subjects = Subjects(self.settings.subject_prefix)
        self.body = workload.submission_bytes()

    async def _request(self, name: str, subject: str, body: bytes) -> dict[str, Any]:
        t = now()
        msg = await self.nc.request(subject, body, timeout=STEP_TIMEOUT)
        self.rtt[name].append(now() - t)
        reply = json.loads(msg.data)
        if reply.get("status") != "accepted":
            raise LifecycleFailed(f"{name} refused: {json.dumps(reply)[:300]}")
        return reply

    async def _command(self, service: str, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        return await self._request(name, self.subjects.command(service, name), json.dumps(payload).encode())

    async def lifecycle(self, phase: str) -> Trace:
        trace = Trace(phase, now())
        self.traces.append(trace)
        try:
            receipt = await self._request("submit", self.subjects.intake("northside-school", "submit"), self.body)
            case_id = trace.case_id = receipt["case_id"]
            await self.monitor.wait(case_id, "FacilitatorAssigned")
            await self._command("scheduling", "schedule", workload.schedule_command(case_id, self.slots.next()))
            held = await self._command("meeting", "record", workload.record_command(case_id))
            await self.monitor.wait(case_id, "ActionRecorded")
            await self._command("meeting", "complete_action",
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
    skipped: int = 0
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
    errors: list[str] = field(default_factory=list)


@dataclass
class E2EResult:
    unloaded: Phase | None
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
    phase.closed = sum(tr.closed for tr in traces)
    phase.failed = sum(tr.error is not None for tr in driver.traces if tr.phase == phase.name)
    phase.errors = sorted({tr.error for tr in driver.traces if tr.phase == phase.name and tr.error})[:5]

    by_service: dict[str, list[float]] = {n: [] for n in cps.names}
    lifecycles: list[float] = []
    for tr in traces:
        if not tr.closed or tr.case_id is None:
            continue
        seen = monitor.seen[tr.case_id]
        seq = seen["RequestSubmitted"][0]
        for n in cps.names:
            at = cps.visible_at(n, seq)
            if at is not None:
                by_service[n].append(at - tr.t_submit)
        closed_at = cps.visible_at("escalation", seen["CaseClosed"][0])
        if closed_at is not None:
            lifecycles.append(closed_at - tr.t_submit)
    phase.submit_to_visible = {n: summary_ms(v) for n, v in by_service.items()}
    phase.submit_to_visible["all four"] = summary_ms(
        max(cps.visible_at(n, monitor.seen[tr.case_id]["RequestSubmitted"][0]) or float("inf") for n in cps.names)
        - tr.t_submit for tr in traces if tr.closed and tr.case_id)
    appended_to_all = []
    for seq, t in monitor.seq_seen.items():
        if t0 <= t < t1:
            ats = [cps.visible_at(n, seq) for n in cps.names]
            if all(a is not None for a in ats):
                appended_to_all.append(max(ats) - t)
    phase.append_to_visible_all = summary_ms(appended_to_all)
    phase.lifecycle_seconds = {k: (v / 1000 if isinstance(v, float) else v) for k, v in summary_ms(lifecycles).items()}
    phase.command_rtt = {k: summary_ms(v) for k, v in driver.rtt.items()}


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

    return [asyncio.create_task(worker()) for _ in range(concurrency)]


async def _finish(tasks: list[asyncio.Task], timeout: float) -> None:
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for t in pending:
        t.cancel()


def _processes_cpu(pids: dict[str, int]) -> dict[str, float | None]:
    out = {name: cpu_seconds(pid) for name, pid in pids.items() if name != "benchmark driver"}
    out["benchmark driver"] = time.process_time()
    return out


async def run_e2e(nc: nats.NATS, settings: Settings, rate: float, seconds: float, saturation_seconds: float,
                  concurrency: int, poll_ms: float, server_pid: int, cleanup: Cleanup, say,
                  profile_dir=None, unloaded_seconds: float = 0.0) -> E2EResult:
    procs = await start_services(nc, settings, SERVICES, cleanup)
    say(f"  four services up (pids {', '.join(f'{n} {p.pid}' for n, p in procs.items())})")
    js = nc.jetstream()
    monitor = Monitor(js, settings)
    await monitor.start()
    cps = Checkpoints(settings, SERVICES, poll_ms / 1000.0)
    cps.start()
    driver = Driver(nc, settings, monitor)
    pids = {**{n: p.pid for n, p in procs.items()}, "nats-server": server_pid, "benchmark driver": os.getpid()}
    try:
        # Warm the services (imports, first queries, SQLite files) before anything is measured.
        await asyncio.gather(*(driver.lifecycle("warm-up") for _ in range(4)))

        unloaded = None
        if unloaded_seconds > 0:
            # One lifecycle at a time: the latency floor, with no queueing anywhere.
            unloaded = Phase("unloaded", unloaded_seconds, concurrency=1)
            mark = asyncio.create_task(_mark_after(0.0, pids))
            tasks = await _closed_loop(driver, unloaded, 1)
            await asyncio.sleep(unloaded_seconds)
            (t0, cpu0), t1, cpu1 = await mark, now(), _processes_cpu(pids)
            unloaded.window = (t0, t1)
            await _finish(tasks, STEP_TIMEOUT)
            await cps.wait_for((await js.stream_info(settings.stream)).state.last_seq, 60)
            _measure(unloaded, driver, cps, monitor)
            _cpu(unloaded, cpu0, cpu1)
            _say_phase(say, unloaded)

        latency = Phase("latency", seconds, offered_events_per_s=rate)
        mark = asyncio.create_task(_mark_after(min(2.0, seconds / 5), pids))  # warm-up not counted
        tasks = await _open_loop(driver, latency, rate, max_inflight=max(50, int(rate)))
        (t0, cpu0), t1, cpu1 = await mark, now(), _processes_cpu(pids)
        latency.window = (t0, t1)
        await _finish(tasks, STEP_TIMEOUT)
        last = (await js.stream_info(settings.stream)).state.last_seq
        await cps.wait_for(last, 60)
        _measure(latency, driver, cps, monitor)
        _cpu(latency, cpu0, cpu1)
        _say_phase(say, latency)

        saturation = None
        profile = None
        if saturation_seconds > 0:
            saturation = Phase("saturation", saturation_seconds, concurrency=concurrency)
            profiler = None
            if profile_dir is not None:
                profiler = Profiler(profile_dir, pids, duration=max(1.0, saturation_seconds - 3.0))
                profiler.start()
            mark = asyncio.create_task(_mark_after(min(3.0, saturation_seconds / 4), pids))
            tasks = await _closed_loop(driver, saturation, concurrency)
            await asyncio.sleep(saturation_seconds)
            (t0, cpu0), t1, cpu1 = await mark, now(), _processes_cpu(pids)
            saturation.window = (t0, t1)
            await _finish(tasks, STEP_TIMEOUT)
            if profiler is not None:
                profile = await profiler.finish()
            last = (await js.stream_info(settings.stream)).state.last_seq
            if not await cps.wait_for(last, 90):
                say("  warning: projections did not catch up within 90s after the saturation phase")
            _measure(saturation, driver, cps, monitor)
            _cpu(saturation, cpu0, cpu1)
            _say_phase(say, saturation)

        ping_rtt, case_rtt = await _query_rtts(nc, settings, driver)
        template = next((tr.case_id for tr in driver.traces if tr.closed and tr.phase == "latency"), None)
        events = (await js.stream_info(settings.stream)).state.messages
        return E2EResult(unloaded, latency, saturation, events, ping_rtt, case_rtt, template, profile)
    finally:
        await cps.stop()
        await monitor.stop()


async def _mark_after(delay: float, pids: dict[str, int]) -> tuple[float, dict[str, float | None]]:
    await asyncio.sleep(delay)
    return now(), _processes_cpu(pids)


def _cpu(phase: Phase, cpu0: dict[str, float | None], cpu1: dict[str, float | None]) -> None:
    """CPU seconds each process used over the measured window: its share of one core, and per event."""
    elapsed = phase.window[1] - phase.window[0]
    events = phase.through_all_per_s * elapsed
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
        f"through all four projections; {p.closed} lifecycles closed, {p.failed} failed, {p.skipped} not started")
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


__all__ = ["E2EResult", "Phase", "run_e2e", "percentile"]
