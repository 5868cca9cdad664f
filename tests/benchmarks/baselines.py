"""The physical baseline: what nats-py alone gets from this nats-server on this machine.

The stream is configured like the event log (file storage, same limits) and the payload
is a real RequestSubmitted envelope, so the only difference left is the system's own work.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import nats
from nats.js import api

from rethink.shared.bootstrap import stream_config
from rethink.shared.envelope import new_case_id
from rethink.shared.eventlog import Subjects
from rethink.shared.settings import Settings

from .common import now


@dataclass
class Baselines:
    payload_bytes: int
    sequential: float  # msgs/s
    pipelined: float
    ordered_read: float
    messages_read: int


async def create_stream(js, settings: Settings) -> None:
    await js.add_stream(stream_config(settings, Subjects(settings.subject_prefix)))


async def sequential_publish(js, subjects: list[str], payload: bytes, stream: str) -> float:
    start = now()
    for subject in subjects:
        await js.publish(subject, payload, stream=stream)
    return len(subjects) / (now() - start)


async def pipelined_publish(js, messages: list[tuple[str, bytes]], stream: str | None = None,
                            window: int = 1000) -> float:
    """Keep ``window`` publishes in flight (js.publish_async); msgs/s once every ack is back."""
    start = now()
    chunk: list[asyncio.Future] = []
    for subject, payload in messages:
        chunk.append(await js.publish_async(subject, payload, stream=stream))
        if len(chunk) >= window:
            await _acked(chunk)
            chunk = []
    await _acked(chunk)
    return len(messages) / (now() - start)


async def _acked(futures: list[asyncio.Future]) -> None:
    for fut in futures:
        fut.result() if fut.done() else await fut  # raises if the server refused one


async def ordered_read(js, subject: str, stream: str, expected: int, timeout: float = 120.0) -> float:
    """Read ``expected`` messages with an ordered consumer from the start; msgs/s."""
    done = asyncio.Event()
    count = 0

    async def cb(_msg) -> None:
        nonlocal count
        count += 1
        if count >= expected:
            done.set()

    start = now()
    sub = await js.subscribe(subject, stream=stream, cb=cb, ordered_consumer=True,
                             deliver_policy=api.DeliverPolicy.ALL)
    try:
        await asyncio.wait_for(done.wait(), timeout)
        return expected / (now() - start)
    finally:
        await sub.unsubscribe()


async def run_baselines(nc: nats.NATS, settings: Settings, payload: bytes, sequential_n: int, pipelined_n: int,
                        window: int, say) -> Baselines:
    js = nc.jetstream(publish_async_max_pending=window)
    subjects = Subjects(settings.subject_prefix)
    await create_stream(js, settings)
    # Subjects spread over many cases, as the log's are (8 events per case).
    cases = [new_case_id(f"baseline-{i}") for i in range(max(sequential_n, pipelined_n) // 8 + 1)]
    subject_of = [subjects.event(cases[i // 8], "RequestSubmitted") for i in range(max(sequential_n, pipelined_n))]

    await sequential_publish(js, subject_of[:200], payload, settings.stream)  # warm-up
    seq = await sequential_publish(js, subject_of[:sequential_n], payload, settings.stream)
    say(f"  sequential js.publish: {seq:,.0f} msgs/s ({sequential_n:,} messages)")
    pipe = await pipelined_publish(js, [(s, payload) for s in subject_of[:pipelined_n]], settings.stream, window)
    say(f"  pipelined js.publish_async (window {window}): {pipe:,.0f} msgs/s ({pipelined_n:,} messages)")
    total = (await js.stream_info(settings.stream)).state.messages
    read = await ordered_read(js, subjects.all_events, settings.stream, total)
    say(f"  ordered-consumer read: {read:,.0f} msgs/s ({total:,} messages)")
    return Baselines(len(payload), seq, pipe, read, total)
