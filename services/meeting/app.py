"""Meeting's composition root: wires the domain to the log, its projection and the overdue check."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from rethink.shared.clock import Clock
from rethink.shared.commands import (
    CaseQuery,
    accepted,
    case_query,
    execute,
    react,
)
from rethink.shared.envelope import Envelope, Origin, Recorded
from rethink.shared.eventlog import EventLog
from rethink.shared.events import MeetingHeld
from rethink.shared.logs import get_logger
from rethink.shared.messaging import Route
from rethink.shared.migrations import open_projection
from rethink.shared.runtime import ServiceParts
from rethink.shared.settings import Settings

from . import domain, projection

NAME = "meeting"
SERVICE_ACTOR = f"service:{NAME}"
logger = get_logger("rethink.meeting")


class ActionsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    overdue_only: bool = Field(default=False, description="Only open actions already reported overdue.")
    owner_email: EmailStr | None = None
    open_cases_only: bool = Field(default=False, description="Leave out the actions of closed cases.")
    limit: int = Field(default=200, ge=1, le=1000)


def build(settings: Settings, log: EventLog, clock: Clock) -> ServiceParts:
    store = open_projection(settings, NAME)

    def today() -> date:
        return clock.now().date()

    def origin(cmd: Any) -> Origin:
        return Origin(producer=NAME, actor=cmd.actor, correlation_id=cmd.command_id or uuid.uuid4())

    async def record(cmd: domain.RecordMeeting) -> dict[str, Any]:
        now = clock.now()
        events, repeat = await execute(log, cmd.case_id, lambda h: domain.decide_record(h, cmd, now),
                                       origin(cmd), clock, cmd.command_id)
        held = next(e.payload() for e in events if e.type == MeetingHeld.type)
        return accepted(cmd.case_id, events, duplicate=repeat, meeting_id=held.meeting_id,
                        action_ids=[a.action_id for a in held.actions])

    async def complete_action(cmd: domain.CompleteAction) -> dict[str, Any]:
        day = today()
        events, repeat = await execute(log, cmd.case_id, lambda h: domain.decide_complete(h, cmd, day),
                                       origin(cmd), clock, cmd.command_id)
        return accepted(cmd.case_id, events, duplicate=repeat, action_id=cmd.action_id)

    async def report_overdue(as_of: date, how: Origin) -> dict[str, Any]:
        """Report each open, past-due action once: the seed makes repeats and races write nothing."""
        with store.engine.connect() as conn:
            due = projection.overdue_candidates(conn, as_of)
        reported: list[dict[str, Any]] = []
        written: list[Envelope] = []
        failed: list[dict[str, str]] = []
        for case_id, action_id, due_date in due:
            try:
                events, repeat = await execute(
                    log, case_id, lambda h, a=action_id: domain.decide_overdue(h, a, as_of),
                    how, clock, f"overdue|{case_id}|{action_id}",
                )
            except Exception:  # one troubled case must not hide every other overdue action
                logger.exception("overdue_check_failed", case_id=case_id, action_id=action_id)
                failed.append({"case_id": case_id, "action_id": action_id})
                continue
            if events and not repeat:
                written += events
                reported.append({"case_id": case_id, "action_id": action_id, "due_date": due_date.isoformat()})
        reply: dict[str, Any] = {"status": "accepted", "as_of": as_of.isoformat(), "overdue": reported,
                                 "event_ids": [str(e.event_id) for e in written]}
        if failed:
            reply["failed"] = failed
        return reply

    async def check_overdue(cmd: domain.CheckOverdue) -> dict[str, Any]:
        return await report_overdue(cmd.as_of or today(), origin(cmd))

    async def periodic_check() -> dict[str, Any]:
        return await report_overdue(today(), Origin(NAME, SERVICE_ACTOR, uuid.uuid4()))

    async def on_event(r: Recorded) -> None:
        if isinstance(r.payload, MeetingHeld):
            await react(log, NAME, r, lambda h: domain.react(h, r), clock)
        store.apply(r)

    async def list_actions(q: ActionsQuery) -> dict[str, Any]:
        with store.engine.connect() as conn:
            rows = projection.list_view(conn, q.overdue_only, str(q.owner_email) if q.owner_email else None, q.limit,
                                        q.open_cases_only)
        return {"status": "ok", "result": rows}

    return ServiceParts(
        name=NAME,
        db_ping=store.ping,
        commands={
            "record": Route(domain.RecordMeeting, record, "Record a held meeting, its five stages and actions"),
            "complete_action": Route(domain.CompleteAction, complete_action, "Mark an action completed"),
            "check_overdue": Route(domain.CheckOverdue, check_overdue, "Report open actions past their due date"),
        },
        queries={
            "case": Route(CaseQuery, case_query(store.engine, projection.case_view)),
            "actions": Route(ActionsQuery, list_actions),
        },
        on_event=on_event,
        periodic=[(settings.overdue_check_interval_seconds, periodic_check)],
    )
