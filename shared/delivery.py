"""Applying one event from a service's consumer: retry what may pass, park what never will.

- A *transient* failure (the database or NATS unavailable, a case that kept changing) is
  retried in place with backoff, for as long as it takes: moving past it would let a later
  event be checkpointed ahead of it, so nothing is skipped and the order is kept.
- Any other failure is the same on every try (a poison event, or a bug). After a bounded
  number of attempts the event is **parked** in the dead-letter stream, with the reason, and
  the consumer moves on; `rethink deadletter list` shows what was parked.
- A message that is not an event of ours at all is parked at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import nats.errors
import nats.js.errors
import sqlalchemy.exc
from nats.js import JetStreamContext, api

from .envelope import Envelope, InvalidEvent, Recorded
from .errors import Code, NotFound, Reason
from .eventlog import ConcurrencyConflict, Subjects
from .keystore import KeyStoreUnavailable
from .logs import get_logger

log = get_logger("rethink.delivery")

TRANSIENT: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,  # database locked, down, connection refused
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
    nats.errors.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    nats.errors.StaleConnectionError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,  # a cluster electing a new stream leader
    ConcurrencyConflict,
    TimeoutError,
    ConnectionError,
    KeyStoreUnavailable,  # the keys come back: the event waits for them, it is not parked
)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT)


class DeadLetters:
    """The dead-letter stream: parked events with their reason, one subject per service."""

    def __init__(self, js: JetStreamContext, stream: str, subjects: Subjects) -> None:
        self._js = js
        self.stream = stream
        self.subjects = subjects

    def subject(self, service: str) -> str:
        return f"{self.subjects.prefix}.deadletter.{service}"

    async def park(self, service: str, seq: int, data: bytes, reason: str, attempts: int) -> None:
        record = {
            "service": service, "seq": seq, "reason": reason, "attempts": attempts,
            "parked_at": datetime.now(UTC).isoformat(),
            "message": data.decode("utf-8", errors="replace")[:65536],
        }
        # One parking per service and sequence, however often it is redelivered.
        await self._js.publish(self.subject(service), json.dumps(record).encode(), stream=self.stream,
                               headers={"Nats-Msg-Id": f"{service}:{seq}"})

    async def list(self, service: str | None = None) -> list[dict[str, Any]]:
        filter_subject = self.subject(service) if service else f"{self.subjects.prefix}.deadletter.>"
        sub = await self._js.pull_subscribe(filter_subject, stream=self.stream, config=api.ConsumerConfig(
            ack_policy=api.AckPolicy.NONE, deliver_policy=api.DeliverPolicy.ALL, mem_storage=True,
            inactive_threshold=30.0))
        try:
            pending = (await sub.consumer_info()).num_pending or 0
            out: list[dict[str, Any]] = []
            while len(out) < pending:
                out += [{"id": m.metadata.sequence.stream, **json.loads(m.data)}
                        for m in await sub.fetch(min(pending - len(out), 256), timeout=5)]
            return out
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


    async def get(self, parked_id: int) -> dict[str, Any]:
        """One parked event by its id (its sequence in the dead-letter stream)."""
        try:
            msg = await self._js.get_msg(self.stream, parked_id)
        except nats.js.errors.NotFoundError:
            raise NotFound(Reason("id", f"nothing parked with id {parked_id}", Code.NOT_FOUND)) from None
        if not (msg.subject or "").startswith(f"{self.subjects.prefix}.deadletter."):
            raise NotFound(Reason("id", f"nothing parked with id {parked_id}", Code.NOT_FOUND))
        return {"id": parked_id, **json.loads(msg.data)}

    async def remove(self, parked_id: int) -> None:
        await self._js.delete_msg(self.stream, parked_id)


Park = Callable[[str, int, bytes, str, int], Awaitable[None]]
Decode = Callable[[Envelope, bytes, int], Awaitable[Recorded]]  # the message parsed, its bytes, its sequence


async def _plain(env: Envelope, data: bytes, seq: int) -> Recorded:
    return Recorded.from_message(data, seq)


async def deliver(
    handler: Callable[[Recorded], Awaitable[None]],
    data: bytes,
    seq: int,
    *,
    service: str,
    decode: Decode = _plain,
    keep_alive: Callable[[], Awaitable[None]],
    stopping: asyncio.Event,
    park: Park,
    max_attempts: int,
    first_delay: float = 0.05,
    failed: Callable[[str, bool], None] | None = None,
    observe: Callable[[Recorded], None] | None = None,
) -> bool:
    """Apply one event. True: done with it (applied or parked); False: stopping, leave it unacked.

    ``observe`` sees every readable event first, in log order (the service's case cache)."""
    try:
        env = Envelope.from_bytes(data)
    except InvalidEvent as exc:
        log.error("event_unreadable_parked", service=service, seq=seq, error=str(exc))
        await park(service, seq, data, f"unreadable: {exc}", 0)
        return True
    def bound() -> Any:  # bound only when something is to be said: binding per event cost more than it said
        return log.bind(service=service, seq=seq, case_id=env.case_id, event_id=str(env.event_id),
                        event_type=env.type, correlation_id=str(env.correlation_id))

    delay, failures, observed = first_delay, 0, False
    while True:
        try:
            try:
                # Opening personal fields needs the key store: while it is away this fails as
                # transient and waits, like a database that is down.
                recorded = await decode(env, data, seq)
            except InvalidEvent as exc:
                bound().error("event_unreadable_parked", error=str(exc))
                await park(service, seq, data, f"unreadable: {exc}", 0)
                return True
            if observe is not None and not observed:
                observe(recorded)
                observed = True
            await handler(recorded)
            return True
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if failed is not None:
                failed(env.type, is_transient(exc))  # env: decoding itself may be what failed
            if not is_transient(exc):
                failures += 1
                if failures >= max_attempts:
                    bound().error("event_parked", error=error, attempts=failures)
                    await park(service, seq, data, error, failures)
                    return True
            bound().warning("event_handler_failed_retrying", error=error, retry_in=delay,
                          transient=is_transient(exc))
        with contextlib.suppress(Exception):
            await keep_alive()  # tell JetStream we are still working on it, so it is not redelivered
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=delay)
        if stopping.is_set():
            return False
        delay = min(delay * 2, 10.0)
