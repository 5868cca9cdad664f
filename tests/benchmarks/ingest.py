"""Ingest: agency submissions accepted per second through intake (validate, append, receipt).

Intake runs as its own process (as `rethink up` runs it) on a stream of its own, so its
cases never reach the end-to-end system. A few senders each keep one request in flight.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.errors import TimeoutError as NatsTimeout

from rethink.shared.bootstrap import bootstrap
from rethink.shared.cli.supervisor import spawn
from rethink.shared.eventlog import Subjects
from rethink.shared.settings import Settings

from .common import Cleanup, cpu_seconds, now, stop_process, summary_ms
from .system import wait_serving
from .workload import submission_bytes

AGENCIES = ("northside-school", "community-health", "police", "childrens-social-care")


@dataclass
class IngestResult:
    accepted_per_s: float
    accepted: int
    refused: int
    timeouts: int
    seconds: float
    senders: int
    latency: dict[str, Any] = field(default_factory=dict)
    intake_cpu_ms_per_submission: float | None = None


async def run_ingest(nc: nats.NATS, settings: Settings, seconds: float, senders: int, cleanup: Cleanup,
                     say) -> IngestResult:
    await bootstrap(nc.jetstream(), settings)
    proc = spawn("intake", settings, Path(settings.state_dir) / "logs")
    cleanup.process("intake (ingest)", proc)
    try:
        await wait_serving(nc, settings, ("intake",))
        subjects = Subjects(settings.subject_prefix)
        body = submission_bytes()
        accepted = refused = timeouts = 0
        latencies: list[float] = []
        counting = False
        stop_at = 0.0

        async def sender(i: int) -> None:
            nonlocal accepted, refused, timeouts
            subject = subjects.intake(AGENCIES[i % len(AGENCIES)], "submit")
            while not stop_at or now() < stop_at:
                t = now()
                try:
                    reply = json.loads((await nc.request(subject, body, timeout=10)).data)
                except NatsTimeout:
                    if counting:
                        timeouts += 1
                    continue
                if not counting:
                    continue
                if reply.get("status") == "accepted":
                    accepted += 1
                    latencies.append(now() - t)
                else:
                    refused += 1

        tasks = [asyncio.create_task(sender(i)) for i in range(senders)]
        try:
            await asyncio.sleep(1.0)  # warm-up: not counted
            counting, start, cpu0 = True, now(), cpu_seconds(proc.pid)
            stop_at = start + seconds
            await asyncio.gather(*tasks)
            elapsed, cpu1 = now() - start, cpu_seconds(proc.pid)
        finally:
            for t in tasks:
                t.cancel()
        rate = accepted / elapsed
        cpu_ms = (cpu1 - cpu0) * 1000 / accepted if accepted and cpu0 is not None and cpu1 is not None else None
        result = IngestResult(rate, accepted, refused, timeouts, elapsed, senders, summary_ms(latencies), cpu_ms)
        say(f"  {rate:,.0f} submissions accepted/s with {senders} senders over {elapsed:.1f}s "
            f"(refused {refused}, timeouts {timeouts}; receipt p50 {result.latency['p50']:.1f} ms, "
            f"p99 {result.latency['p99']:.1f} ms; intake CPU {cpu_ms or 0:.2f} ms per submission)")
        return result
    finally:
        stop_process(proc)
