"""Intake's rules: what a valid Re-think request is, and when its three checks are complete.

Pure: no I/O, no clock. Decisions take the case's history and return events or raise
``Rejected``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from rethink.shared.commands import CaseCommand, Command
from rethink.shared.envelope import Recorded
from rethink.shared.errors import Code, Reason, Rejected, rejected
from rethink.shared.events import (
    Agency,
    CaseReference,
    Checks,
    ChecksConfirmed,
    Event,
    Person,
    PersonalText,
    Requester,
    RequestSubmitted,
)
from rethink.shared.events import (
    Reason as RequestReason,
)

URGENT_GUIDANCE = (
    "A child at risk of significant harm now needs an immediate safeguarding referral to "
    "children's social care (or 999 if in immediate danger), not a Re-think. Make the referral now."
)

CHECK_GUIDANCE = {
    "raised_with_network": "Raise your concerns with the professional network first.",
    "conversation_had": "Have a conversation with those involved about the stuckness or disagreement.",
    "hips_policy_considered": "Consider the HIPS Escalation Policy for the Resolution of Professional "
    "Disagreement as a means to resolve what is happening.",
}

LOWEST_LEVEL = ("Many concerns are resolved by the right conversation with the right person at the right "
                "time; the request is kept and completes when you confirm the checks.")


ClaimedAgency = Field(
    default=None, min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$",
    description="Optional. Your agency as your system knows it; if present it must be the agency of the subject "
                "(your NATS user). Re-think takes the agency from the subject, and refuses a message that claims "
                "another.",
)


SCHEMA_VERSION = 1
SchemaVersion = Field(default=SCHEMA_VERSION, description="The version of this message's schema you built against "
                                                          "(docs/schemas/); optional, defaults to the current one.")


class SubmitRequest(Command):
    """What an agency sends to request a Re-think."""

    schema_version: Literal[1] = SchemaVersion
    agency: str | None = ClaimedAgency
    request_id: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9._:-]{1,100}$",
        description="The agency's own id for this request; re-sending it returns the same case.",
    )
    immediate_risk: bool = Field(description="Is a child at risk of significant harm now?")
    case_reference: CaseReference
    requester: Requester
    agencies: list[Agency] = Field(min_length=1, max_length=30)
    reason: RequestReason
    description: PersonalText
    invitees: list[Person] = Field(min_length=1, max_length=50)
    checks: Checks

    @field_validator("agencies")
    @classmethod
    def _distinct_agencies(cls, v: list[str]) -> list[str]:
        seen: dict[str, str] = {}
        for a in v:
            seen.setdefault(a.casefold(), a)
        return list(seen.values())

    @model_validator(mode="after")
    def _someone_besides_requester(self) -> SubmitRequest:
        me = self.requester.email.casefold()
        if not any(p.email.casefold() != me for p in self.invitees):
            raise ValueError("invitees must include at least one person besides the requester")
        emails = [p.email.casefold() for p in self.invitees]
        if len(emails) != len(set(emails)):
            raise ValueError("each invitee must have a different email address")
        return self


class ConfirmChecks(CaseCommand):
    """What the requesting agency sends once the three checks are all answered yes."""

    schema_version: Literal[1] = SchemaVersion
    agency: str | None = ClaimedAgency
    checks: Checks


def check_claimed_agency(claimed: str | None, agency: str) -> None:
    """The subject names the agency (the server guarantees it); a payload may not claim another."""
    if claimed is not None and claimed != agency:
        raise rejected("agency", f"this message arrived on {agency}'s subject but claims agency {claimed[:64]!r}",
                       code=Code.AGENCY_MISMATCH)


def guidance_for(missing: list[str]) -> str:
    return " ".join([CHECK_GUIDANCE[m] for m in missing] + [LOWEST_LEVEL])


def decide_submission(history: list[Recorded], request: SubmitRequest, agency: str) -> list[Event]:
    if request.immediate_risk:
        raise Rejected(Reason("immediate_risk", "a child at immediate risk cannot wait for a Re-think",
                              Code.IMMEDIATE_RISK),
                       guidance=URGENT_GUIDANCE)
    if history:
        # Only reached when the case id came from request_id and the case exists already.
        first = history[0].payload
        if isinstance(first, RequestSubmitted) and history[0].envelope.producer == agency:
            return []
        raise rejected("request_id", "this request_id is already used for another request",
                       code=Code.REQUEST_ID_CONFLICT)
    return [
        RequestSubmitted(
            request_id=request.request_id,
            case_reference=request.case_reference,
            requester=request.requester,
            agencies=request.agencies,
            reason=request.reason,
            description=request.description,
            invitees=request.invitees,
            checks=request.checks,
        )
    ]


def react(history: list[Recorded], cause: Recorded) -> list[Event]:
    """A request that arrives with all three checks answered yes is confirmed at once."""
    if isinstance(cause.payload, RequestSubmitted) and not cause.payload.checks.missing():
        if not any(isinstance(r.payload, ChecksConfirmed) for r in history):
            return [ChecksConfirmed(checks=cause.payload.checks)]
    return []


def decide_confirmation(history: list[Recorded], command: ConfirmChecks, agency: str) -> list[Event]:
    request = next((r for r in history if isinstance(r.payload, RequestSubmitted)), None)
    if request is None:
        raise rejected("case_id", f"no request {command.case_id}", code=Code.CASE_NOT_FOUND)
    if request.envelope.producer != agency:
        raise rejected("case_id", "only the agency that made the request can confirm its checks",
                       code=Code.NOT_REQUESTING_AGENCY)
    if any(isinstance(r.payload, ChecksConfirmed) for r in history):
        return []
    missing = command.checks.missing()
    if missing:
        raise Rejected(*(Reason(f"checks.{m}", "must be answered yes before a Re-think", Code.CHECKS_INCOMPLETE) for m in missing),
                       guidance=guidance_for(missing))
    return [ChecksConfirmed(checks=command.checks)]
