"""Test helpers: waiting for a condition (never a bare sleep), talking to services."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

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
