"""Runs one service: a FastStream NATS broker wired to that service's routes, and its event consumer.

This is the only place that touches FastStream (commands, queries, agencies' messages). Events
are pulled one at a time from the service's durable consumer with nats-py directly, and acked
only after they are fully applied (a failing event is retried or parked, never ``term()``-ed
and lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, NatsUserPassword, PullSub
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from pydantic import BaseModel, ConfigDict, Field

from . import gctune, natsheaders, natsparser
from .clock import Clock, SystemClock
from .consumer import GAP_RETRY_SECONDS, PULL_BATCH, Acks, LeasedPull, nothing_unacked_before
from .delivery import DeadLetters, deliver
from .envelope import Envelope, Recorded
from .errors import Reason, Rejected
from .eventlog import CaseCache, EventLog, Subjects
from .health import HealthServer
from .logs import get_logger
from .messaging import Route, dispatch
from .metrics import Metrics
from .privacy import personal_data
from .projection import retrying_parked
from .receipts import INBOUND_ATTEMPTS, INBOUND_CONSUMER, Receipt, ReceiptLog, inbound_subject, receipt_for
from .settings import Settings

log = get_logger("rethink.runtime")
# Commands, queries and agencies' messages handled side by side (each subscriber): one waiting on
# NATS (a read, an append, a receipt) no longer holds up the next. Two on the same case are safe:
# the append's case-wide optimistic concurrency makes the loser decide again on the fresh case.
COMMAND_WORKERS = 8
READY_DB_TIMEOUT = 3.0  # a database slower than this to answer SELECT 1 is not ready
UNREACHABLE_WARNING_SECONDS = 10.0  # while NATS cannot be reached, say so this often


async def _raw_body(msg: NatsMessage) -> bytes:
    return msg.body


async def _subject_and_body(msg: NatsMessage) -> tuple[str, bytes]:
    """What request handlers take, instead of the message from FastStream's context: resolving a
    context parameter runs in a worker thread, a thread hand-off per request that was a tenth of a
    service's CPU (issue 7)."""
    return msg.raw_message.subject, msg.body




class _Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetryParked(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int = Field(ge=1, description="The parked event's id (its sequence in the dead-letter stream).")


@dataclass
class ServiceParts:
    """What a service factory returns: pure handlers, no connections."""

    name: str
    commands: Mapping[str, Route] = field(default_factory=dict)
    queries: Mapping[str, Route] = field(default_factory=dict)
    on_event: Callable[[Recorded], Awaitable[None]] | None = None
    periodic: list[tuple[float, Callable[[], Awaitable[Any]]]] = field(default_factory=list)
    intake_subject: bool = False  # intake also listens on <prefix>.intake.<agency>.<command> (and .inbound.)
    db_ping: Callable[[], None] | None = None  # raises when the projection's database does not answer


Factory = Callable[[Settings, EventLog, Clock], ServiceParts]


class RunningService:
    def __init__(self, factory: Factory, settings: Settings, clock: Clock | None = None, name: str = "?") -> None:
        self.factory = factory
        self._name = name  # for the logs until the factory has named the service
        self.settings = settings
        self.clock = clock or SystemClock()
        self.subjects = Subjects(settings.subject_prefix)
        self.stopping = asyncio.Event()
        target = settings.nats_connect_kwargs()
        self.broker = NatsBroker(
            target["servers"],
            security=NatsUserPassword(target["user"], target["password"]) if "user" in target else None,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            logger=None,
            # Hand handlers the raw bytes: FastStream's default decoder json-parses every body
            # first and lets a RecursionError (deeply nested JSON) escape unanswered.
            decoder=_raw_body,
        )
        self.parts: ServiceParts | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.last_applied_seq = 0
        # Events are applied one at a time: from the consumer, or an operator's retry of a parked one.
        self._applying = asyncio.Lock()
        self.nc: NatsClient | None = None
        self.metrics: Metrics | None = None
        self._on_event: Callable[[Msg, list[Msg], Acks], Awaitable[bool]] | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._fetching = False

    @property
    def service_name(self) -> str:
        return self.parts.name if self.parts else self._name

    async def start(self) -> None:
        natsheaders.install()  # every event this service reads carries the log's headers
        natsparser.install()  # and comes through nats-py's protocol parser
        self.nc = nc = await self.broker.connect()
        # Fed by this service's own consumer (on_event below), so reactions rarely re-read their case.
        self.case_cache = CaseCache()
        self.event_log = event_log = EventLog(nc.jetstream(), self.settings.stream, self.subjects,
                                              personal=personal_data(nc.jetstream(), self.settings),
                                              cache=self.case_cache)
        self.dead_letters = DeadLetters(nc.jetstream(), self.settings.dead_letter_stream, self.subjects)
        self._js = nc.jetstream()
        self.receipts = ReceiptLog(nc.jetstream(), self.settings.receipt_stream, self.subjects)
        self.parts = parts = self.factory(self.settings, event_log, self.clock)
        self.metrics = Metrics(parts.name)
        self._wire(parts)
        await self.broker.start()
        if self._on_event is not None:
            self._consumer = asyncio.create_task(self._consume(self._on_event))
        await nc.flush()  # subscriptions registered with the server before we say we are up
        for interval, job in parts.periodic:
            self._tasks.append(asyncio.create_task(self._every(interval, job)))
        log.info("service_started", service=parts.name, nats=self.settings.printable_nats_url())

    async def readiness(self) -> dict[str, str]:
        """Each part "ok" or what is wrong: NATS connected, the database answering SELECT 1, and
        (with RETHINK_READY_MAX_PENDING) the consumer caught up within that bound."""
        nats_ok = self.nc is not None and self.nc.is_connected
        parts = {"nats": "ok" if nats_ok else "not connected"}
        bound = self.settings.ready_max_pending
        if bound and self.parts is not None and self.parts.on_event is not None:
            pending = await self._pending()
            parts["consumer"] = ("ok" if pending is not None and pending <= bound else
                                 f"{pending} events pending, more than {bound}" if pending is not None else
                                 "consumer info unavailable")
        ping = self.parts.db_ping if self.parts else None
        if ping is not None:
            try:
                await asyncio.wait_for(asyncio.to_thread(ping), timeout=READY_DB_TIMEOUT)
                parts["database"] = "ok"
            except Exception as exc:  # any failure means: not ready
                parts["database"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        return parts

    async def metrics_text(self) -> bytes:
        """The Prometheus exposition, with the consumer's lag fresh from JetStream when it answers."""
        if self.metrics is None:  # not started yet (still connecting to NATS): nothing counted
            return b""
        await self._pending()
        return self.metrics.exposition()

    async def _pending(self) -> int | None:
        """Events the consumer has not yet applied, from JetStream (also kept in the metrics); None if it cannot say."""
        if self.parts is None or self.parts.on_event is None or self.nc is None or not self.nc.is_connected:
            return None
        try:
            info = await self.nc.jetstream(timeout=1.0).consumer_info(self.settings.stream, self.parts.name)
        except Exception:  # a probe or a scrape must answer even when NATS does not
            return None
        # Not yet applied: those still in the stream, and those in a replica's hand but not yet acked.
        pending = (info.num_pending or 0) + (info.num_ack_pending or 0)
        if self.metrics is not None:
            self.metrics.consumer_pending.labels(self.parts.name).set(pending)
        return pending

    async def _timed(self, routes: Mapping[str, Route], command: str, body: bytes, **kw: Any) -> dict[str, Any]:
        started = time.perf_counter()
        reply = await dispatch(routes, command, body, self.settings.max_message_bytes, **kw)
        if self.metrics is not None:  # unknown names share one label: subjects must not grow the series
            self.metrics.command(command if command in routes else "unknown", str(reply.get("status", "")),
                                 time.perf_counter() - started)
        return reply

    def _wire(self, parts: ServiceParts) -> None:
        broker, s, max_bytes = self.broker, self.subjects, self.settings.max_message_bytes
        name = parts.name

        if parts.commands and not parts.intake_subject:
            @broker.subscriber(s.command(name, "*"), queue=f"{name}-commands", max_workers=COMMAND_WORKERS,
                               decoder=_subject_and_body)
            async def on_command(request: Any) -> dict[str, Any]:
                subject, body = request
                structlog.contextvars.clear_contextvars()
                return await self._timed(parts.commands, subject.rsplit(".", 1)[-1], body)

        async def ping(_: _Empty) -> dict[str, Any]:
            return {"status": "ok", "service": name, "last_applied_seq": self.last_applied_seq}

        queries = {**parts.queries, "ping": Route(_Empty, ping, "Is the service up?")}

        @broker.subscriber(s.query(name, "*"), queue=f"{name}-queries", max_workers=COMMAND_WORKERS,
                           decoder=_subject_and_body)
        async def on_query(request: Any) -> dict[str, Any]:
            subject, body = request
            return await self._timed(queries, subject.rsplit(".", 1)[-1], body)

        if parts.intake_subject:
            async def receive(subject: str, body: bytes) -> Receipt:
                # The producing agency is taken from the subject it arrived on, never the payload.
                _, _, agency, command = subject.rsplit(".", 3)
                structlog.contextvars.clear_contextvars()
                received_at = self.clock.now()
                reply = await self._timed(parts.commands, command, body, agency=agency)
                return receipt_for(reply, agency, command, body, received_at, max_bytes)

            @broker.subscriber(s.intake("*", "*"), queue=f"{name}-agencies", max_workers=COMMAND_WORKERS,
                               decoder=_subject_and_body)
            async def on_agency(request: Any) -> dict[str, Any]:
                receipt = await receive(*request)
                # Every message gets a receipt, kept durably for an agency that is not listening now.
                await self.receipts.keep(receipt)
                return receipt.to_reply()

            @broker.subscriber(
                inbound_subject(s, "*", "*"),
                stream=JStream(self.settings.inbound_stream, declare=False),
                durable=INBOUND_CONSUMER,
                pull_sub=PullSub(batch_size=1, timeout=1.0),
                ack_policy=AckPolicy.MANUAL,
            )
            async def on_inbound(msg: NatsMessage) -> None:
                # Messages agencies stored in JetStream (the path that works while intake is down):
                # the receipt is kept for them to collect; nobody waits for a reply.
                raw = msg.raw_message
                receipt = await receive(raw.subject, raw.data)
                # The log or database away for a moment: keep the message and try again, as long as it
                # takes. A fault of ours: a few tries, then the agency gets the error receipt.
                if receipt.status == "unavailable" or (
                        receipt.status == "error" and raw.metadata.num_delivered < INBOUND_ATTEMPTS):
                    await msg.nack(delay=min(2 ** raw.metadata.num_delivered, 30))
                    return
                if await self.receipts.keep(receipt):
                    await msg.ack()
                else:
                    await msg.nack(delay=5)  # the agency must get its receipt: keep the message until it can

        if parts.on_event is not None:
            handler = parts.on_event
            metrics = self.metrics
            assert metrics is not None

            parked: set[int] = set()  # sequences parked while in hand: those were not applied

            async def park(service: str, seq: int, data: bytes, reason: str, attempts: int) -> None:
                await self.dead_letters.park(service, seq, data, reason, attempts)
                metrics.parked()
                parked.add(seq)

            async def on_event(raw: Msg, in_hand: list[Msg], acks: Acks) -> bool:
                meta, started = raw.metadata, time.perf_counter()

                async def keep_alive() -> None:  # a slow retry: tell JetStream every event in hand is still ours
                    await acks.flush()
                    for msg in in_hand:
                        await msg.in_progress()

                async with self._applying:
                    done = await deliver(
                        handler, raw.data, meta.sequence.stream, service=name, keep_alive=keep_alive,
                        stopping=self.stopping, park=park, decode=self._decode,
                        max_attempts=self.settings.max_handler_attempts,
                        failed=metrics.failed, observe=self.case_cache.observe,
                    )
                if not done:
                    return False
                self.last_applied_seq = meta.sequence.stream
                if meta.sequence.stream in parked:
                    parked.discard(meta.sequence.stream)
                else:
                    metrics.applied(raw.subject.rsplit(".", 1)[-1], meta.sequence.stream, meta.num_pending,
                                    time.perf_counter() - started, meta.num_delivered > 1)
                return True

            self._on_event = on_event

            retry = {"retry_parked": Route(RetryParked, lambda cmd: self._retry_parked(handler, cmd),
                                           "Apply a parked event again (after its cause was fixed)")}

            @broker.subscriber(f"{s.prefix}.ops.{name}.*", queue=f"{name}-ops", decoder=_subject_and_body)
            async def on_ops(request: Any) -> dict[str, Any]:
                subject, body = request
                return await dispatch(retry, subject.rsplit(".", 1)[-1], body, max_bytes)

    async def _retry_parked(self, handler: Callable[[Recorded], Awaitable[None]], cmd: RetryParked) -> dict[str, Any]:
        """Apply one parked event now; on success it leaves the dead-letter stream."""
        name = self.parts.name if self.parts else "?"
        parked = await self.dead_letters.get(cmd.id)
        if parked["service"] != name:
            raise Rejected(Reason("id", f"parked by {parked['service']}, not {name}"))
        try:  # the event as the log holds it, in full (the parked copy may be cut short)
            data = (await self._js.get_msg(self.settings.stream, parked["seq"])).data
        except Exception:
            data = parked["message"].encode()
        try:
            recorded = await self._decode(Envelope.from_bytes(data), data, parked["seq"])
            async with self._applying:
                with retrying_parked(parked["seq"]):
                    await handler(recorded)
        except Exception as exc:
            log.warning("parked_retry_failed", service=name, parked_id=cmd.id, seq=parked["seq"], error=str(exc))
            raise Rejected(Reason("id", f"still fails: {type(exc).__name__}: {exc}")) from None
        await self.dead_letters.remove(cmd.id)
        log.info("parked_event_applied", service=name, parked_id=cmd.id, seq=parked["seq"])
        return {"status": "accepted", "id": cmd.id, "service": name, "seq": parked["seq"]}

    async def _decode(self, env: Envelope, data: bytes, seq: int) -> Recorded:
        return (await self.event_log.decode([(data, seq)], [env]))[0]

    async def _consume(self, on_event: Callable[[Msg, list[Msg], Acks], Awaitable[bool]]) -> None:
        """Apply the service's durable consumer in log order, many events in hand (see .consumer).

        Pulled straight with nats-py, not through FastStream: its per-message machinery
        (middlewares, dependency resolution, a worker-thread hop for the injected message) was a
        fifth of a service's time per event. Handled events are acknowledged together, a few ms
        later (``Acks``); one still in hand when the service stops is given back (a nak), never lost.
        """
        assert self.parts is not None and self.nc is not None
        name, stream, js = self.parts.name, self.settings.stream, self._js
        pull = LeasedPull(self.nc, js, stream, name)
        await pull.open()
        previous: int | None = None  # the last sequence handled, while in an unbroken run
        acks = Acks()
        try:
            while not self.stopping.is_set():
                self._fetching = True
                try:
                    batch = await pull.next_batch(PULL_BATCH)
                except Exception as exc:  # disconnected: keep trying
                    log.warning("event_fetch_failed", service=name, error=f"{type(exc).__name__}: {exc}")
                    pull.forget_request()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stopping.wait(), timeout=0.5)
                    continue
                finally:
                    self._fetching = False
                i = 0
                try:
                    for i, msg in enumerate(batch):
                        if self.stopping.is_set():  # the rest goes back to the durable, for whoever holds it next
                            await _give_back(batch[i:], 0)
                            break
                        seq = msg.metadata.sequence.stream
                        if previous is not None and seq <= previous:
                            acks.add(msg)  # a copy of one handled in this run (redelivered meanwhile)
                            continue
                        if previous is None or seq != previous + 1:
                            await acks.flush()  # ours first: the server's ack floor is what is asked
                            if not await nothing_unacked_before(js, stream, name, self.subjects.all_events, seq):
                                # An earlier event is still out (with a replica that lost the lease, or
                                # given back on a stop): give these back until it has been handled.
                                log.info("events_given_back_for_an_earlier_one", service=name, seq=seq,
                                         count=len(batch) - i)
                                await _give_back(batch[i:], GAP_RETRY_SECONDS)
                                previous = None
                                break
                        if not await on_event(msg, batch[i:], acks):  # stopping mid-retry
                            await _give_back(batch[i:], 1.0)
                            previous = None
                            break
                        acks.add(msg)
                        previous = seq
                except Exception:  # parking, acking or asking failed (NATS away): the rest comes back, in order
                    log.exception("event_delivery_failed", service=name)
                    with contextlib.suppress(Exception):
                        await acks.flush()
                    with contextlib.suppress(Exception):
                        await _give_back(batch[i:], 1.0)  # a nak of one acked meanwhile changes nothing
                    previous = None
        finally:
            with contextlib.suppress(Exception):  # before the lease goes: the next holder must not wait for them
                await acks.flush()
            await pull.close(give_up_lease=self.stopping.is_set())

    async def _every(self, interval: float, job: Callable[[], Awaitable[Any]]) -> None:
        while not self.stopping.is_set():
            try:
                await job()
            except Exception:
                log.exception("periodic_job_failed", service=self.parts.name if self.parts else "?")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=interval)

    async def stop(self) -> None:
        self.stopping.set()
        if self._consumer is not None:
            # Waiting for an event: stop now. Applying one: let it finish (or give up, unacked).
            if self._fetching:
                self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self.broker.stop()
        except Exception as exc:
            # Stopping drains the subscriptions first, and a connection that is reconnecting (or
            # never connected) refuses to drain (ConnectionReconnectingError): close it instead.
            log.warning("broker_stop_failed", service=self.service_name, error=f"{type(exc).__name__}: {exc}")
            if self.nc is not None and not self.nc.is_closed:
                with contextlib.suppress(Exception):
                    await self.nc.close()
        log.info("service_stopped", service=self.service_name)


async def serve_forever(factory: Factory, settings: Settings, clock: Clock | None = None, name: str = "?") -> None:
    """Run until SIGINT/SIGTERM, then stop cleanly (in-flight events are nak'd for redelivery).

    The signal handlers and the health endpoints come first: connecting to NATS retries for as
    long as it takes, and a signal must stop the process even then (an orchestrator sends
    SIGTERM to a pod that never became ready, and kills it only after its grace period).
    """
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    service = RunningService(factory, settings, clock, name)
    health = None
    try:
        if settings.health_port:  # alive at once; not ready until connected (/readyz says why)
            health = await HealthServer(service.readiness, service.metrics_text, port=settings.health_port).start()
        if await _started_unless(done, service):
            # Everything made while starting (modules, schemas, compiled statements) lives as long
            # as the process: out of the collector's sight, so a full collection walks only what
            # the work makes (a pause of tens of ms less; see docs/performance.md).
            gctune.settle()
            await done.wait()
    finally:
        if health is not None:
            await health.stop()
        await service.stop()


async def _started_unless(signalled: asyncio.Event, service: RunningService) -> bool:
    """Start the service, or give up when signalled first; False if it never started."""
    starting = asyncio.create_task(service.start())
    waiting = asyncio.create_task(signalled.wait())
    try:
        while True:
            finished, _ = await asyncio.wait({starting, waiting}, timeout=UNREACHABLE_WARNING_SECONDS,
                                             return_when=asyncio.FIRST_COMPLETED)
            if starting in finished:
                starting.result()  # a failure to start (bad settings, a schema not migrated) is raised
                return True
            if waiting in finished:
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await starting
                log.warning("service_stopped_before_start", service=service.service_name,
                            nats=service.settings.printable_nats_url(),
                            reason="signalled while still connecting to NATS; nothing was received or written")
                return False
            log.warning("nats_unreachable_retrying", service=service.service_name,
                        nats=service.settings.printable_nats_url())
    finally:
        waiting.cancel()


async def _give_back(msgs: list[Msg], delay: float) -> None:
    for msg in msgs:
        await msg.nak(delay=delay)
