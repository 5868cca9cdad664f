"""Creates the event, dead-letter and receipt streams and each service's durable consumer, once, before services start.

Services bind to what exists (``declare=False``): if each declared the stream on start they
would race and overwrite one another's configuration.
"""

from __future__ import annotations

import asyncio
import time

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from .access import access_stream_config
from .consumer import ACK_WAIT_SECONDS, ensure_consumer
from .eventlog import Subjects
from .keystore import kv_stream_config
from .logs import get_logger
from .receipts import INBOUND_CONSUMER, inbound_subject
from .settings import SERVICES, Settings

log = get_logger("rethink.bootstrap")

# How long JetStream waits for an ack before redelivering. Handlers take milliseconds, and a
# handler retrying in place tells JetStream it is still working; so this mostly bounds how
# long a crashed service's in-flight events wait before they are redelivered. The services'
# own durables are configured in .consumer (a lease, many events in hand).


def stream_config(settings: Settings, subjects: Subjects) -> api.StreamConfig:
    return api.StreamConfig(
        name=settings.stream,
        subjects=[subjects.all_events],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        max_msg_size=settings.max_message_bytes * 2,
        duplicate_window=float(settings.duplicate_window_seconds),
        # The log is the audit trail: nothing ages out, nothing is rolled up.
        max_age=0,
        allow_rollup_hdrs=False,
        deny_purge=True,
        num_replicas=settings.stream_replicas,
    )


def receipt_stream_config(settings: Settings, subjects: Subjects) -> api.StreamConfig:
    """Receipts wait here for agencies that were offline; each agency reads only its own subjects."""
    return api.StreamConfig(
        name=settings.receipt_stream,
        subjects=[f"{subjects.prefix}.receipts.>"],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        max_age=float(settings.receipt_retention_days * 24 * 3600),
        duplicate_window=120.0,
        num_replicas=settings.stream_replicas,  # a receipt owed to an agency survives losing a node
    )


def inbound_stream_config(settings: Settings, subjects: Subjects) -> api.StreamConfig:
    """Agencies' stored messages wait here while intake is down; each leaves once it has a receipt."""
    return api.StreamConfig(
        name=settings.inbound_stream,
        subjects=[inbound_subject(subjects, "*", "*")],
        retention=api.RetentionPolicy.WORK_QUEUE,
        storage=api.StorageType.FILE,
        max_msg_size=settings.max_message_bytes * 2,  # bigger ones are refused by JetStream, not receipted
        max_age=float(settings.receipt_retention_days * 24 * 3600),
        duplicate_window=120.0,  # an agency may set Nats-Msg-Id; request_id is what lasts
        # JetStream acked the agency's message: losing one node must not lose it.
        num_replicas=settings.stream_replicas,
    )


def inbound_consumer_config(subjects: Subjects) -> api.ConsumerConfig:
    return api.ConsumerConfig(
        durable_name=INBOUND_CONSUMER, filter_subject=inbound_subject(subjects, "*", "*"),
        deliver_policy=api.DeliverPolicy.ALL, ack_policy=api.AckPolicy.EXPLICIT, ack_wait=ACK_WAIT_SECONDS,
        max_ack_pending=1,
    )


# A cluster that has just formed can have a meta leader before every peer has reported in:
# stream placement then fails for a moment ("no suitable peers"). Bootstrap is idempotent, so
# it simply tries again; a real misconfiguration still fails, once the patience is spent.
PLACEMENT_NOT_READY = (10005, 10023)  # no suitable peers for placement; insufficient resources


def _not_ready_yet(exc: BaseException) -> bool:
    if isinstance(exc, nats.js.errors.APIError) and exc.err_code in PLACEMENT_NOT_READY:
        return True
    return isinstance(exc, (nats.js.errors.ServiceUnavailableError, nats.js.errors.NoStreamResponseError,
                            nats.errors.TimeoutError))


async def bootstrap(js: JetStreamContext, settings: Settings, patience: float = 60.0) -> list[str]:
    """Idempotent: returns what it created or updated. Waits out a cluster still forming."""
    deadline = time.monotonic() + patience
    delay = 0.2
    while True:
        try:
            return await _bootstrap_once(js, settings)
        except Exception as exc:
            if not _not_ready_yet(exc) or time.monotonic() > deadline:
                raise
            log.warning("bootstrap_waiting_for_cluster", error=f"{type(exc).__name__}: {exc}", retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _bootstrap_once(js: JetStreamContext, settings: Settings) -> list[str]:
    subjects = Subjects(settings.subject_prefix)
    done: list[str] = []
    wanted = stream_config(settings, subjects)
    try:
        info = await js.stream_info(settings.stream)
        if _differs(info.config, wanted):
            await js.update_stream(wanted)
            done.append(f"stream {settings.stream} updated")
    except NotFoundError:
        await js.add_stream(wanted)
        done.append(f"stream {settings.stream} created")
    dead = api.StreamConfig(name=settings.dead_letter_stream, subjects=[f"{subjects.prefix}.deadletter.>"],
                            storage=api.StorageType.FILE, duplicate_window=float(settings.duplicate_window_seconds),
                            num_replicas=settings.stream_replicas)
    try:
        await js.stream_info(settings.dead_letter_stream)
    except NotFoundError:
        await js.add_stream(dead)
        done.append(f"stream {settings.dead_letter_stream} created")
    receipts = receipt_stream_config(settings, subjects)
    try:
        info = await js.stream_info(settings.receipt_stream)
        if (info.config.subjects, info.config.max_age, info.config.num_replicas) != (
                receipts.subjects, receipts.max_age, receipts.num_replicas):
            await js.update_stream(receipts)
            done.append(f"stream {settings.receipt_stream} updated")
    except NotFoundError:
        await js.add_stream(receipts)
        done.append(f"stream {settings.receipt_stream} created")
    inbound = inbound_stream_config(settings, subjects)
    try:
        have_inbound = (await js.stream_info(settings.inbound_stream)).config
        if have_inbound.num_replicas != inbound.num_replicas:  # made before it was replicated
            await js.update_stream(inbound)
            done.append(f"stream {settings.inbound_stream} updated")
    except NotFoundError:
        await js.add_stream(inbound)
        done.append(f"stream {settings.inbound_stream} created")
    try:
        await js.consumer_info(settings.inbound_stream, INBOUND_CONSUMER)
    except NotFoundError:
        await js.add_consumer(settings.inbound_stream, inbound_consumer_config(subjects))
        done.append(f"consumer {INBOUND_CONSUMER} created")
    # The key store and the access records: streams of their own, created once like the log.
    # As many copies as the log: losing the only copy of the keys would erase every case.
    for config in (kv_stream_config(settings.keys_bucket, settings.stream_replicas),
                   access_stream_config(settings, subjects)):
        try:
            info = await js.stream_info(config.name)
            if info.config.num_replicas != config.num_replicas:
                await js.update_stream(info.config.evolve(num_replicas=config.num_replicas))
                done.append(f"stream {config.name} updated")
        except NotFoundError:
            await js.add_stream(config)
            done.append(f"stream {config.name} created")
    for service in SERVICES:
        # Updated in place when made by an earlier version (one event in flight, no lease).
        if (what := await ensure_consumer(js, settings.stream, service, subjects)) is not None:
            done.append(what)
    return done


def _differs(have: api.StreamConfig, want: api.StreamConfig) -> bool:
    keys = ("subjects", "max_msg_size", "duplicate_window", "deny_purge", "num_replicas")
    return any(getattr(have, k) != getattr(want, k) for k in keys)
