"""Case history: EventLog.read_case of one case with ~1,000 and with 200,000 events in the log.

A stream of its own (deleted at the end) is filled with pipelined publishes of valid
envelopes across many cases, eight events a case as a lifecycle writes. The target case's
events sit among the first thousand and do not change; only the log around it grows.
"""

from __future__ import annotations

import statistics
import uuid
from dataclasses import dataclass

import nats

from rethink.shared.envelope import Envelope, new_case_id
from rethink.shared.eventlog import EventLog, Subjects
from rethink.shared.settings import Settings

from .baselines import create_stream, pipelined_publish
from .common import now


@dataclass
class Reads:
    log_events: int
    median_ms: float
    p90_ms: float
    min_ms: float


@dataclass
class HistoryResult:
    case_events: int
    small: Reads
    large: Reads
    recent_at_large: Reads  # a case appended last, at the large size (for information)
    fill_per_s: float


class Filler:
    """Copies of a template case under fresh case ids and event ids (still valid envelopes)."""

    def __init__(self, template: list[tuple[str, bytes]], subjects: Subjects) -> None:
        self.template = template
        self.subjects = subjects
        first = Envelope.from_bytes(template[0][1])
        self.case_id = first.case_id.encode()
        self.event_ids = [str(Envelope.from_bytes(b).event_id).encode() for _, b in template]
        self.n = 0

    def case(self, case_id: str) -> list[tuple[str, bytes]]:
        out = []
        for (event_type, body), event_id in zip(self.template, self.event_ids, strict=True):
            body = body.replace(self.case_id, case_id.encode()).replace(event_id, str(uuid.uuid4()).encode())
            out.append((self.subjects.event(case_id, event_type), body))
        return out

    def messages(self, count: int) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        while len(out) < count:
            self.n += 1
            out.extend(self.case(new_case_id(f"bench-filler-{self.n}")))
        return out[:count]


async def _time_reads(log: EventLog, case_id: str, reads: int, expected: int, log_events: int) -> Reads:
    history = await log.read_case(case_id)  # warm-up
    assert len(history) == expected, f"read {len(history)} events of {case_id}, expected {expected}"
    times = []
    for _ in range(reads):
        t = now()
        await log.read_case(case_id)
        times.append((now() - t) * 1000)
    times.sort()
    return Reads(log_events, statistics.median(times), times[int(0.9 * (len(times) - 1))], times[0])


async def run_history(nc: nats.NATS, settings: Settings, template: list[tuple[str, bytes]], small: int,
                      large: int, reads: int, window: int, say) -> HistoryResult:
    js = nc.jetstream(publish_async_max_pending=window)
    subjects = Subjects(settings.subject_prefix)
    await create_stream(js, settings)
    log = EventLog(js, settings.stream, subjects, personal=None)  # plain template events: no keys
    filler = Filler(template, subjects)

    target_id = new_case_id("bench-history-target")
    target = filler.case(target_id)
    # The target's events spread through the first `small` events, as a real case's are.
    before = filler.messages(max(0, small - len(target)))
    step = max(1, len(before) // len(target))
    first: list[tuple[str, bytes]] = []
    for i, msg in enumerate(target):
        first.extend(before[i * step:(i + 1) * step])
        first.append(msg)
    first.extend(before[len(target) * step:])
    await pipelined_publish(js, first, settings.stream, window)
    at_small = await _time_reads(log, target_id, reads, len(target), len(first))
    say(f"  read_case with {len(first):,} events in the log: median {at_small.median_ms:.2f} ms "
        f"(p90 {at_small.p90_ms:.2f})")

    rest = large - len(first)
    fill_seconds = 0.0
    fill_rate = 0.0
    chunk = 20_000
    done = 0
    while done < rest:  # generated in chunks, so 200,000 envelopes are never all in memory at once
        msgs = filler.messages(min(chunk, rest - done))
        t = now()
        await pipelined_publish(js, msgs, settings.stream, window)
        fill_seconds += now() - t
        done += len(msgs)
    fill_rate = rest / fill_seconds if fill_seconds else 0.0
    total = (await js.stream_info(settings.stream)).state.messages
    at_large = await _time_reads(log, target_id, reads, len(target), total)
    say(f"  read_case with {total:,} events in the log: median {at_large.median_ms:.2f} ms "
        f"(p90 {at_large.p90_ms:.2f}); filled at {fill_rate:,.0f} msgs/s")

    recent_id = new_case_id("bench-history-recent")
    await pipelined_publish(js, filler.case(recent_id), settings.stream, window)
    recent = await _time_reads(log, recent_id, reads, len(target), total + len(target))
    say(f"  read_case of a case written last, {total + len(target):,} events in the log: "
        f"median {recent.median_ms:.2f} ms")
    return HistoryResult(len(target), at_small, at_large, recent, fill_rate)
