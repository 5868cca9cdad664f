"""A service's durable consumer of the log: many events in hand, one replica at a time, in log order.

Each service applies the log strictly in order: a projection checkpoints the last sequence it
applied, so an event applied after a later one would be skipped as "already applied" and lost.
Until issue 7 that order came from ``max_ack_pending=1``: one event in flight, each costing a
round trip (the ack, then the next delivery) and a socket write of its own — most of a
service's busy time. Now:

- **A lease.** The durable is a ``pinned_client`` priority group (NATS 2.11+): the server sends
  events to one replica only (the pinned one) and fails over to another when that one stops
  pulling for ``PIN_TIMEOUT_SECONDS``; a replica that stops cleanly gives the pin up at once.
- **Many in hand.** Up to ``MAX_IN_HAND`` unacknowledged events; the pinned replica applies them
  in order and acknowledges them together (one socket write).
- **No gaps.** A failover (or a restart) can leave events unacknowledged by the replica that had
  them while the server hands the next ones to the new holder. So whenever the sequence does not
  follow the last one handled, the holder asks the server whether anything before it is still
  unacknowledged (``nothing_unacked_before``) and, if so, gives the events back (a nak with a
  delay) until those earlier ones come round again. Asking is rare: the log holds only events,
  so its sequence numbers follow each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from .eventlog import Subjects

GROUP = "apply"
PIN_TIMEOUT_SECONDS = 15.0  # a pinned replica silent this long loses the lease (a crash, a freeze)
ACK_WAIT_SECONDS = 10.0
MAX_IN_HAND = 512  # unacknowledged events a replica may hold (max_ack_pending)
PULL_BATCH = 256  # events one pull request may bring
PULL_EXPIRES = 1.0  # seconds a pull request stays open
GAP_RETRY_SECONDS = 0.5  # how soon an event given back because of a gap comes round again
# Acks wait this long (or for this many) to go out together: each socket write wakes the server
# (~0.3 ms of a service's CPU on these VMs), and an ack is never what makes an event visible
# (the projection's commit is). A crash in between only means a redelivery the checkpoint skips.
ACK_DELAY_SECONDS = 0.02
ACK_MOST = 64
_NS = 1_000_000_000


def consumer_config(service: str, subjects: Subjects) -> dict[str, Any]:
    """The durable's configuration as JetStream's API takes it (nats-py's ConsumerConfig has no
    priority-group fields, and an update through it would silently drop the lease)."""
    return {
        "durable_name": service,
        "filter_subject": subjects.all_events,
        "deliver_policy": "all",
        "ack_policy": "explicit",
        "ack_wait": int(ACK_WAIT_SECONDS * _NS),
        "max_ack_pending": MAX_IN_HAND,
        "priority_groups": [GROUP],
        "priority_policy": "pinned_client",
        "priority_timeout": int(PIN_TIMEOUT_SECONDS * _NS),
    }


LEASE_KEYS = ("ack_wait", "max_ack_pending", "priority_groups", "priority_policy", "priority_timeout")


async def consumer_info_raw(js: JetStreamContext, stream: str, durable: str) -> dict[str, Any] | None:
    """The durable's info as the server sends it (with the priority-group fields), None if there is none."""
    try:
        return await js._api_request(f"{js._prefix}.CONSUMER.INFO.{stream}.{durable}", timeout=js._timeout)
    except nats.js.errors.NotFoundError:
        return None


async def put_consumer(js: JetStreamContext, stream: str, config: dict[str, Any]) -> None:
    """Create the durable, or update it in place (same name): its delivery state is kept."""
    request = {"stream_name": stream, "config": config}
    await js._api_request(f"{js._prefix}.CONSUMER.CREATE.{stream}.{config['durable_name']}",
                          json.dumps(request).encode(), timeout=js._timeout)


async def ensure_consumer(js: JetStreamContext, stream: str, service: str, subjects: Subjects) -> str | None:
    """Make SERVICE's durable as wanted; says what it did (None: it already was)."""
    wanted = consumer_config(service, subjects)
    have = await consumer_info_raw(js, stream, service)
    if have is None:
        await put_consumer(js, stream, wanted)
        return f"consumer {service} created"
    if any(have["config"].get(key) != wanted[key] for key in LEASE_KEYS):
        await put_consumer(js, stream, wanted)
        return f"consumer {service} updated"
    return None


async def nothing_unacked_before(js: JetStreamContext, stream: str, durable: str, subject: str, seq: int) -> bool:
    """Has every event of the durable before SEQ been acknowledged (applied or parked)?

    Any answer but "yes, certainly" is no: the caller gives its events back and asks again later,
    so a stale answer costs a short wait, never an event."""
    info = await js.consumer_info(stream, durable)
    floor = info.ack_floor.stream_seq if info.ack_floor else 0
    if floor >= seq - 1:
        return True
    try:  # sequences in between may be gone from the stream (deleted messages): skip those
        first = await js.get_msg(stream, seq=floor + 1, subject=subject, next=True)
    except nats.js.errors.NotFoundError:
        return True
    return first.seq is not None and first.seq >= seq


def pull_status(msg: Msg) -> str | None:
    """What a message on a pull request's inbox is: None for an event, else the server's status
    (100 heartbeat; 404/408 nothing more for now; 409 ended; 423 not the pin; 503 no consumer)."""
    status = msg.headers.get("Status") if msg.headers else None
    if status is None and not msg.reply:
        return ""  # no status and nothing to ack: not an event either
    return status


class LeasedPull:
    """Pull requests on the durable's priority group, carrying the pin once the server gave one."""

    def __init__(self, nc: NatsClient, js: JetStreamContext, stream: str, durable: str) -> None:
        self._nc, self._js, self._stream, self._durable = nc, js, stream, durable
        self._next = f"{js._prefix}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._unpin = f"{js._prefix}.CONSUMER.UNPIN.{stream}.{durable}"
        self.pin: str | None = None
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._inbox = nc.new_inbox()
        self._sub: Any = None
        self._left = 0  # events the open request may still bring
        self._asked_at = 0.0

    async def open(self) -> None:
        async def arrived(msg: Msg) -> None:
            self._queue.put_nowait(msg)

        self._sub = await self._nc.subscribe(self._inbox, cb=arrived)

    async def _ask(self) -> None:
        request: dict[str, Any] = {"batch": PULL_BATCH, "expires": int(PULL_EXPIRES * _NS), "group": GROUP}
        if self.pin:
            request["id"] = self.pin
        await self._nc.publish(self._next, json.dumps(request).encode(), reply=self._inbox)
        self._left, self._asked_at = PULL_BATCH, asyncio.get_running_loop().time()

    async def next_batch(self, limit: int) -> list[Msg]:
        """The events that have arrived (waiting up to a pull's lifetime for the first); [] if none."""
        loop = asyncio.get_running_loop()
        if self._left <= 0 or loop.time() - self._asked_at > PULL_EXPIRES + 1.0:  # ended, or lost (reconnect)
            await self._ask()
        try:
            first = await asyncio.wait_for(self._queue.get(), timeout=PULL_EXPIRES + 1.0)
        except TimeoutError:
            self._left = 0
            return []
        batch: list[Msg] = []
        msg: Msg | None = first
        while msg is not None:
            if self._is_event(msg):
                batch.append(msg)
            if len(batch) >= limit:
                break
            msg = self._queue.get_nowait() if not self._queue.empty() else None
        return batch

    def _is_event(self, msg: Msg) -> bool:
        status = pull_status(msg)
        if status is not None:
            if status == "423":  # another replica holds the lease now: ask afresh, without our old pin
                self.pin = None
            if status != "100":
                self._left = 0
            return False
        self._left -= 1
        pin = (msg.headers or {}).get("Nats-Pin-Id")
        if pin:
            self.pin = pin
        return True

    def forget_request(self) -> None:
        """The connection dropped: the open request is gone with it; ask afresh."""
        self._left = 0

    async def close(self, give_up_lease: bool) -> None:
        with contextlib.suppress(Exception):
            if self._sub is not None:
                await self._sub.unsubscribe()
        with contextlib.suppress(Exception):  # arrived but not begun: back now, not after ACK_WAIT_SECONDS
            while not self._queue.empty():
                msg = self._queue.get_nowait()
                if self._is_event(msg):
                    await msg.nak()
        if give_up_lease and self.pin:  # let another replica take over now, not in PIN_TIMEOUT_SECONDS
            with contextlib.suppress(nats.errors.Error, TimeoutError, KeyError, ValueError):
                info = await consumer_info_raw(self._js, self._stream, self._durable)
                held = {g.get("group"): g.get("pinned_client_id") for g in (info or {}).get("priority_groups") or []}
                if held.get(GROUP) == self.pin:  # unpinning unpins whoever holds it: only ever ourselves
                    await self._nc.request(self._unpin, json.dumps({"group": GROUP}).encode(), timeout=1.0)


class Acks:
    """Acknowledgements of handled events (applied or parked), sent together, in order."""

    def __init__(self, delay: float = ACK_DELAY_SECONDS, most: int = ACK_MOST) -> None:
        self._delay, self._most = delay, most
        self._held: list[Msg] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    def add(self, msg: Msg) -> None:
        self._held.append(msg)
        if len(self._held) >= self._most:
            self._send_later(0)
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._delay, self._send_later, 0)

    def _send_later(self, _: int) -> None:
        task = asyncio.ensure_future(self.flush())
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def flush(self) -> None:
        """Send every ack held now (nats-py writes those queued together in one go)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        held, self._held = self._held, []
        for msg in held:
            await msg.ack()
