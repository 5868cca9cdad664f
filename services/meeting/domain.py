"""Meeting's rules: recording a held Re-think meeting, and following its actions until done.

Pure: no I/O, no clock. Decisions take the case's history (and ``now``/``today`` from the
caller) and return event payloads or raise ``Rejected``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import date, datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from rethink.shared.commands import CaseCommand, Command, case_not_found
from rethink.shared.envelope import Recorded
from rethink.shared.errors import Reason, Rejected, rejected
from rethink.shared.events import (
    ActionCompleted,
    ActionItem,
    ActionOverdue,
    ActionRecorded,
    Attendee,
    CaseClosed,
    Event,
    MeetingCancelled,
    MeetingHeld,
    MeetingScheduled,
    OptionalNote,
    Outcome,
    Person,
    PersonalText,
    Stages,
)

MAX_ACTIONS = 50
ACTION_ID_PATTERN = r"^[A-Za-z0-9-]{1,64}$"
SCHEDULE_FIRST = "no meeting is arranged for this case: schedule the meeting first"


class NewAction(BaseModel):
    """An action agreed at the meeting; the service gives it its id."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    description: PersonalText
    owner: Person
    due_date: date


class RecordMeeting(CaseCommand):
    held_at: AwareDatetime
    attendees: list[Attendee] = Field(min_length=1, max_length=100)
    stages: Stages
    outcome: Outcome
    actions: list[NewAction] = Field(default_factory=list, max_length=MAX_ACTIONS)


class CompleteAction(CaseCommand):
    action_id: str = Field(pattern=ACTION_ID_PATTERN)
    completed_on: date | None = Field(default=None, description="Default: today.")
    note: OptionalNote = None


class CheckOverdue(Command):
    as_of: date | None = Field(default=None, description="Default: today.")


@dataclass
class Meeting:
    meeting_id: str
    arranged_at: datetime
    status: str  # scheduled | cancelled | held
    held_on: date | None = None


@dataclass
class Action:
    action_id: str
    meeting_id: str
    due_date: date
    completed_on: date | None = None
    overdue_reported: bool = False


@dataclass
class CaseState:
    closed: bool = False
    meetings: dict[str, Meeting] = field(default_factory=dict)
    latest: str | None = None  # the meeting most recently arranged
    actions: dict[str, Action] = field(default_factory=dict)

    @property
    def meeting(self) -> Meeting | None:
        return self.meetings.get(self.latest) if self.latest else None


def fold(history: list[Recorded]) -> CaseState:
    state = CaseState()
    for r in history:
        e = r.payload
        if isinstance(e, MeetingScheduled):
            state.meetings[e.meeting_id] = Meeting(e.meeting_id, r.envelope.occurred_at, "scheduled")
            state.latest = e.meeting_id
        elif isinstance(e, MeetingCancelled) and e.meeting_id in state.meetings:
            state.meetings[e.meeting_id].status = "cancelled"
        elif isinstance(e, MeetingHeld) and e.meeting_id in state.meetings:
            state.meetings[e.meeting_id].status = "held"
            state.meetings[e.meeting_id].held_on = e.held_at.date()
        elif isinstance(e, ActionRecorded):
            state.actions[e.action_id] = Action(e.action_id, e.meeting_id, e.due_date)
        elif isinstance(e, ActionCompleted) and e.action_id in state.actions:
            state.actions[e.action_id].completed_on = e.completed_on
        elif isinstance(e, ActionOverdue) and e.action_id in state.actions:
            state.actions[e.action_id].overdue_reported = True
        elif isinstance(e, CaseClosed):
            state.closed = True
    return state


def action_id(meeting_id: str, n: int) -> str:
    """``<meeting_id>-A<n>``; a meeting id that cannot sit in an action id is replaced by its hash."""
    base = meeting_id if re.fullmatch(r"[A-Za-z0-9-]{1,56}", meeting_id) else (
        "M" + hashlib.sha256(meeting_id.encode()).hexdigest()[:12])
    return f"{base}-A{n}"


def decide_record(history: list[Recorded], cmd: RecordMeeting, now: datetime) -> list[Event]:
    if not history:
        raise case_not_found(cmd.case_id)
    state = fold(history)
    if state.closed:
        raise rejected("case_id", "the case is closed; no further meeting can be recorded")
    meeting = state.meeting
    if meeting is None or meeting.status == "cancelled":
        raise rejected("case_id", SCHEDULE_FIRST)
    if meeting.status == "held":
        raise rejected("case_id", f"meeting {meeting.meeting_id} is already recorded")
    reasons: list[Reason] = []
    if cmd.held_at > now:
        reasons.append(Reason("held_at", "is in the future; record a meeting once it has been held"))
    elif cmd.held_at < meeting.arranged_at:
        reasons.append(Reason("held_at", f"is before the meeting was arranged ({meeting.arranged_at.isoformat()})"))
    meeting_day = cmd.held_at.date()
    reasons += [Reason(f"actions.{i}.due_date", f"is before the meeting date {meeting_day}")
                for i, a in enumerate(cmd.actions) if a.due_date < meeting_day]
    if reasons:
        raise Rejected(*reasons)
    return [MeetingHeld(
        meeting_id=meeting.meeting_id,
        held_at=cmd.held_at,
        attendees=cmd.attendees,
        stages=cmd.stages,
        outcome=cmd.outcome,
        actions=[ActionItem(action_id=action_id(meeting.meeting_id, n), description=a.description,
                            owner=a.owner, due_date=a.due_date)
                 for n, a in enumerate(cmd.actions, start=1)],
    )]


def react(history: list[Recorded], cause: Recorded) -> list[Event]:
    """Each action agreed at a meeting becomes a tracked action, even if the case closed since."""
    if not isinstance(cause.payload, MeetingHeld):
        return []
    known = fold(history).actions
    return [ActionRecorded(action_id=a.action_id, meeting_id=cause.payload.meeting_id, description=a.description,
                           owner=a.owner, due_date=a.due_date)
            for a in cause.payload.actions if a.action_id not in known]


def decide_complete(history: list[Recorded], cmd: CompleteAction, today: date) -> list[Event]:
    if not history:
        raise case_not_found(cmd.case_id)
    state = fold(history)
    action = state.actions.get(cmd.action_id)
    if action is None:
        raise rejected("action_id", f"no action {cmd.action_id} in case {cmd.case_id}")
    if action.completed_on is not None:
        raise rejected("action_id", f"action {cmd.action_id} was already completed on {action.completed_on}")
    completed_on = cmd.completed_on or today
    if completed_on > today:
        raise rejected("completed_on", f"is in the future (today is {today})")
    meeting = state.meetings.get(action.meeting_id)
    if meeting is not None and meeting.held_on is not None and completed_on < meeting.held_on:
        raise rejected("completed_on", f"is before the action was agreed at the meeting on {meeting.held_on}")
    return [ActionCompleted(action_id=cmd.action_id, completed_on=completed_on, note=cmd.note)]


def decide_overdue(history: list[Recorded], action_id: str, as_of: date) -> list[Event]:
    """Report an open action past its due date, once: the history, not the caller, is the judge."""
    action = fold(history).actions.get(action_id)
    if action is None or action.completed_on is not None or action.overdue_reported or action.due_date >= as_of:
        return []
    return [ActionOverdue(action_id=action_id, due_date=action.due_date, as_of=as_of)]
