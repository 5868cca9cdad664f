"""Intake's composition root: wires the domain to the log and its projection."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rethink.shared.clock import Clock
from rethink.shared.commands import (
    CaseQuery,
    accepted,
    case_not_found,
    case_query,
    execute,
    react,
)
from rethink.shared.envelope import Origin, Recorded, new_case_id
from rethink.shared.eventlog import EventLog
from rethink.shared.messaging import Route
from rethink.shared.migrations import open_projection
from rethink.shared.runtime import ServiceParts
from rethink.shared.settings import Settings

from . import domain, projection

NAME = "intake"
# What an agency may send (published as docs/schemas and docs/asyncapi.yaml by rethink.shared.contract).
AGENCY_COMMANDS: dict[str, tuple[type[BaseModel], str]] = {
    "submit": (domain.SubmitRequest, "Request a Re-think."),
    "confirm_checks": (domain.ConfirmChecks, "Confirm the three checks of a request that was missing some."),
}


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: str | None = Field(default=None, pattern=r"^(awaiting_checks|checks_confirmed)$")
    agency: str | None = Field(default=None, min_length=1, max_length=120,
                               description="Only this agency's requests (the console's practitioner view).")
    limit: int = Field(default=100, ge=1, le=1000)


def build(settings: Settings, log: EventLog, clock: Clock) -> ServiceParts:
    store = open_projection(settings, NAME)

    def origin(agency: str, actor: str, cmd: Any) -> Origin:
        correlation = cmd.command_id or uuid.uuid4()
        return Origin(producer=agency, actor=actor, correlation_id=correlation)

    async def submit(req: domain.SubmitRequest, agency: str = "cli") -> dict[str, Any]:
        domain.check_claimed_agency(req.agency, agency)
        seed = f"{agency}|{req.request_id}" if req.request_id else (req.command_id or None)
        # A repeat must land on the same case: derive the id from whatever makes it a repeat.
        if req.request_id:
            case_id = new_case_id(f"request|{agency}|{req.request_id}")
        elif req.command_id:
            case_id = new_case_id(f"command|{agency}|{req.command_id}")
        else:
            case_id = new_case_id()
        actor = req.actor if req.actor != "unspecified" else str(req.requester.email)
        events, repeat = await execute(
            log, case_id, lambda h: domain.decide_submission(h, req, agency),
            origin(agency, actor, req), clock, seed,
        )
        missing = req.checks.missing()
        return accepted(
            case_id, events, duplicate=repeat or not events,
            checks="complete" if not missing else "incomplete",
            missing_checks=missing,
            next_steps=("The partnership will assign a facilitator and arrange the meeting."
                        if not missing else domain.guidance_for(missing)),
        )

    async def confirm_checks(cmd: domain.ConfirmChecks, agency: str = "cli") -> dict[str, Any]:
        domain.check_claimed_agency(cmd.agency, agency)
        def decide(history: list[Recorded]):
            if not history:
                raise case_not_found(cmd.case_id)
            return domain.decide_confirmation(history, cmd, agency)

        events, repeat = await execute(log, cmd.case_id, decide, origin(agency, cmd.actor, cmd), clock,
                                       cmd.command_id)
        return accepted(cmd.case_id, events, duplicate=repeat or not events, checks="complete")

    async def on_event(r: Recorded) -> None:
        if r.type == "RequestSubmitted":
            await react(log, NAME, r, lambda h: domain.react(h, r), clock)
        store.apply(r)

    async def requests(q: ListQuery) -> dict[str, Any]:
        with store.engine.connect() as conn:
            return {"status": "ok", "result": projection.list_view(conn, q.status, q.limit, q.agency)}

    handlers = {"submit": submit, "confirm_checks": confirm_checks}
    return ServiceParts(
        name=NAME,
        db_ping=store.ping,
        commands={name: Route(model, handlers[name], summary) for name, (model, summary) in AGENCY_COMMANDS.items()},
        queries={
            "case": Route(CaseQuery, case_query(store.engine, projection.case_view)),
            "requests": Route(ListQuery, requests),
        },
        on_event=on_event,
        intake_subject=True,
    )
