"""Each fault the promise must survive, as a run: start a system, load it, break it, audit it.

A run returns a Row: what was sent and acknowledged, what the log and the projections hold
afterwards, and how long the broken part took to come back. The pytest suite runs each one
small (tests/reliability/test_faults.py); `make reliability` runs them larger and prints the
table (tests/reliability/run.py).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.errors
from sqlalchemy.engine import make_url

from rethink.shared.settings import SERVICES

from .harness import Audit, ClusterSystem, Load, PostgresSystem, System, audit, until

DOWN_SECONDS = 1.5  # how long a killed part stays down: long enough for work to pile up behind it


@dataclass
class Row:
    fault: str
    audit: Audit
    events_in_log: int
    recover_seconds: float | None
    retries: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        a = self.audit
        return {"fault": self.fault, "sent": a.sent, "acknowledged": a.acked, "in_log": a.in_log,
                "completed": a.completed, "lost": a.lost, "duplicates": a.duplicates,
                "projections": a.projections, "events_in_log": self.events_in_log,
                "recover_seconds": self.recover_seconds, "retries": self.retries, "errors": a.errors[:5],
                **self.extra}


Fault = Callable[[System, Load, int], Awaitable[float | None]]


async def _run(root: Path, name: str, cases: int, rate: float, fault: Fault | None,
               kind: type[System] = System, replicas: bool = False) -> Row:
    system = await kind(root).start()
    try:
        if replicas:
            extra = [system.start_replica(name) for name in SERVICES]
            await system.wait_serving(SERVICES)
            assert all(system.procs[k].poll() is None for k in extra)
        load = Load(system)
        at = max(1, cases // 3)
        recovery: list[asyncio.Task] = []

        async def during(i: int) -> None:
            if fault is not None and i == at:
                recovery.append(asyncio.create_task(fault(system, load, i)))

        await load.run(cases, rate, during)
        recover = await recovery[0] if recovery else None
        result = await audit(system, load)
        events = (await system.js.stream_info(system.settings.stream)).state.messages
        return Row(name, result, events, recover, dict(load.retries))
    finally:
        await system.stop()


async def _serving_again(system: System, name: str, since: float) -> float:
    await system.wait_serving([name], timeout=120)
    return time.monotonic() - since


def kill_service(name: str) -> Fault:
    async def fault(system: System, load: Load, _: int) -> float:
        system.kill_service(name)  # SIGKILL: no chance to nak, flush or say goodbye
        await asyncio.sleep(DOWN_SECONDS)
        system.start_service(name)
        return await _serving_again(system, name, time.monotonic())
    return fault


def terminate_service(name: str) -> Fault:
    """A graceful stop mid-stream: it stops taking messages, finishes the one in hand, exits 0."""
    async def fault(system: System, load: Load, _: int) -> float:
        t0 = time.monotonic()
        code = await asyncio.to_thread(system.terminate_service, name)
        fault.exit = (code, round(time.monotonic() - t0, 2))  # type: ignore[attr-defined]
        system.start_service(name)
        return await _serving_again(system, name, time.monotonic())
    return fault


async def replicas_then_kill_one(system: System, load: Load, _: int) -> float:
    """Each service already runs as two processes; kill -9 the first of each, mid-stream.
    Returns how long until every service's consumer moved on (the survivor took over)."""
    stream = system.settings.stream
    floors = {n: (await system.js.consumer_info(stream, n)).ack_floor.stream_seq for n in SERVICES}
    t0 = time.monotonic()
    for name in SERVICES:
        system.kill_service(name)
    for name in SERVICES:
        await until(lambda n=name: system.js.consumer_info(stream, n),
                    lambda info, n=name: info.ack_floor.stream_seq > floors[n] or not info.num_pending, 120,
                    f"the surviving {name} replica acking")
    return time.monotonic() - t0


async def restart_server(system: System, load: Load, _: int) -> float:
    system.kill_server()
    await asyncio.sleep(DOWN_SECONDS)
    system.start_server()
    restarted = time.monotonic()
    for name in SERVICES:  # every service reconnects by itself; nobody restarts them
        await system.wait_serving([name], timeout=120)
    return time.monotonic() - restarted


def lock_database(name: str, seconds: float = 4.0) -> Fault:
    """Another process holds the service's SQLite projection exclusively for a while."""
    async def fault(system: System, load: Load, _: int) -> float:
        path = make_url(system.settings.db_url(name)).database
        lock = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            lock.execute("BEGIN EXCLUSIVE")
            # What the service had applied when the lock came: it may ack up to there, never beyond.
            [applied_at_lock] = lock.execute("SELECT last_seq FROM checkpoint WHERE consumer = ?", (name,)).fetchone()
            before = (await system.js.consumer_info(system.settings.stream, name)).ack_floor.stream_seq
            await asyncio.sleep(seconds)
            held = await system.js.consumer_info(system.settings.stream, name)
            held_at = held.ack_floor.stream_seq
            fault.pending_at_release = held.num_pending + held.num_ack_pending  # type: ignore[attr-defined]
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        released = time.monotonic()
        await until(lambda: system.js.consumer_info(system.settings.stream, name),
                    lambda info: info.ack_floor.stream_seq > held_at or not info.num_pending, 120,
                    f"{name} acking again")
        fault.acked_while_locked = held_at - before  # type: ignore[attr-defined]
        fault.acked_beyond_applied = max(0, held_at - applied_at_lock)  # type: ignore[attr-defined]
        return time.monotonic() - released
    return fault


async def kill_stream_leader(system: System, load: Load, _: int) -> float:
    """kill -9 the node leading the event stream; the other two elect a leader and carry on."""
    assert isinstance(system, ClusterSystem)
    victim = await system.stream_leader()
    system.cluster.kill(victim)
    await until(system.stream_leader, lambda leader: leader not in (None, victim), 60, "a new stream leader")
    await asyncio.sleep(DOWN_SECONDS)
    system.cluster.start(victim)
    back = time.monotonic()
    await until(system.replicas_current, bool, 120, f"{victim} to catch up with the stream")
    kill_stream_leader.victim = victim  # type: ignore[attr-defined]
    return time.monotonic() - back


async def cut_postgres(system: System, load: Load, _: int) -> float:
    """The service's PostgreSQL goes away for a while (every connection dropped, new ones refused)."""
    assert isinstance(system, PostgresSystem) and system.proxy is not None
    name, stream = system.service, system.settings.stream
    system.proxy.cut()
    await asyncio.sleep(4.0)
    held = await system.js.consumer_info(stream, name)
    cut_postgres.held_back = held.num_pending + held.num_ack_pending  # type: ignore[attr-defined]
    system.proxy.start()
    back = time.monotonic()
    await until(lambda: system.js.consumer_info(stream, name),
                lambda info: info.ack_floor.stream_seq > held.ack_floor.stream_seq or not info.num_pending, 120,
                f"{name} acking again")
    return time.monotonic() - back


async def steady(system: System, load: Load, _: int) -> None:
    return None


async def run_fault(root: Path, fault: str, cases: int, rate: float) -> Row:
    if fault in (f"kill-{s}" for s in SERVICES):
        return await _run(root, f"kill -9 {fault[5:]}", cases, rate, kill_service(fault[5:]))
    if fault in (f"term-{s}" for s in SERVICES):
        stopper = terminate_service(fault[5:])
        row = await _run(root, f"SIGTERM {fault[5:]} (graceful stop), restart", cases, rate, stopper)
        row.extra["exit_code"], row.extra["stop_seconds"] = getattr(stopper, "exit", (None, None))
        return row
    if fault == "replicas":
        return await _run(root, "two replicas of every service; kill -9 one of each", cases, rate,
                          replicas_then_kill_one, replicas=True)
    if fault == "restart-server":
        return await _run(root, "kill -9 and restart the nats-server", cases, rate, restart_server)
    if fault.startswith("lock-"):
        locker = lock_database(fault[5:])
        row = await _run(root, f"{fault[5:]}'s SQLite locked 4 s", cases, rate, locker)
        row.extra["acked_while_locked"] = getattr(locker, "acked_while_locked", None)
        row.extra["acked_beyond_applied"] = getattr(locker, "acked_beyond_applied", None)
        row.extra["held_back_at_release"] = getattr(locker, "pending_at_release", None)
        return row
    if fault == "kill-node":
        row = await _run(root, "kill -9 the stream leader of a 3-node cluster", cases, rate, kill_stream_leader,
                         ClusterSystem)
        row.extra["killed"] = getattr(kill_stream_leader, "victim", None)
        return row
    if fault == "cut-postgres":
        row = await _run(root, "meeting's PostgreSQL unreachable 4 s", cases, rate, cut_postgres, PostgresSystem)
        row.extra["held_back_at_return"] = getattr(cut_postgres, "held_back", None)
        return row
    if fault == "duplicates":
        return await duplicate_publishes(root, cases, rate)
    if fault == "steady":
        return await steady_load(root, cases, rate)
    raise ValueError(f"unknown fault {fault!r}")


FAULTS = [*(f"kill-{s}" for s in SERVICES), *(f"term-{s}" for s in SERVICES), "replicas", "restart-server", "kill-node", *(f"lock-{s}" for s in ("scheduling", "meeting")), "cut-postgres",
          "duplicates", "steady"]


async def duplicate_publishes(root: Path, cases: int, rate: float) -> Row:
    """Every event of the log published again with its own Nats-Msg-Id: the log must not grow."""
    system = await System(root).start()
    try:
        load = Load(system)
        await load.run(cases, rate)
        await system.caught_up()
        before = (await system.js.stream_info(system.settings.stream)).state.messages
        republished = 0
        for seq in range(1, before + 1):
            msg = await system.js.get_msg(system.settings.stream, seq)
            # Only the id travels again: the optimistic-concurrency headers would refuse the
            # copy for another reason and prove nothing about deduplication.
            ack = await system.js.publish(msg.subject, msg.data, stream=system.settings.stream,
                                          headers={"Nats-Msg-Id": msg.headers["Nats-Msg-Id"]})
            republished += 1
            assert ack.duplicate, f"seq {seq} was stored again as {ack.seq}"
        result = await audit(system, load)
        events = (await system.js.stream_info(system.settings.stream)).state.messages
        return Row("every event published again (same id)", result, events, None, dict(load.retries),
                   {"republished": republished, "log_grew_by": events - before})
    finally:
        await system.stop()


def _ms(values: list[float]) -> dict[str, int | None]:
    if len(values) < 2:
        return {"p50": None, "p95": None, "p99": None}
    q = statistics.quantiles(values, n=100)
    return {"p50": round(q[49] * 1000), "p95": round(q[94] * 1000), "p99": round(q[98] * 1000)}


class ConsumerSampler:
    """Every 25 ms, each service's acknowledged floor and backlog, from JetStream."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.max_lag: dict[str, int] = dict.fromkeys(SERVICES, 0)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        stream = self.system.settings.stream
        while True:
            with contextlib.suppress(nats.errors.Error, TimeoutError):  # a missed sample, not a failed run
                floors = {}
                for name in SERVICES:
                    info = await self.system.js.consumer_info(stream, name)
                    floors[name] = info.ack_floor.stream_seq
                    lag = (info.num_pending or 0) + (info.num_ack_pending or 0)
                    self.max_lag[name] = max(self.max_lag[name], lag)
                self.samples.append((time.monotonic(), floors))
            await asyncio.sleep(0.025)

    def applied_at(self, service: str, seq: int) -> float | None:
        """When ``service`` had first acknowledged everything up to ``seq`` (within 25 ms)."""
        i = bisect.bisect_left([f[service] for _, f in self.samples], seq)
        return self.samples[i][0] if i < len(self.samples) else None


async def steady_load(root: Path, cases: int, rate: float) -> Row:
    """No fault: throughput; latency from submission to each projection; consumer lag; memory."""
    system = await System(root).start()
    sampler = ConsumerSampler(system)
    try:
        load = Load(system)
        samples: list[dict[str, int]] = []

        async def during(i: int) -> None:
            if i in (cases // 3, cases - 1):
                samples.append(system.rss_kib())

        sampler.start()
        t0 = time.monotonic()
        await load.run(cases, rate, during)
        elapsed = time.monotonic() - t0
        await system.caught_up()
        await sampler.stop()
        samples.append(system.rss_kib())
        peak = system.peak_rss_kib()
        result = await audit(system, load)
        log = await system.log()
        events = len(log)
        submitted = {r.envelope.case_id: r.seq for r in log if r.type == "RequestSubmitted"}
        to_projection: dict[str, list[float]] = {name: [] for name in SERVICES}
        to_all: list[float] = []
        for case in load.cases:
            seq = submitted.get(case.case_id or "")
            if seq is None:
                continue
            seen = {name: sampler.applied_at(name, seq) for name in SERVICES}
            for name, at in seen.items():
                if at is not None:
                    to_projection[name].append(at - case.started)
            if all(at is not None for at in seen.values()):
                to_all.append(max(seen.values()) - case.started)  # type: ignore[type-var]
        closed = sorted(c.closed - c.started for c in load.cases if c.closed)
        extra = {"events_per_s": round(events / elapsed, 1),
                 "submit_to_every_projection_ms": _ms(to_all),
                 "submit_to_projection_ms": {name: _ms(v) for name, v in to_projection.items()},
                 "request_to_closure_ms": _ms(closed),
                 "max_consumer_lag": sampler.max_lag,
                 "rss_kib": {"at_one_third": samples[0], "at_end": samples[-1], "peak": peak}}
        return Row("steady load, no fault", result, events, None, dict(load.retries), extra)
    finally:
        await sampler.stop()
        await system.stop()


def run(root: Path, fault: str, cases: int, rate: float) -> Row:
    with contextlib.suppress(FileExistsError):
        root.mkdir(parents=True)
    return asyncio.run(run_fault(root, fault, cases, rate))
