"""Test helpers: waiting for a condition (never a bare sleep), talking to services, cutting a connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from rethink.shared.natsserver import free_port

T = TypeVar("T")


async def wait_for(probe: Callable[[], Awaitable[T]], until: Callable[[T], bool] = bool, timeout: float = 15.0,
                   what: str = "condition") -> T:
    """Poll ``probe`` until ``until(result)``; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if until(last):
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


async def ask(nc, subject: str, payload: Any, timeout: float = 10.0) -> dict[str, Any]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload, default=str).encode()
    msg = await nc.request(subject, body, timeout=timeout)
    return json.loads(msg.data)


async def take_from_durable(nc, stream: str, durable: str):
    """Take the next event from a service's durable as a replica would (a pull on its priority group),
    then give up the lease it came with, so the service's own replicas get the durable at once."""
    from rethink.shared.consumer import GROUP

    js = nc.jetstream()
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        await nc.publish(f"{js._prefix}.CONSUMER.MSG.NEXT.{stream}.{durable}",
                         json.dumps({"batch": 1, "expires": 5_000_000_000, "group": GROUP}).encode(), reply=inbox)
        msg = await sub.next_msg(timeout=5)
    finally:
        await sub.unsubscribe()
    await nc.request(f"{js._prefix}.CONSUMER.UNPIN.{stream}.{durable}", json.dumps({"group": GROUP}).encode())
    return msg


def calls_to(monkeypatch, cls: type, method: str) -> list[Any]:
    """The first argument of each call to the async method ``cls.method`` from now on; the calls still run."""
    seen: list[Any] = []
    original = getattr(cls, method)

    async def counted(self, first, *args, **kwargs):
        seen.append(first)
        return await original(self, first, *args, **kwargs)

    monkeypatch.setattr(cls, method, counted)
    return seen


def request_payload(**overrides: Any) -> dict[str, Any]:
    """A valid Re-think request; every address is example.org, the child is a case reference only."""
    yes = {"answer": True}
    payload: dict[str, Any] = {
        "request_id": None,
        "immediate_risk": False,
        "case_reference": "CSC-2026-0042",
        "requester": {"name": "Sam Teacher", "role": "Designated safeguarding lead",
                      "agency": "Northside School Trust", "email": "dsl@school.example.org"},
        "agencies": ["Northside School Trust", "Children's Social Care", "Community Health"],
        "reason": "disagreement",
        "description": "School and social care disagree on whether the plan addresses attendance and neglect.",
        "invitees": [
            {"name": "Alex Social", "agency": "Children's Social Care", "email": "sw@council.example.org"},
            {"name": "Jo Health", "agency": "Community Health", "email": "hv@health.example.org"},
        ],
        "checks": {"raised_with_network": yes, "conversation_had": yes, "hips_policy_considered": yes},
    }
    payload.update(overrides)
    if payload["request_id"] is None:
        del payload["request_id"]
    return payload


async def seed_case(event_log, case_id: str, payloads: list, producer: str = "test", actor: str = "test"):
    """Arrange: append events to a case directly (as the owning services would have)."""
    import uuid as _uuid

    from rethink.shared.clock import SystemClock
    from rethink.shared.commands import envelopes
    from rethink.shared.envelope import Origin

    history = await event_log.read_case(case_id)
    envs = envelopes(payloads, case_id, Origin(producer, actor, _uuid.uuid4()), SystemClock(), None)
    await event_log.append(case_id, envs, history[-1].seq if history else 0, after=history[-1] if history else None)
    return envs


def recorded(payload, case_id: str = "RT-AAAAAAAAAA", seq: int = 1, producer: str = "test", at=None):
    """A Recorded event for pure unit tests of domains (no server)."""
    import uuid as _uuid
    from datetime import UTC, datetime

    from rethink.shared.envelope import Origin, Recorded, digest, stamp

    when = at or datetime.now(UTC)
    env = stamp(payload, case_id, Origin(producer, "test", _uuid.uuid4()), when, when, _uuid.uuid4())
    return Recorded(envelope=env, seq=seq, payload=payload, digest=digest(env.to_bytes()))


class Refusals:
    """The server's permission and authorization errors, which nats-py reports asynchronously."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def record(self, exc: Exception) -> None:
        self.seen.append(str(exc).lower())  # nats-py lower-cases the subject it names

    def about(self, text: str) -> bool:
        return any(text.lower() in e for e in self.seen)

    def violation(self, subject_part: str) -> bool:
        return any("permissions violation" in e and subject_part.lower() in e for e in self.seen)


class CuttableProxy:
    """A TCP proxy that can be cut: every connection dropped, new ones refused, until restarted.

    It runs on threads, so it never waits on the event loop of the code it is breaking."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self.listener: socket.socket | None = None
        self.conns: list[socket.socket] = []

    def start(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return  # cut
            self.conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self.listener is not None:
            with contextlib.suppress(OSError):  # wakes the thread blocked in accept(); close alone would not
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()
            self.listener = None
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self.conns.clear()

