"""The practitioner's request, one question per page: what each page asks, how its answer is checked.

Pure: a page's form in, changes to the draft or errors out. The draft is a plain dict kept
on the server (see drafts.py); ``payload`` turns a finished draft into intake's submit command.
Answers are checked with the same rules intake applies (the shared event types), so a
practitioner meets a problem on the page that caused it, not after "Submit".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from rethink.shared.events import NOT_ASCII_LOCAL_PART, CaseReference, Person

from .forms import UNSENDABLE_EMAIL
from .users import PARTNERSHIP_AGENCIES, User

Form = Mapping[str, Any]
Errors = dict[str, str]  # field id -> message, in page order

URGENT_GUIDANCE = (
    "If a child is at risk of significant harm now, make a safeguarding referral to children's social "
    "care straight away, or call 999 if they are in immediate danger. A Re-think is for professional "
    "disagreement and stuck plans, and cannot wait on a child in danger."
)


@dataclass(frozen=True)
class Check:
    key: str  # the field of intake's ``checks``
    slug: str
    question: str
    hint: str
    guidance: str  # shown when the answer is no


CHECKS = (
    Check("raised_with_network", "check-network",
          "Have you raised your concerns with the professional network?",
          "The other professionals working with the child and family.",
          "Raise your concerns with the professional network first."),
    Check("conversation_had", "check-conversation",
          "Have you had a conversation with those involved about the disagreement or stuckness?", "",
          "Have a conversation with those involved about the stuckness or disagreement."),
    Check("hips_policy_considered", "check-hips",
          "Have you considered the HIPS escalation policy?",
          "The HIPS Escalation Policy for the Resolution of Professional Disagreement.",
          "Consider the HIPS Escalation Policy for the Resolution of Professional Disagreement as a means "
          "to resolve what is happening."),
)
CHECK_BY_SLUG = {c.slug: c for c in CHECKS}
REASONS = {
    "disagreement": "Professional disagreement",
    "stuckness": "The plan is stuck",
    "both": "Both",
}
SEQUENCE = ("urgent-risk", *(c.slug for c in CHECKS), "case-reference", "agencies", "reason", "description",
            "invitees", "check-answers")
MAX_DESCRIPTION = 4000
CASE_ID = re.compile(r"^RT-[A-Z2-7]{10}$")
_case_reference = TypeAdapter(CaseReference)


def next_page(slug: str) -> str:
    return SEQUENCE[SEQUENCE.index(slug) + 1]


def _text(form: Form, name: str) -> str:
    return str(form.get(name, "")).strip()


def _yes_no(form: Form, name: str, errors: Errors, message: str) -> str | None:
    value = _text(form, name)
    if value not in ("yes", "no"):
        errors[name] = message
        return None
    return value


def urgent_risk(form: Form, draft: dict[str, Any]) -> Errors:
    errors: Errors = {}
    if (value := _yes_no(form, "immediate_risk", errors, "Select yes if a child is at risk of significant harm now")):
        draft["immediate_risk"] = value
    return errors


def check(slug: str) -> Callable[[Form, dict[str, Any]], Errors]:
    c = CHECK_BY_SLUG[slug]

    def parse(form: Form, draft: dict[str, Any]) -> Errors:
        errors: Errors = {}
        answer = _yes_no(form, "answer", errors, f"Select yes or no: {c.question[0].lower()}{c.question[1:-1]}")
        note = _text(form, "note")
        if len(note) > 2000:
            errors["note"] = "Your note must be 2,000 characters or fewer"
        if not errors:
            draft.setdefault("checks", {})[c.key] = {"answer": answer, "note": note}
        return errors

    return parse


def case_reference(form: Form, draft: dict[str, Any]) -> Errors:
    value = _text(form, "case_reference")
    draft["case_reference"] = value  # kept even when wrong, so the page shows what was typed
    if not value:
        return {"case_reference": "Enter your agency's case reference for the child"}
    try:
        _case_reference.validate_python(value)
    except ValidationError:
        return {"case_reference": "The case reference must start with a letter or digit and use only letters, "
                                  "digits and / _ . : - (64 characters at most); do not use the child's name"}
    return {}


def agencies(form: Form, draft: dict[str, Any]) -> Errors:
    chosen = [a for a in form.getlist("agencies") if a in PARTNERSHIP_AGENCIES] if hasattr(form, "getlist") else []
    other = _text(form, "other_agencies")
    extra = [line.strip() for line in other.replace(",", "\n").splitlines() if line.strip()]
    draft["agencies"], draft["other_agencies"] = chosen, other
    if not chosen and not extra:
        return {"agencies": "Select the agencies involved, or enter them under other agencies"}
    if any(len(a) > 120 for a in extra):
        return {"other_agencies": "Each agency's name must be 120 characters or fewer"}
    return {}


def reason(form: Form, draft: dict[str, Any]) -> Errors:
    value = _text(form, "reason")
    if value not in REASONS:
        return {"reason": "Select why you are requesting a Re-think"}
    draft["reason"] = value
    return {}


def description(form: Form, draft: dict[str, Any]) -> Errors:
    value = _text(form, "description").replace("\r\n", "\n")
    draft["description"] = value
    if not value:
        return {"description": "Describe the disagreement or what is stuck"}
    if len(value) > MAX_DESCRIPTION:
        return {"description": f"The description must be {MAX_DESCRIPTION:,} characters or fewer"}
    return {}


def add_invitee(form: Form, draft: dict[str, Any], user: User) -> Errors:
    """One person to invite; the typed values are kept on the page when they are wrong."""
    person = {k: _text(form, k) for k in ("name", "agency", "email")}
    errors: Errors = {}
    for key, label in (("name", "their full name"), ("agency", "their agency"), ("email", "their work email address")):
        if not person[key]:
            errors[key] = f"Enter {label}"
    if not errors:
        try:
            person = Person.model_validate(person).model_dump(mode="json")
        except ValidationError as exc:
            for err in exc.errors(include_url=False, include_input=False):
                field = str(err["loc"][0])
                if field == "email" and NOT_ASCII_LOCAL_PART in err["msg"]:
                    errors.setdefault(field, UNSENDABLE_EMAIL)
                errors.setdefault(field, "Enter an email address in the correct format, like name@example.org"
                                  if field == "email" else f"Check {field}: {err['msg']}")
    if not errors:
        others = [p["email"].casefold() for p in draft.get("invitees", [])]
        if person["email"].casefold() == user.email.casefold():
            errors["email"] = "You are the requester; add the other people to invite"
        elif person["email"].casefold() in others:
            errors["email"] = "This person is already on the list"
    if errors:
        draft["pending_invitee"] = person
        return errors
    draft.pop("pending_invitee", None)
    draft.setdefault("invitees", []).append(person)
    return {}


def invitees_complete(draft: dict[str, Any]) -> Errors:
    if not draft.get("invitees"):
        return {"name": "Add at least one person to invite besides yourself"}
    return {}


PARSERS: dict[str, Callable[[Form, dict[str, Any]], Errors]] = {
    "urgent-risk": urgent_risk,
    **{c.slug: check(c.slug) for c in CHECKS},
    "case-reference": case_reference,
    "agencies": agencies,
    "reason": reason,
    "description": description,
}


def first_unanswered(draft: dict[str, Any]) -> str | None:
    """The first page still to answer; check-answers sends the practitioner back there."""
    if draft.get("immediate_risk") != "no":
        return "urgent-risk"
    for c in CHECKS:
        if c.key not in draft.get("checks", {}):
            return c.slug
    if case_reference({"case_reference": draft.get("case_reference", "")}, dict(draft)):
        return "case-reference"
    if not all_agencies(draft):
        return "agencies"
    if draft.get("reason") not in REASONS:
        return "reason"
    if not draft.get("description"):
        return "description"
    if not draft.get("invitees"):
        return "invitees"
    return None


def all_agencies(draft: dict[str, Any]) -> list[str]:
    other = draft.get("other_agencies", "")
    return [*draft.get("agencies", []),
            *(line.strip() for line in other.replace(",", "\n").splitlines() if line.strip())]


def payload(draft: dict[str, Any], user: User, command_id: str) -> dict[str, Any]:
    """Intake's submit command. The draft's id is the command id, so a double click makes one case."""
    checks = {}
    for c in CHECKS:
        answer = draft["checks"][c.key]
        checks[c.key] = {"answer": answer["answer"] == "yes", **({"note": answer["note"]} if answer["note"] else {})}
    return {
        "command_id": command_id,
        "actor": user.email,
        "immediate_risk": False,
        "case_reference": draft["case_reference"],
        "requester": {"name": user.name, "role": user.job_title, "agency": user.agency_name, "email": user.email},
        "agencies": all_agencies(draft),
        "reason": draft["reason"],
        "description": draft["description"],
        "invitees": draft["invitees"],
        "checks": checks,
    }


def page_for_field(field: str) -> str | None:
    """Which page fixes a field intake refused (its reasons name fields like ``invitees.0.email``)."""
    head = field.split(".", 1)[0]
    if head == "checks":
        key = field.split(".")[1] if "." in field else ""
        return next((c.slug for c in CHECKS if c.key == key), CHECKS[0].slug)
    return {"case_reference": "case-reference", "agencies": "agencies", "reason": "reason",
            "description": "description", "invitees": "invitees"}.get(head)
