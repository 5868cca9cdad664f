"""Recording a held meeting, one stage per page: the pages, their fields and the command they build.

Pure: the draft is a dict kept on the server (``Drafts``); each parser reads one page's form
into it and returns ``{field: message}`` for what is wrong, keeping what was typed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from email_validator import EmailNotValidError, validate_email

from rethink.shared.events import deliverable

from . import forms

OUTCOMES = {
    "resolved": "Resolved: the network agreed a way forward",
    "partly_resolved": "Partly resolved: some things were agreed, others were not",
    "unresolved": "Unresolved: the disagreement continues (this raises an escalation)",
}


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    kind: str = "text"  # text | textarea | email | date
    optional: bool = False
    limit: int = forms.MAX_SHORT
    what: str = ""  # for "Enter ...": the label, lower-cased, unless it reads badly

    @property
    def missing(self) -> str:
        return f"Enter {self.what or self.label[0].lower() + self.label[1:]}"


@dataclass(frozen=True)
class Collection:
    """An "add another" page: people or actions added one at a time, each with a plain POST."""

    slug: str
    key: str  # in the draft and in the command
    title: str
    singular: str
    fields: tuple[Field, ...]
    at_least_one: bool
    hint: str


@dataclass(frozen=True)
class Stage:
    slug: str
    key: str
    number: int
    title: str
    hint: str


ATTENDEES = Collection(
    "attendees", "attendees", "Who attended the meeting?", "attendee",
    (Field("name", "Full name"), Field("agency", "Agency"), Field("role", "Role", optional=True)),
    True, "Add everyone who took part, one person at a time.")
PERSPECTIVES = Collection(
    "perspectives", "perspectives", "Stage 2: each professional's perspective", "perspective",
    (Field("professional", "Professional's name"), Field("agency", "Agency"),
     Field("feelings", "How do they feel about the situation?", "textarea", limit=forms.MAX_TEXT,
           what="how they feel about the situation"),
     Field("needs", "What do they need?", "textarea", limit=forms.MAX_TEXT, what="what they need")),
    True, "Record each professional's feelings and needs, one at a time.")
ACTIONS = Collection(
    "actions", "actions", "What actions were agreed?", "action",
    (Field("description", "What will be done", "textarea", limit=forms.MAX_TEXT, what="what will be done"),
     Field("owner_name", "Owner's full name"), Field("owner_agency", "Owner's agency"),
     Field("owner_email", "Owner's work email address", "email"), Field("due_date", "Due date", "date")),
    False, "Each action has one owner and a due date. Leave this empty if no action was agreed.")
COLLECTIONS = {c.slug: c for c in (ATTENDEES, PERSPECTIVES, ACTIONS)}

STAGES = {s.slug: s for s in (
    Stage("strengths", "strengths", 1, "Stage 1: what is working well?",
          "The strengths the network sees around the child and family."),
    Stage("impact", "impact", 3, "Stage 3: what is the impact on the child?",
          "How the disagreement or drift affects the child."),
    Stage("ways-forward", "ways_forward", 4, "Stage 4: what are the ways forward?",
          "The options the network discussed and what it agreed."),
    Stage("learning", "learning", 5, "Stage 5: what has been learned?",
          "Learning for the agencies and the partnership. It feeds the partnership's learning themes."),
)}

SEQUENCE = ("held", "attendees", "strengths", "perspectives", "impact", "ways-forward", "learning", "outcome",
            "actions", "check")
TITLES = {"held": "When was the meeting held?", "outcome": "What was the outcome?",
          "check": "Check the meeting record before you send it",
          **{c.slug: c.title for c in COLLECTIONS.values()}, **{s.slug: s.title for s in STAGES.values()}}


def next_page(slug: str) -> str:
    return SEQUENCE[SEQUENCE.index(slug) + 1]


def previous_page(slug: str) -> str | None:
    i = SEQUENCE.index(slug)
    return SEQUENCE[i - 1] if i else None


def parse_held(form: Mapping[str, Any], draft: dict[str, Any]) -> dict[str, str]:
    errors: dict[str, str] = {}
    draft["held_date"] = forms.date_parts(form, "held_date")
    draft["held_time"] = forms.text(form, "held_time")
    day = forms.parse_date(draft["held_date"], "the date of the meeting", errors, "held_date")
    at = forms.parse_time(draft["held_time"], "the time the meeting started", errors, "held_time")
    if day and at:
        draft["held_at"] = forms.london(day, at).isoformat()
    return errors


def parse_stage(stage: Stage, form: Mapping[str, Any], draft: dict[str, Any]) -> dict[str, str]:
    errors: dict[str, str] = {}
    draft[stage.key] = forms.required(form, stage.key, "what was said at this stage", errors)
    return errors


def parse_outcome(form: Mapping[str, Any], draft: dict[str, Any]) -> dict[str, str]:
    draft["outcome"] = forms.text(form, "outcome")
    return {} if draft["outcome"] in OUTCOMES else {"outcome": "Select the outcome of the meeting"}


def add_item(c: Collection, form: Mapping[str, Any], draft: dict[str, Any], held_on: date | None) -> dict[str, str]:
    """Add the person or action typed on the page; what was typed stays on the page if it is wrong."""
    errors: dict[str, str] = {}
    item: dict[str, Any] = {}
    for f in c.fields:
        if f.kind == "date":
            item[f.name] = forms.date_parts(form, f.name)
            day = forms.parse_date(item[f.name], f.label.lower(), errors, f.name)
            if day and held_on and day < held_on:
                errors[f.name] = f"{f.label} must be on or after the day of the meeting ({held_on:%-d %B %Y})"
            continue
        value = item[f.name] = forms.text(form, f.name)
        if not value and not f.optional:
            errors[f.name] = f.missing
        elif len(value) > f.limit:
            errors[f.name] = f"{f.label} must be {f.limit:,} characters or fewer"
        elif value and f.kind == "email":
            try:
                item[f.name] = validate_email(value, check_deliverability=False).normalized
            except EmailNotValidError:
                errors[f.name] = "Enter an email address in the correct format, like name@example.org"
            else:
                if not deliverable(item[f.name]):  # as the meeting service would refuse it
                    errors[f.name] = forms.UNSENDABLE_EMAIL
    if errors:
        draft[f"pending_{c.key}"] = item
        return errors
    draft.pop(f"pending_{c.key}", None)
    draft.setdefault(c.key, []).append(item)
    return {}


def typed_something(c: Collection, form: Mapping[str, Any]) -> bool:
    return any(forms.text(form, k) for f in c.fields
               for k in ([f"{f.name}-day", f"{f.name}-month", f"{f.name}-year"] if f.kind == "date" else [f.name]))


def collection_complete(c: Collection, draft: dict[str, Any]) -> dict[str, str]:
    if c.at_least_one and not draft.get(c.key):
        return {c.fields[0].name: f"Add at least one {c.singular}"}
    return {}


def held_on(draft: dict[str, Any]) -> date | None:
    return date.fromisoformat(draft["held_at"][:10]) if draft.get("held_at") else None


def first_unanswered(draft: dict[str, Any]) -> str | None:
    if not draft.get("held_at"):
        return "held"
    if not draft.get("attendees"):
        return "attendees"
    for slug in ("strengths", "perspectives", "impact", "ways-forward", "learning", "outcome"):
        key = STAGES[slug].key if slug in STAGES else slug
        if not draft.get(key):
            return slug
    return None


def _due(parts: Mapping[str, str]) -> str:
    return date(int(parts["year"]), int(parts["month"]), int(parts["day"])).isoformat()


def payload(draft: dict[str, Any], case_id: str, actor: str, command_id: str) -> dict[str, Any]:
    return {
        "case_id": case_id, "actor": actor, "command_id": command_id, "held_at": draft["held_at"],
        "attendees": [{k: v for k, v in a.items() if v} for a in draft["attendees"]],
        "stages": {"strengths": draft["strengths"], "perspectives": draft["perspectives"],
                   "impact": draft["impact"], "ways_forward": draft["ways_forward"], "learning": draft["learning"]},
        "outcome": draft["outcome"],
        "actions": [{"description": a["description"], "due_date": _due(a["due_date"]),
                     "owner": {"name": a["owner_name"], "agency": a["owner_agency"], "email": a["owner_email"]}}
                    for a in draft.get("actions", [])],
    }


# The command's fields, and the page that changes each (for the service's refusals).
FIELD_PAGES = {"held_at": "held", "attendees": "attendees", "stages.strengths": "strengths",
               "stages.perspectives": "perspectives", "stages.impact": "impact",
               "stages.ways_forward": "ways-forward", "stages.learning": "learning", "outcome": "outcome",
               "actions": "actions"}


def page_for_field(field: str) -> str | None:
    return next((page for name, page in FIELD_PAGES.items() if field == name or field.startswith(name + ".")), None)
