"""Rebuild a service's projection from the log: replay every event into fresh tables.

The replay applies projections only: reactions and notifications already happened and are
in the log. Writes are batched (one transaction per fetched batch). For SQLite the new
projection is built beside the live file and swapped in with a rename, so a failed rebuild
leaves the live projection untouched.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nats.js import JetStreamContext, api
from sqlalchemy.engine import make_url

from .envelope import InvalidEvent, Recorded
from .eventlog import Subjects
from .projection import ProjectionStore, make_engine
from .settings import SERVICES, Settings

BATCH = 500
Progress = Callable[[int, int], None]  # (events read, events in the log)


@dataclass(frozen=True)
class RebuildResult:
    service: str
    events_read: int
    applied: int
    skipped_unreadable: int
    last_seq: int
    target: str


def projection_store(service: str, url: str) -> ProjectionStore:
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; choose one of {', '.join(SERVICES)}")
    module = importlib.import_module(f"rethink.{service}.projection")
    return ProjectionStore(make_engine(url), module.metadata, service, module.apply)


async def replay_into(js: JetStreamContext, settings: Settings, store: ProjectionStore,
                      progress: Progress | None = None) -> RebuildResult:
    subjects = Subjects(settings.subject_prefix)
    info = await js.stream_info(settings.stream)
    last = info.state.last_seq
    store.reset()
    read = applied = skipped = 0
    sub = await js.pull_subscribe(subjects.all_events, stream=settings.stream, config=api.ConsumerConfig(
        ack_policy=api.AckPolicy.NONE, deliver_policy=api.DeliverPolicy.ALL, mem_storage=True,
        inactive_threshold=30.0))
    try:
        seq = 0
        while seq < last:
            msgs = await sub.fetch(BATCH, timeout=5)
            batch: list[Recorded] = []
            for m in msgs:
                seq = m.metadata.sequence.stream
                if seq > last:
                    break
                read += 1
                try:
                    batch.append(Recorded.from_message(m.data, seq))
                except InvalidEvent:
                    skipped += 1  # the live consumer skips these too (and logs them)
            applied += store.apply_batch(batch)
            if progress:
                progress(read, info.state.messages)
            if msgs and msgs[-1].metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return RebuildResult(store.consumer, read, applied, skipped, last, str(store.engine.url))


def swap_sqlite(live_url: str, rebuilt_url: str) -> None:
    """Replace the live SQLite file by the rebuilt one (the service must be stopped)."""
    live, rebuilt = Path(make_url(live_url).database or ""), Path(make_url(rebuilt_url).database or "")
    for suffix in ("-wal", "-shm"):
        Path(str(live) + suffix).unlink(missing_ok=True)
    os.replace(rebuilt, live)


def rebuild_target(settings: Settings, service: str) -> tuple[str, bool]:
    """Where to build: beside a SQLite projection (then swap), or in place for other databases."""
    live = settings.db_url(service)
    parsed = make_url(live)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        side = Path(parsed.database).with_suffix(".rebuild.db")
        side.unlink(missing_ok=True)
        return f"sqlite:///{side}", True
    return live, False
