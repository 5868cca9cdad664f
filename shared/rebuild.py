"""Rebuild a service's projection from the log: replay every event into fresh tables.

The replay applies projections only: reactions and notifications already happened and are
in the log. Writes are batched (one transaction per fetched batch). The new projection is
always built beside the live one and swapped in only when complete, so a failed rebuild
leaves the live projection untouched:
- SQLite: built in a side file, swapped in with a rename of the file;
- PostgreSQL: built in a side schema (``<schema>_rebuild``), migrated to head like any
  projection, then swapped in by one transaction that drops the live schema and renames the
  side one (PostgreSQL's DDL is transactional, so readers see the old or the new, never half).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from . import gctune
from .envelope import Envelope, InvalidEvent, Recorded
from .eventlog import EventLog, Subjects
from .migrations import service_store, upgrade
from .privacy import ERASURE, personal_data
from .projection import ProjectionStore, Unread, check_schema_name
from .rawsub import description_of, status_of, subscribe_raw, unsubscribe_raw
from .settings import Settings

# Events per pull request and per transaction: each batch has its fixed costs (an inbox, a pull
# request, a round of key reads, a transaction, a statement per group of writes), which 2,000 spread
# ~10-20 % thinner than 500 did (scheduling and meeting, SQLite and PostgreSQL; the fifth round).
BATCH = 2000
FETCH_TIMEOUT = 5.0  # seconds for a pull request's answer; no answer at all: a fresh consumer
MAX_INTERRUPTIONS = 10
Progress = Callable[[int, int], None]  # (events read, events in the log)


@dataclass(frozen=True)
class RebuildResult:
    service: str
    events_read: int
    applied: int
    skipped_unreadable: int
    last_seq: int
    target: str


class _Delivered(NamedTuple):
    """One message of a replay's pull request, as far as the replay reads it: its sequences are
    read from ``reply`` where they are needed (every message's place in the stream, ``stream_seq``;
    the consumer's counts of a batch's first and last message only, ``positions``)."""

    subject: str
    reply: bytes
    data: bytes


class Batches:
    """Batches of an ephemeral pull consumer's messages, taken raw from the connection (a replay's,
    and the console's read of the log for its reports).

    nats-py's ``fetch`` takes every message through ``next_msg`` (a future, a timer and a uuid4
    each), ~50 µs of CPU per message; a callback subscription still builds a ``Msg``, parses its
    headers and awaits the callback from a task, ~20 µs. Here a raw subscription (``rawsub``)
    keeps each message's bytes, ~9 µs, less than nats-py's ordered consumer spends on one: most
    of a replay's events are ones its projection ignores, so this is most of what they cost.
    Each request has an inbox of its own
    (one subscription per batch), so nothing left over from an earlier request is taken for part
    of a later one.
    """

    def __init__(self, js: JetStreamContext, stream: str, consumer: str) -> None:
        self._nc = js._nc  # type: ignore[attr-defined]
        self._next = f"{js._prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"  # type: ignore[attr-defined]
        self.delivered = 0  # the consumer's own count of messages sent: each must arrive, in order

    async def next(self, batch: int, timeout: float) -> tuple[list[_Delivered], int]:
        """The next batch (``fetch``), every message the consumer sent for it come, and how many it has left.

        One that never came raises ``Interrupted``: its reader reads on from the last one it took,
        on a fresh consumer (nothing skipped, nothing twice)."""
        msgs = await self.fetch(batch, timeout)
        first = positions(msgs[0].reply.decode())[1]
        _, end, pending = positions(msgs[-1].reply.decode())
        if first != self.delivered + 1 or end != self.delivered + len(msgs):
            raise Interrupted(f"deliveries {self.delivered + 1}-{self.delivered + len(msgs)} expected, "
                              f"{first}-{end} received")
        self.delivered = end
        return msgs, pending

    async def fetch(self, batch: int, timeout: float) -> list[_Delivered]:
        """Up to ``batch`` messages, as many as the consumer has now (``no_wait``)."""
        got: list[tuple[bytes, bytes, bytes]] = []
        ended: list[tuple[str, str]] = []
        done = asyncio.Event()

        def gather(subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
            status = status_of(data, headers)
            if status is not None:
                if status != "100":  # not an idle heartbeat: 404/408 no more for now, 409 ended, 503 no consumer
                    ended.append((status, description_of(headers or b"")))
                    done.set()
                return
            got.append((subject, reply, data))
            if len(got) >= batch:
                done.set()

        sub = await subscribe_raw(self._nc, self._nc.new_inbox(), gather)
        try:
            await self._nc.publish(self._next, json.dumps({"batch": batch, "no_wait": True}).encode(),
                                   reply=sub.subject)
            try:
                await asyncio.wait_for(done.wait(), timeout)
            except TimeoutError:
                # The rest may still come, to an inbox about to go: count none of it as read. Or none
                # came at all: the request was lost (its consumer with it). Either way, a fresh one.
                raise Interrupted(f"a pull request unanswered in full after {timeout}s") from None
        finally:
            await unsubscribe_raw(self._nc, sub)
        if ended and ended[0][0] in ("503", "409"):
            # The consumer is gone (a clustered stream's leader moved): carry on from a fresh one.
            raise nats.js.errors.ServiceUnavailableError(code=int(ended[0][0]), description=ended[0][1])
        if not got:  # as nats-py's fetch: a replay short of the log's last sequence must not spin
            raise nats.errors.TimeoutError
        return [_Delivered(subject.decode(), reply, data) for subject, reply, data in got]


def positions(reply: str) -> tuple[int, int, int]:
    """A JetStream message's stream sequence, the consumer's delivery count and what it has left,
    read from the message's reply subject.

    nats-py's ``Msg.metadata`` builds a whole record (a datetime among it) where a replay needs
    three numbers; the subject's layouts (v1: 9 tokens, v2: 11 or more) are nats-py's, and
    anything else is left to nats-py to make sense of, or refuse.
    """
    tokens = reply.split(".")
    if tokens[0] == "$JS" and len(tokens) > 1 and tokens[1] == "ACK":
        if len(tokens) == 9:
            return int(tokens[5]), int(tokens[6]), int(tokens[8])
        if len(tokens) >= 11:
            return int(tokens[7]), int(tokens[8]), int(tokens[10])
    meta = Msg.Metadata._from_reply(reply)
    return meta.sequence.stream, meta.sequence.consumer, meta.num_pending


def stream_seq(reply: bytes) -> int:
    """``positions(reply)[0]`` alone, from the bytes: a replay needs every message's place in the
    stream, and the other two numbers of only a batch's first and last message."""
    tokens = reply.split(b".")
    if tokens[0] == b"$JS" and len(tokens) > 1 and tokens[1] == b"ACK":
        if len(tokens) == 9:
            return int(tokens[5])
        if len(tokens) >= 11:
            return int(tokens[7])
    return positions(reply.decode())[0]


class Interrupted(RuntimeError):
    """The replay's consumer must be replaced: it lost track of what it delivered."""


@contextlib.asynccontextmanager
async def log_batches(js: JetStreamContext, stream: str, subjects: Subjects, after: int) -> AsyncIterator[Batches]:
    """The log's events from ``after + 1`` in order, read raw (``Batches``) from an ephemeral consumer
    of its own: unacknowledged, held in memory, forgotten by the server 30 s after its last use,
    deleted here when done. A replay reads the log so, and so do the readers of the whole log for
    the partnership's figures (the console's reports, ``rethink audit search``)."""
    consumer = await js.add_consumer(stream, config=api.ConsumerConfig(
        filter_subject=subjects.all_events, ack_policy=api.AckPolicy.NONE, mem_storage=True,
        inactive_threshold=30.0, deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1))
    try:
        yield Batches(js, stream, consumer.name)
    finally:
        with contextlib.suppress(Exception):
            await js.delete_consumer(stream, consumer.name)


class Scanned(NamedTuple):
    """One event of ``scan_log``: its place in the stream, and its case and type (from its subject)."""

    seq: int
    case_id: str
    kind: str
    data: bytes


async def scan_log(js: JetStreamContext, stream: str, subjects: Subjects, last: int | None = None, *,
                   after: int = 0, batch: int | None = None, resume: bool = True) -> AsyncIterator[list[Scanned]]:
    """Every event of the log after ``after`` up to ``last`` (None: where the log ends when asked), in
    order, ``batch`` (``BATCH``) at a time, undecoded.

    As a replay reads: a consumer that loses track of what it sent (or goes with a clustered
    stream's leader) is replaced, and the read goes on after the last event handed out, up to
    ``MAX_INTERRUPTIONS`` times. Without ``resume`` the first such interruption is raised as it
    came, for a reader that reads on later by itself (the console's reports). Close it
    (``contextlib.aclosing``) if it is left before its end, so its consumer is deleted at once
    rather than left to expire."""
    if last is None:
        last = (await js.stream_info(stream)).state.last_seq
    seq, interruptions, batch = after, 0, batch or BATCH
    while seq < last:
        try:
            async with log_batches(js, stream, subjects, seq) as batches:
                while seq < last:
                    msgs, pending = await batches.next(batch, timeout=FETCH_TIMEOUT)
                    out = []
                    for m in msgs:
                        at = stream_seq(m.reply)
                        if at > last:  # appended since the reader asked where the log ends
                            break
                        # Each subject ends in the event's case and type: <prefix>.events.<case>.<type>.
                        *_, case_id, kind = m.subject.rsplit(".", 2)
                        out.append(Scanned(at, case_id, kind, m.data))
                    if out:
                        seq = out[-1].seq
                        yield out
                    if pending == 0 or len(out) < len(msgs):
                        return
        except (nats.js.errors.ServiceUnavailableError, nats.js.errors.NoStreamResponseError, Interrupted) as exc:
            interruptions += 1
            if not resume:
                raise
            if interruptions > MAX_INTERRUPTIONS:
                raise RuntimeError(f"the read of the log was interrupted {interruptions} times; "
                                   f"last after seq {seq}: {exc}") from exc
            await asyncio.sleep(0.2 * interruptions)


class Sealed(NamedTuple):
    """One event of ``scan_sealed``: its place, its case (from its subject), its bytes and envelope."""

    seq: int
    case_id: str
    data: bytes
    envelope: Envelope | None  # None: the bytes are not an event envelope


async def scan_sealed(js: JetStreamContext, stream: str, subjects: Subjects) -> AsyncIterator[Sealed]:
    """Every event of the log as it stands when asked, in order, its envelope parsed and its payload
    left unread (no key needed): for the auditors' and the retention sweep's passes over every case,
    which once read each case in turn. Close it (``contextlib.aclosing``) if left before its end."""
    async with contextlib.aclosing(scan_log(js, stream, subjects)) as scan:
        async for batch in scan:
            for seq, case_id, _, data in batch:
                try:
                    envelope: Envelope | None = Envelope.from_bytes(data)
                except InvalidEvent:
                    envelope = None
                yield Sealed(seq, case_id, data, envelope)


def projection_store(service: str, url: str, schema: str | None = None) -> ProjectionStore:
    """A store for SERVICE's projection at URL (in ``schema`` on PostgreSQL, default the service's name)."""
    return service_store(Settings(), service, url=url, schema=schema or service)


async def replay_into(js: JetStreamContext, settings: Settings, store: ProjectionStore,
                      progress: Progress | None = None, keys_js: JetStreamContext | None = None) -> RebuildResult:
    """``keys_js``: where the data keys are, when not on the log's server (a copy of the log).

    Events of types outside the projection's ``store.handles`` are counted as read and applied
    without being decoded (through ``store.plan_unread`` when it writes anything for them), so
    ``skipped_unreadable`` counts unreadable events among the others only. Events of the types in
    ``store.unopened`` are decoded with no personal field opened (and their cases' keys not fetched).
    """
    with gctune.batch_job():  # the collector's defaults were a third of a replay's CPU
        return await _replay_into(js, settings, store, progress, keys_js)


async def _replay_into(js: JetStreamContext, settings: Settings, store: ProjectionStore,
                       progress: Progress | None, keys_js: JetStreamContext | None) -> RebuildResult:
    subjects = Subjects(settings.subject_prefix)
    # Personal fields are opened as the live consumers open them: erased cases replay erased. The
    # types whose writes read none (``store.unopened``) read as erased throughout: the same writes.
    log = EventLog(js, settings.stream, subjects, personal=personal_data(keys_js or js, settings, BATCH))
    info = await js.stream_info(settings.stream)
    last = info.state.last_seq
    upgrade(store)  # the target gets the same migrated tables as a live projection
    store.reset()
    read = applied = skipped = 0
    handles, unread, unopened = store.handles, store.plan_unread is not None, store.unopened
    seq = 0
    interruptions = 0
    # With a distant database, the writes of one batch (and the decoding of its events without
    # personal fields opened) run in a worker thread while the next batch is fetched and its opened
    # events decoded: the driver waits on the database's round trips without the GIL, so the two
    # overlap. One batch is in the database at a time, so batches commit in order. Otherwise in turn.
    writing: asyncio.Future[tuple[int, int]] | None = None
    beside = _writes_beside(store)
    try:
        while seq < last:
            # A clustered stream may move its leader mid-replay, and the ephemeral consumer goes
            # with it (503); carry on from the next sequence on a fresh one.
            try:
                async with log_batches(js, settings.stream, subjects, seq) as batches:
                    while seq < last:
                        msgs, pending = await batches.next(BATCH, timeout=FETCH_TIMEOUT)
                        wanted: list[_Wanted] = []  # in log order
                        cases: list[str] = []
                        ignored = through = 0
                        for m in msgs:
                            seq = stream_seq(m.reply)
                            if seq > last:
                                break
                            read += 1
                            through = seq
                            *_, case_id, kind = m.subject.rsplit(".", 2)
                            # The subject ends in the event type: an event the projection ignores is not
                            # worth decoding. An erasure always is: reading it makes the key cache forget
                            # the case, as the live consumer's does.
                            if handles is not None and kind not in handles and kind != ERASURE:
                                if unread:
                                    wanted.append(Unread(seq, case_id, kind))
                                else:
                                    ignored += 1
                            elif kind in unopened:  # its writes read no personal field: no key needed
                                wanted.append((m.data, seq, False, kind))
                            else:
                                wanted.append((m.data, seq, True, kind))
                                cases.append(case_id)
                        if log.personal is not None and cases:
                            await log.personal.prefetch(cases)
                        batch = _Decoding(log, wanted)
                        await batch.open()  # the others are decoded as the store takes them, in its thread
                        if writing is not None:
                            applied, skipped = _counted(applied, skipped, await writing)
                        # Ignored events are applied too, as far as the checkpoint goes (it moves past them).
                        applied += ignored
                        if beside:
                            writing = asyncio.ensure_future(asyncio.to_thread(_apply, store, batch, through))
                        else:
                            applied, skipped = _counted(applied, skipped, _apply(store, batch, through))
                        if progress:
                            progress(read, info.state.messages)
                        if pending == 0:
                            seq = last
            except (nats.js.errors.ServiceUnavailableError, nats.js.errors.NoStreamResponseError, Interrupted) as exc:
                interruptions += 1
                if interruptions > MAX_INTERRUPTIONS:
                    raise RuntimeError(
                        f"the replay was interrupted {interruptions} times; last at seq {seq}: {exc}") from exc
                await asyncio.sleep(0.2 * interruptions)
        if writing is not None:
            applied, skipped = _counted(applied, skipped, await writing)
            writing = None
    finally:
        if writing is not None:  # failing: let the batch in the database finish before anything else runs
            with contextlib.suppress(Exception):
                await writing
    return RebuildResult(store.consumer, read, applied, skipped, last, str(store.engine.url))


# A batch's writes wait on about a dozen round trips to the database (its checkpoint, a statement
# per group of rows, the commit). Written in a thread beside the next batch's fetch, they overlap
# it, but each hand-over of the GIL costs CPU: on SQLite (no round trips) writing in turn took 1-4 µs
# less per event (the fifth round), and on PostgreSQL over loopback (~0.1 ms a round trip) 1-3 µs
# less and 5-15 % more events/s (the sixth round, with its batches on the cursor). Over a network a
# round trip of a millisecond would cost ~10 µs per event in turn: there the thread pays.
BESIDE_FROM_SECONDS = 0.0003


def _writes_beside(store: ProjectionStore) -> bool:
    """Whether a replay writes its batches in a thread: on a database whose round trip is long."""
    if store.engine.dialect.name == "sqlite":
        return False
    return _round_trip(store) >= BESIDE_FROM_SECONDS


def _round_trip(store: ProjectionStore) -> float:
    """The median of five ``SELECT 1``s on the store's engine, in seconds (its pool already warm)."""
    times = []
    with store.engine.connect() as conn:
        for _ in range(5):
            start = time.perf_counter()
            conn.exec_driver_sql("SELECT 1")
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _apply(store: ProjectionStore, batch: _Decoding, through: int) -> tuple[int, int]:
    """Apply a batch; returns how many events were applied, and how many were unreadable."""
    return store.apply_batch(batch, through), batch.unreadable


def _counted(applied: int, skipped: int, done: tuple[int, int]) -> tuple[int, int]:
    return applied + done[0], skipped + done[1]  # the live consumer skips unreadable events too (and logs them)


# A batch's event as the replay hands it on: undecoded (``Unread``), decoded, to be decoded (its bytes,
# stream sequence, whether its personal fields are opened, and the type its subject names), or None
# (unreadable, or handed on).
_Wanted = Unread | Recorded | tuple[bytes, int, bool, str] | None


class _Decoding:
    """A batch's events for ``ProjectionStore.apply_batch``, in log order: those whose personal fields
    are opened decoded first, on the event loop (``open``: opening may fetch a key, an await, and an
    erasure makes the key cache forget its case, so in log order), the others as the store takes
    each one (in the writer's thread, on PostgreSQL: they need no key, nothing shared). The store
    drops each event once it has its writes, so each is freed while its memory is still warm, before
    the next is made; a list of the whole batch was freed at once, ~9 % of a meeting replay's CPU
    (py-spy); 15-25 % less CPU per event for every projection this way (A/B, SQLite and PostgreSQL).
    ``unreadable``: events that could not be read (the live consumer skips these too, and logs them).
    """

    def __init__(self, log: EventLog, wanted: list[_Wanted]) -> None:
        self._log = log
        self._wanted = wanted
        self.unreadable = 0

    async def open(self) -> None:
        wanted = self._wanted
        for i, item in enumerate(wanted):
            if isinstance(item, tuple) and item[2]:
                try:
                    wanted[i] = await self._log.decode_for_projection(item[0], item[1], item[3])
                except InvalidEvent:
                    wanted[i] = None
                    self.unreadable += 1

    def __iter__(self) -> Iterator[Recorded | Unread]:
        # No name here keeps an event handed on (nor ``enumerate``, whose reused tuple would): the
        # store holds it alone, and frees it when it is done with it.
        wanted, decode = self._wanted, self._log.decode_unopened
        for i in range(len(wanted)):
            item = wanted[i]
            if isinstance(item, tuple):
                wanted[i] = None
                try:
                    yield decode(item[0], item[1], item[3])  # one pass, where that reads the same
                except InvalidEvent:
                    self.unreadable += 1
            elif item is not None:
                item = None
                yield self._take(i)

    def _take(self, i: int) -> Recorded | Unread:
        item, self._wanted[i] = self._wanted[i], None
        return item  # type: ignore[return-value]


def swap_sqlite(live_url: str, rebuilt_url: str) -> None:
    """Replace the live SQLite file by the rebuilt one (the service must be stopped)."""
    live, rebuilt = Path(make_url(live_url).database or ""), Path(make_url(rebuilt_url).database or "")
    for suffix in ("-wal", "-shm"):
        Path(str(live) + suffix).unlink(missing_ok=True)
    os.replace(rebuilt, live)


def swap_schema(url: str, live: str, rebuilt: str) -> None:
    """Replace the live PostgreSQL schema by the rebuilt one, in one transaction."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {check_schema_name(live)} CASCADE"))
            conn.execute(text(f"ALTER SCHEMA {check_schema_name(rebuilt)} RENAME TO {live}"))
    finally:
        engine.dispose()


@dataclass(frozen=True)
class RebuildPlan:
    """Where a rebuild writes, and how the result replaces the live projection."""

    service: str
    live_url: str
    url: str
    schema: str | None = None  # the side schema (PostgreSQL)
    live_schema: str | None = None

    def store(self) -> ProjectionStore:
        return projection_store(self.service, self.url, self.schema)

    def swap(self) -> None:
        if self.schema is None:
            swap_sqlite(self.live_url, self.url)
        else:
            swap_schema(self.url, self.live_schema or self.service, self.schema)


def rebuild_plan(settings: Settings, service: str) -> RebuildPlan:
    """Build beside the live projection: a side SQLite file, or a side PostgreSQL schema."""
    live = settings.db_url(service)
    parsed = make_url(live)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError(f"{service}: an in-memory projection cannot be rebuilt in place; use --into URL")
        side = Path(parsed.database).with_suffix(".rebuild.db")
        side.unlink(missing_ok=True)
        return RebuildPlan(service, live, f"sqlite:///{side}")
    live_schema = settings.db_schema(service)
    side_schema = check_schema_name(f"{live_schema}_rebuild"[:63])
    engine = create_engine(live, poolclass=NullPool)
    try:
        with engine.begin() as conn:  # a rebuild that failed earlier leaves its side schema: start afresh
            conn.execute(text(f"DROP SCHEMA IF EXISTS {side_schema} CASCADE"))
    finally:
        engine.dispose()
    return RebuildPlan(service, live, live, side_schema, live_schema)
