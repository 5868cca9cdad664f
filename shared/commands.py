"""Turning a pure decision into appended events, the same way for commands and reactions."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, Engine

from .clock import Clock
from .envelope import Envelope, Origin, Recorded, derived_id, stamp
from .errors import Code, NotFound, Reason
from .eventlog import EventLog, decide_and_append
from .events import Event

Actor = Field(default="unspecified", min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$",
              description="Who is acting (work email or role); recorded on the events.")


class Command(BaseModel):
    """Base of every command: unknown fields are refused, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    command_id: uuid.UUID | None = Field(default=None, description="Optional; re-sending the same id is safe.")
    actor: str = Actor


CaseId = Field(pattern=r"^RT-[A-Z2-7]{10}$", description="The case id Re-think gave the request.")


class CaseCommand(Command):
    case_id: str = CaseId


class CaseQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    case_id: str = CaseId


MAX_EVENTS_PER_DECISION = 64


def envelopes(
    payloads: Sequence[Event], case_id: str, origin: Origin, clock: Clock, seed: object | None
) -> list[Envelope]:
    if len(payloads) > MAX_EVENTS_PER_DECISION:
        raise ValueError("a single decision may write at most 64 events")
    now = clock.now()
    return [
        stamp(p, case_id, origin, occurred_at=now, recorded_at=now,
              event_id=derived_id(seed, i) if seed is not None else uuid.uuid4())
        for i, p in enumerate(payloads)
    ]


async def execute(
    log: EventLog,
    case_id: str,
    decide: Callable[[list[Recorded]], Sequence[Event]],
    origin: Origin,
    clock: Clock,
    seed: object | None,
    seen_seq: int | None = None,
) -> tuple[list[Envelope], bool]:
    """Decide against the case's fresh history and append. Returns (events, already_applied).

    With a seed (a command id, or the event being reacted to), a repeat finds its own
    events already in the log and writes nothing: re-sent commands and redelivered events
    are harmless, whatever the dedup window.
    """
    # A decision's events are appended in order, so if any of a seeded decision's events is in the
    # log its first one is: look for that one id, and derive the others only when it is there.
    first_id = derived_id(seed, 0) if seed is not None else None
    repeated: list[Envelope] = []

    def decide_envelopes(history: list[Recorded]) -> list[Envelope]:
        if first_id is not None and any(r.envelope.event_id == first_id for r in history):
            own_ids = {derived_id(seed, i) for i in range(MAX_EVENTS_PER_DECISION)}
            # As shown, not as stored: the reply reads their payloads, and personal fields are sealed.
            repeated[:] = [r.shown for r in history if r.envelope.event_id in own_ids]
        else:
            repeated.clear()
        if repeated:
            return []
        return envelopes(decide(history), case_id, origin, clock, seed)

    written = await decide_and_append(log, case_id, decide_envelopes, seen_seq=seen_seq)
    return (written, False) if written or not repeated else (repeated, True)


async def react(
    log: EventLog, service: str, cause: Recorded, decide: Callable[[list[Recorded]], Sequence[Event]], clock: Clock
) -> tuple[list[Envelope], bool]:
    """A service's reaction to an event: decided against the fresh case, stamped as caused by
    ``cause``, and seeded by it, so a redelivered cause never writes twice."""
    env = cause.envelope
    origin = Origin(service, f"service:{service}", env.correlation_id, env.event_id)
    # The service's consumer has delivered the case up to the cause: its cache can stand in for a read.
    return await execute(log, env.case_id, decide, origin, clock, f"{env.event_id}|{service}", seen_seq=cause.seq)


def case_query(engine: Engine, view: Callable[[Connection, str], dict[str, Any] | None]):
    """The ``case`` query every service answers from its own projection."""

    async def case(q: CaseQuery) -> dict[str, Any]:
        with engine.connect() as conn:
            result = view(conn, q.case_id)
        if result is None:
            raise case_not_found(q.case_id)
        return {"status": "ok", "result": result}

    return case


def case_not_found(case_id: str) -> NotFound:
    return NotFound(Reason("case_id", f"no case {case_id}", Code.CASE_NOT_FOUND))


def accepted(case_id: str, events: Sequence[Envelope], duplicate: bool = False, **extra: Any) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "status": "accepted",
        "case_id": case_id,
        "event_ids": [str(e.event_id) for e in events],
        "events": [e.type for e in events],
    }
    if duplicate:
        reply["duplicate"] = True
    reply.update(extra)
    return reply
