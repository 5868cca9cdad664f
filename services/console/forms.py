"""Reading the facilitator's forms: GOV.UK date inputs, times in London, and the services' refusals.

Pure: a form (any mapping of strings) in, values or ``{field: message}`` errors out.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

LONDON = ZoneInfo("Europe/London")
MAX_TEXT = 4000
MAX_SHORT = 200
# An address the services refuse as one the mail cannot carry (``events.NOT_ASCII_LOCAL_PART``), in plain words.
UNSENDABLE_EMAIL = ("Email cannot be sent to an address with accented or non-Latin letters before the @; "
                    "enter another work email address")


def text(form: Mapping[str, Any], name: str) -> str:
    return str(form.get(name, "") or "").strip()


def required(form: Mapping[str, Any], name: str, what: str, errors: dict[str, str], limit: int = MAX_TEXT) -> str:
    value = text(form, name)
    if not value:
        errors[name] = f"Enter {what}"
    elif len(value) > limit:
        errors[name] = f"{what[0].upper()}{what[1:]} must be {limit:,} characters or fewer"
    return value


def date_parts(form: Mapping[str, Any], name: str) -> dict[str, str]:
    """What was typed in a GOV.UK date input (``name-day``, ``name-month``, ``name-year``), kept as typed."""
    return {part: text(form, f"{name}-{part}") for part in ("day", "month", "year")}


def parse_date(parts: Mapping[str, str], what: str, errors: dict[str, str], name: str,
               optional: bool = False) -> date | None:
    if not any(parts.values()):
        if not optional:
            errors[name] = f"Enter {what}"
        return None
    missing = [p for p in ("day", "month", "year") if not parts.get(p)]
    if missing:
        errors[name] = f"{what[0].upper()}{what[1:]} must include a {' and '.join(missing)}"
        return None
    try:
        year = int(parts["year"])
        if year < 1000:
            raise ValueError
        return date(year, int(parts["month"]), int(parts["day"]))
    except ValueError:
        errors[name] = f"{what[0].upper()}{what[1:]} must be a real date"
        return None


def parse_time(value: str, what: str, errors: dict[str, str], name: str) -> time | None:
    """24-hour ``HH:MM`` (``9:30`` and ``09.30`` too), the way people type times on GOV.UK forms."""
    cleaned = value.strip().replace(".", ":")
    if not cleaned:
        errors[name] = f"Enter {what}"
        return None
    try:
        hours, minutes = cleaned.split(":")
        return time(int(hours), int(minutes))
    except ValueError:
        errors[name] = f"{what[0].upper()}{what[1:]} must be a time in 24-hour format, like 14:30"
        return None


def london(day: date, at: time) -> datetime:
    """Meetings are arranged in local time: the offset (GMT or BST) comes from the date."""
    return datetime.combine(day, at, tzinfo=LONDON)


def command_id(form: Mapping[str, Any] | None) -> str:
    """The form's own id: sending it twice (a double click, a resend) makes one change, not two."""
    sent = text(form or {}, "command_id")
    try:
        return str(uuid.UUID(sent))
    except ValueError:
        return str(uuid.uuid4())


def refusals(reply: dict[str, Any], fields: Mapping[str, str]) -> dict[str, str]:
    """A service's reasons as page errors: a reason about a field on the page is shown at that field.

    ``fields`` maps the command's field names to the page's field ids. Other reasons (about the
    case as a whole) go in the summary, linked to the top of the form.
    """
    errors: dict[str, str] = {}
    for i, r in enumerate(reply.get("reasons", [])):
        field = str(r.get("field") or "")
        target = next((page for cmd, page in fields.items() if field == cmd or field.startswith(cmd + ".")), None)
        message = str(r.get("message", "refused"))
        if target and target not in errors:
            errors[target] = message
        else:
            errors[f"form-{i}"] = message
    if not errors:
        errors["form"] = f"The service refused this ({reply.get('status', 'rejected')})"
    if reply.get("guidance"):
        errors["form-guidance"] = str(reply["guidance"])
    return errors
