"""Escalation's composition root: the policy, the calendar, the log and the projection, wired."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

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
from rethink.shared.events import Event
from rethink.shared.messaging import Route
from rethink.shared.migrations import open_projection
from rethink.shared.runtime import ServiceParts
from rethink.shared.settings import Settings

from . import domain, projection
from .policy import load_policy
from .workdays import add_working_days, england_and_wales

NAME = "escalation"
# Deadlines are English working days, so "today" is the date in London, not in UTC.
LONDON = ZoneInfo("Europe/London")


class EscalationsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    open_only: bool = True
    due_within_working_days: int | None = Field(
        default=None, ge=0, le=365, description="Only those due within this many working days (overdue included).")
    limit: int = Field(default=100, ge=1, le=1000)


def _stage_extras(events: Sequence[Envelope]) -> dict[str, Any]:
    """The escalation's id, stage, holder and deadline, as the reply to a command carries them."""
    for env in events:
        if env.type in ("EscalationRaised", "EscalationStageAdvanced", "EscalationResolved"):
            keys = ("escalation_id", "stage", "stage_name", "holder", "deadline")
            return {k: env.data[k] for k in keys if k in env.data}
    return {}


def build(settings: Settings, log: EventLog, clock: Clock) -> ServiceParts:
    # A broken policy file stops the service at start, with the file and the problem named.
    rules = domain.Rules(policy=load_policy(settings.escalation_policy_file), holidays=england_and_wales())
    store = open_projection(settings, NAME)

    def today() -> date:
        return clock.now().astimezone(LONDON).date()

    async def run(cmd: Any, decide: Callable[[list[Recorded]], list[Event]]) -> dict[str, Any]:
        origin = Origin(producer=NAME, actor=cmd.actor, correlation_id=cmd.command_id or uuid.uuid4())
        events, repeat = await execute(log, cmd.case_id, decide, origin, clock, cmd.command_id)
        return accepted(cmd.case_id, events, duplicate=repeat, **_stage_extras(events))

    async def raise_(cmd: domain.RaiseEscalation) -> dict[str, Any]:
        # The id is fixed before deciding, so a retry after a conflict names the same escalation.
        escalation_id = domain.escalation_id_for(cmd.command_id or uuid.uuid4())
        day = today()
        return await run(cmd, lambda h: domain.decide_raise(h, cmd, rules, day, escalation_id))

    async def advance(cmd: domain.AdvanceEscalation) -> dict[str, Any]:
        day = today()
        return await run(cmd, lambda h: domain.decide_advance(h, cmd, rules, day))

    async def resolve(cmd: domain.ResolveEscalation) -> dict[str, Any]:
        return await run(cmd, lambda h: domain.decide_resolve(h, cmd))

    async def close(cmd: domain.CloseCase) -> dict[str, Any]:
        return await run(cmd, lambda h: domain.decide_close(h, cmd))

    async def on_event(r: Recorded) -> None:
        if r.type in domain.REACTS_TO:
            day = today()
            await react(log, NAME, r, lambda h: domain.react(h, r, rules, day), clock)
        store.apply(r)

    async def escalations(q: EscalationsQuery) -> dict[str, Any]:
        due_by = None
        if q.due_within_working_days is not None:
            due_by = add_working_days(today(), q.due_within_working_days, rules.holidays)
        with store.engine.connect() as conn:
            return {"status": "ok", "result": projection.list_view(conn, q.open_only, due_by, q.limit)}

    return ServiceParts(
        name=NAME,
        db_ping=store.ping,
        commands={
            "raise": Route(domain.RaiseEscalation, raise_, "Raise an escalation (stage 1 of the policy)"),
            "advance": Route(domain.AdvanceEscalation, advance, "Move the open escalation to the next stage"),
            "resolve": Route(domain.ResolveEscalation, resolve, "Record that the escalation is resolved"),
            "close": Route(domain.CloseCase, close,
                           "Close a partly resolved case once its actions are done and the network agrees"),
        },
        queries={
            "case": Route(CaseQuery, case_query(store.engine, projection.case_view),
                          "A case's escalation and whether it is closed"),
            "escalations": Route(EscalationsQuery, escalations, "Escalations, soonest deadline first"),
        },
        on_event=on_event,
    )
