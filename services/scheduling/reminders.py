"""Which reminders are due: a pure function of what is open, the time now and the timings.

Invitees are reminded before their meeting, action owners before (and on) the due date, and
the people on a case before its escalation stage's deadline, each a number of England-and-Wales
working days ahead. A reminder is due from its day until its deadline passes; if the service
was down on the day, it catches up with the one reminder nearest the deadline, not all of them.
Each reminder has a key from the item, its current date, the offset and the recipient, so it
is sent once, and a meeting moved or a stage advanced gets reminders of its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from rethink.shared.events import MeetingMode, Person
from rethink.shared.workdays import subtract_working_days

from .domain import unique_people

LONDON = ZoneInfo("Europe/London")


@dataclass(frozen=True)
class Timings:
    """Working days before each deadline at which reminders go out (0 = on the day)."""

    meeting: tuple[int, ...] = (1,)
    action: tuple[int, ...] = (3, 0)
    escalation: tuple[int, ...] = (1,)


@dataclass(frozen=True)
class MeetingItem:
    case_id: str
    case_reference: str
    meeting_id: str
    starts_at: datetime
    duration_minutes: int
    mode: MeetingMode
    venue: str | None
    invitees: tuple[Person, ...]
    facilitator_name: str
    facilitator_email: str


@dataclass(frozen=True)
class ActionItem:
    case_id: str
    case_reference: str
    action_id: str
    meeting_id: str
    owner: Person
    due_date: date
    facilitator_name: str
    facilitator_email: str


@dataclass(frozen=True)
class StageItem:
    """The current stage of an open escalation. ``recipients``: the people on the case.

    A stage's holder is a role in the policy ("Line managers of each practitioner"), not an
    address, so the reminder goes to the facilitator and the case's participants, naming the holder.
    """

    case_id: str
    case_reference: str
    escalation_id: str
    stage: int
    stage_name: str
    holder: str
    deadline: date
    recipients: tuple[Person, ...]


Item = MeetingItem | ActionItem | StageItem


@dataclass(frozen=True)
class Reminder:
    key: str
    kind: Literal["meeting", "action", "escalation"]
    recipient: Person
    item: Item
    working_days_before: int


def _key(kind: str, what: str, person: Person) -> str:
    """Short and free of personal data, as keys become file names and Message-IDs (which must not fold)."""
    identity = f"{what}|{str(person.email).casefold()}"
    return f"rem-{kind}-{hashlib.sha256(identity.encode()).hexdigest()[:24]}"


def _offset_due(deadline: date, offsets: Sequence[int], today: date, holidays: Container[date]) -> int | None:
    """The offset whose reminder is due today: the reached one nearest the deadline, if not yet past it."""
    if today > deadline:
        return None
    reached = [k for k in offsets if subtract_working_days(deadline, k, holidays) <= today]
    return min(reached) if reached else None


def due(items: Sequence[Item], now: datetime, timings: Timings, holidays: Container[date]) -> list[Reminder]:
    """Every reminder due at ``now`` (aware). Deadlines are London dates, as working days are English."""
    today = now.astimezone(LONDON).date()
    out: list[Reminder] = []
    for item in items:
        if isinstance(item, MeetingItem):
            if now >= item.starts_at:
                continue
            k = _offset_due(item.starts_at.astimezone(LONDON).date(), timings.meeting, today, holidays)
            if k is not None:
                what = f"{item.case_id}|{item.meeting_id}|{item.starts_at.isoformat()}|{k}"
                out += [Reminder(_key("meeting", what, p), "meeting", p, item, k) for p in unique_people(item.invitees)]
        elif isinstance(item, ActionItem):
            k = _offset_due(item.due_date, timings.action, today, holidays)
            if k is not None:
                what = f"{item.case_id}|{item.action_id}|{item.due_date.isoformat()}|{k}"
                out.append(Reminder(_key("action", what, item.owner), "action", item.owner, item, k))
        else:
            k = _offset_due(item.deadline, timings.escalation, today, holidays)
            if k is not None:
                what = f"{item.case_id}|{item.escalation_id}|{item.stage}|{item.deadline.isoformat()}|{k}"
                out += [Reminder(_key("escalation", what, p), "escalation", p, item, k)
                        for p in unique_people(item.recipients)]
    return out
