"""Errors a decision can raise. Pure Python: domains import this and nothing else of ours.

Every reason carries a stable machine ``code`` beside its plain-words ``message``: agencies'
systems branch on the code (it never changes meaning), people read the message (which may
be reworded). docs/agencies.md has the table; a test proves each code is produced.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Code(StrEnum):
    PAYLOAD_TOO_LARGE = "payload_too_large"
    NOT_UTF8 = "not_utf8"
    MALFORMED_JSON = "malformed_json"
    NESTING_TOO_DEEP = "nesting_too_deep"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_COMMAND = "unknown_command"
    FIELD_MISSING = "field_missing"
    FIELD_UNKNOWN = "field_unknown"
    FIELD_WRONG_TYPE = "field_wrong_type"
    FIELD_INVALID = "field_invalid"
    AGENCY_MISMATCH = "agency_mismatch"
    IMMEDIATE_RISK = "immediate_risk"
    CHECKS_INCOMPLETE = "checks_incomplete"
    CASE_NOT_FOUND = "case_not_found"
    NOT_REQUESTING_AGENCY = "not_requesting_agency"
    REQUEST_ID_CONFLICT = "request_id_conflict"
    NOT_ALLOWED = "not_allowed"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    INTERNAL_ERROR = "internal_error"


# What each code means, in the words an agency developer reads (rendered into docs/agencies.md).
MEANINGS: dict[Code, str] = {
    Code.PAYLOAD_TOO_LARGE: "The message is larger than Re-think accepts (`RETHINK_MAX_MESSAGE_BYTES`).",
    Code.NOT_UTF8: "The message body is not UTF-8 text.",
    Code.MALFORMED_JSON: "The body is not valid JSON; the message says where parsing stopped.",
    Code.NESTING_TOO_DEEP: "The JSON is nested deeper than any valid message could be.",
    Code.NOT_AN_OBJECT: "The body is JSON but not a JSON object (for example a list or a string).",
    Code.UNKNOWN_COMMAND: "The last token of the subject is not a command Re-think knows; the message lists them.",
    Code.FIELD_MISSING: "A required field is absent; `field` names it.",
    Code.FIELD_UNKNOWN: "A field the schema does not have (often a typo); unknown fields are never ignored.",
    Code.FIELD_WRONG_TYPE: "A field has the wrong JSON type (for example a string where a list belongs).",
    Code.FIELD_INVALID: "A field has the right type but a value the schema refuses (pattern, length, email, enum, "
                        "or a rule across fields such as inviting someone besides the requester).",
    Code.AGENCY_MISMATCH: "The payload's `agency` is not the agency of the subject (your user). Re-think always "
                          "takes the agency from the subject; a message claiming another is refused.",
    Code.IMMEDIATE_RISK: "`immediate_risk` is true: make a safeguarding referral now; `guidance` says how.",
    Code.CHECKS_INCOMPLETE: "Confirming checks while one is still answered no; `guidance` says what to do first.",
    Code.CASE_NOT_FOUND: "No case has that `case_id` (status `not_found`).",
    Code.NOT_REQUESTING_AGENCY: "Only the agency that made the request can confirm its checks.",
    Code.REQUEST_ID_CONFLICT: "The `request_id` already names a different case; use a new `request_id`.",
    Code.UNAVAILABLE: "Re-think's event log or database did not answer for a moment (status `unavailable`, a "
                      "restart or failover); nothing was written twice. Re-send with the same `request_id` or "
                      "`command_id`.",
    Code.INTERNAL_ERROR: "Re-think failed while handling the message (status `error`); nothing was written. "
                         "Re-send it: with the same `request_id` or `command_id` that is safe.",
}
# Facilitators' commands refuse what their case's state forbids; agencies never see this one.
MEANINGS_INTERNAL: dict[Code, str] = {
    Code.NOT_ALLOWED: "The case's state does not allow the command (facilitators' commands).",
    Code.NOT_FOUND: "No such parked event (operators' dead-letter commands).",
}


@dataclass(frozen=True)
class Reason:
    field: str
    message: str
    code: str = Code.NOT_ALLOWED

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "code": str(self.code), "message": self.message}


class Rejected(Exception):
    """A command that cannot be carried out; nothing is written. ``reasons`` say why, per field."""

    def __init__(self, *reasons: Reason | str, guidance: str | None = None) -> None:
        self.reasons = [r if isinstance(r, Reason) else Reason("", r) for r in reasons]
        self.guidance = guidance
        super().__init__("; ".join(f"{r.field}: {r.message}" if r.field else r.message for r in self.reasons))


def rejected(field: str, message: str, guidance: str | None = None, code: str = Code.NOT_ALLOWED) -> Rejected:
    return Rejected(Reason(field, message, code), guidance=guidance)


class NotFound(Rejected):
    pass
