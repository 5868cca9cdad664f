"""The event catalogue: every fact the services record, one small pydantic model each.

Fields that hold personal data (names, emails, free text) are marked ``personal`` in the
JSON schema so that a later step can encrypt or erase them without touching the rest.
A child is only ever identified by an agency's case reference.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo

PERSONAL = {"personal": True}

# Free text is bounded so one message can never exhaust a projection or the log, and control
# characters (other than line breaks and tabs in long text) are refused: they only ever come
# from broken or hostile producers and corrupt logs, terminals and emails downstream.
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
_NO_CONTROL_BUT_LINES = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000,
                                        pattern=_NO_CONTROL_BUT_LINES)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=_NO_CONTROL)]
PersonalText = Annotated[Text, Field(json_schema_extra=PERSONAL)]
PersonalName = Annotated[ShortText, Field(json_schema_extra=PERSONAL)]
FROM_LOG = {"from_log": True}  # validation context for events read back from the log
# What a personal field reads as once its case's key is destroyed (see rethink.shared.privacy).
ERASED = "[erased]"


# A local part in another script (``zoë@…``) is a valid address (RFC 6531), but mail to it needs
# SMTPUTF8 from end to end, which this system does not speak (the ``email`` package will not even
# write it in a To header). Domains in other scripts are fine: they travel as IDNA.
NOT_ASCII_LOCAL_PART = "the part before @ must be ASCII: internationalised local parts (SMTPUTF8) are not supported"


def deliverable(address: str) -> bool:
    """Whether this system can send mail to ``address``: its local part is ASCII."""
    return address.rpartition("@")[0].isascii()


def _work_email(value: str, info: ValidationInfo) -> str:
    """Full address validation for what people and agencies send; a cheap shape check for the log.

    Every address in the log passed full validation when it was written, and re-validating it
    on every read cost most of the time of decoding a request (see docs/performance.md). The log
    may hold addresses refused today (see ``deliverable``): they still decode, and are skipped
    when mailing, so one of them never stops an event.
    """
    if info.context and info.context.get("from_log"):
        if "@" not in value and value != ERASED:
            raise ValueError("not an email address")
        return value
    try:
        address = validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"value is not a valid email address: {exc}") from None
    if not deliverable(address):
        raise ValueError(f"value is not an email address this service can send to: {NOT_ASCII_LOCAL_PART}")
    return address


PersonalEmail = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=254),
    AfterValidator(_work_email),
    # The pattern says to schema validators what ``deliverable`` checks: an ASCII part before the @.
    Field(json_schema_extra={**PERSONAL, "format": "email", "pattern": "^[!-~]+@"}),
]
OptionalNote = Annotated[
    str | None,
    StringConstraints(strip_whitespace=True, max_length=2000, pattern=_NO_CONTROL_BUT_LINES),
    Field(json_schema_extra=PERSONAL),
]
Agency = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120, pattern=_NO_CONTROL)]
CaseReference = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9/_.:-]{0,63}$")]


class Reason(StrEnum):
    DISAGREEMENT = "disagreement"
    STUCKNESS = "stuckness"
    BOTH = "both"


class Outcome(StrEnum):
    RESOLVED = "resolved"
    PARTLY_RESOLVED = "partly_resolved"
    UNRESOLVED = "unresolved"


class MeetingMode(StrEnum):
    IN_PERSON = "in_person"
    VIRTUAL = "virtual"


class EscalationTrigger(StrEnum):
    MEETING_UNRESOLVED = "meeting_unresolved"
    ACTION_OVERDUE = "action_overdue"
    PROFESSIONAL = "professional"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Person(_Model):
    name: PersonalName
    agency: Agency
    email: PersonalEmail


class Requester(Person):
    role: ShortText


class CheckAnswer(_Model):
    answer: bool
    note: OptionalNote = None


class Checks(_Model):
    raised_with_network: CheckAnswer
    conversation_had: CheckAnswer
    hips_policy_considered: CheckAnswer

    def missing(self) -> list[str]:
        return [name for name, value in self if not value.answer]


class Perspective(_Model):
    professional: PersonalName
    agency: Agency
    feelings: PersonalText
    needs: PersonalText


class Stages(_Model):
    """The five stages of a Re-think meeting, in order."""

    strengths: PersonalText
    perspectives: list[Perspective] = Field(min_length=1, max_length=50)
    impact: PersonalText
    ways_forward: PersonalText
    learning: PersonalText


class Attendee(_Model):
    name: PersonalName
    agency: Agency
    role: ShortText | None = None


class ActionItem(_Model):
    action_id: str = Field(pattern=r"^[A-Za-z0-9-]{1,64}$")
    description: PersonalText
    owner: Person
    due_date: date


class Event(_Model):
    """Base of every event payload. ``type`` names it in subjects and envelopes."""

    type: ClassVar[str]
    schema_version: ClassVar[int] = 1


class RequestSubmitted(Event):
    type: ClassVar[str] = "RequestSubmitted"
    request_id: str | None = None
    case_reference: CaseReference
    requester: Requester
    agencies: list[Agency]
    reason: Reason
    description: PersonalText
    invitees: list[Person]
    checks: Checks


class ChecksConfirmed(Event):
    type: ClassVar[str] = "ChecksConfirmed"
    checks: Checks


class FacilitatorAssigned(Event):
    type: ClassVar[str] = "FacilitatorAssigned"
    facilitator_id: str
    facilitator_name: PersonalName
    facilitator_email: PersonalEmail


class MeetingScheduled(Event):
    type: ClassVar[str] = "MeetingScheduled"
    meeting_id: str
    facilitator_id: str
    starts_at: datetime
    duration_minutes: int
    mode: MeetingMode
    venue: PersonalText | None = None
    invitees: list[Person]


class MeetingRescheduled(Event):
    type: ClassVar[str] = "MeetingRescheduled"
    meeting_id: str
    starts_at: datetime
    duration_minutes: int
    mode: MeetingMode
    venue: PersonalText | None = None
    reason: OptionalNote = None


class MeetingCancelled(Event):
    type: ClassVar[str] = "MeetingCancelled"
    meeting_id: str
    reason: PersonalText


class MeetingHeld(Event):
    type: ClassVar[str] = "MeetingHeld"
    meeting_id: str
    held_at: datetime
    attendees: list[Attendee]
    stages: Stages
    outcome: Outcome
    actions: list[ActionItem]


class ActionRecorded(Event):
    type: ClassVar[str] = "ActionRecorded"
    action_id: str
    meeting_id: str
    description: PersonalText
    owner: Person
    due_date: date


class ActionCompleted(Event):
    type: ClassVar[str] = "ActionCompleted"
    action_id: str
    completed_on: date
    note: OptionalNote = None


class ActionOverdue(Event):
    type: ClassVar[str] = "ActionOverdue"
    action_id: str
    due_date: date
    as_of: date


class EscalationRaised(Event):
    type: ClassVar[str] = "EscalationRaised"
    escalation_id: str
    trigger: EscalationTrigger
    stage: int
    stage_name: str
    holder: str
    deadline: date
    reason: PersonalText


class EscalationStageAdvanced(Event):
    type: ClassVar[str] = "EscalationStageAdvanced"
    escalation_id: str
    from_stage: int
    stage: int
    stage_name: str
    holder: str
    deadline: date
    reason: PersonalText


class EscalationResolved(Event):
    type: ClassVar[str] = "EscalationResolved"
    escalation_id: str
    stage: int
    resolution: PersonalText


class CaseClosed(Event):
    type: ClassVar[str] = "CaseClosed"
    reason: Literal["resolved_at_meeting", "escalation_resolved", "agreed_by_network"]
    # Only for "agreed_by_network": what the network agreed after a partly resolved meeting.
    note: PersonalText | None = None


class PersonalDataErased(Event):
    """The case's data key was destroyed: its personal fields read as erased from now on.

    Who and when are the envelope's ``actor`` and ``recorded_at``; ``reason`` says why (it is
    not personal data: it names the rule, e.g. the retention policy, never a person).
    """

    type: ClassVar[str] = "PersonalDataErased"
    kid: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$",
                            description="The destroyed key's id; None when the case never had one.")
    reason: ShortText


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        RequestSubmitted,
        ChecksConfirmed,
        FacilitatorAssigned,
        MeetingScheduled,
        MeetingRescheduled,
        MeetingCancelled,
        MeetingHeld,
        ActionRecorded,
        ActionCompleted,
        ActionOverdue,
        EscalationRaised,
        EscalationStageAdvanced,
        EscalationResolved,
        CaseClosed,
        PersonalDataErased,
    )
}


def personal_fields(model: type[BaseModel]) -> list[str]:
    """Dotted paths of the fields marked personal, for the catalogue and later encryption."""
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    found: list[str] = []

    def walk(node: dict[str, Any], prefix: str) -> None:
        for name, prop in node.get("properties", {}).items():
            path = f"{prefix}{name}"
            if _is_personal(prop):
                found.append(path)
            for ref in _refs(prop):
                walk(defs[ref], path + ("[]." if prop.get("type") == "array" else "."))

    walk(schema, "")
    return found


def _is_personal(prop: dict[str, Any]) -> bool:
    if prop.get("personal"):
        return True
    return any(alt.get("personal") for alt in prop.get("anyOf", []))


def _refs(prop: dict[str, Any]) -> list[str]:
    nodes = [prop, prop.get("items", {}), *prop.get("anyOf", [])]
    return [n["$ref"].rsplit("/", 1)[-1] for n in nodes if isinstance(n, dict) and "$ref" in n]
