"""Scheduling's rules: who facilitates a case, and when a meeting may be arranged, moved or called off.

Pure: no I/O, no clock. Decisions take the case's history (and whatever the caller looked
up for them: the chosen facilitator, the facilitator's other bookings, ``now``) and return
event payloads or raise ``Rejected``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import Field, field_validator, model_validator

from rethink.shared.commands import CaseCommand, case_not_found
from rethink.shared.envelope import Recorded
from rethink.shared.errors import rejected
from rethink.shared.events import (
    FROM_LOG,
    CaseClosed,
    ChecksConfirmed,
    Event,
    FacilitatorAssigned,
    MeetingCancelled,
    MeetingHeld,
    MeetingMode,
    MeetingRescheduled,
    MeetingScheduled,
    OptionalNote,
    Person,
    PersonalText,
    RequestSubmitted,
)
from rethink.shared.settings import Facilitator


def _aware(value: datetime) -> datetime:
    # A naive time is ambiguous (UTC? London? BST?); guessing could send people to the wrong hour.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("starts_at must include a timezone offset, e.g. 2026-05-12T10:00:00+01:00")
    return value


class ScheduleMeeting(CaseCommand):
    starts_at: datetime
    duration_minutes: int = Field(default=90, ge=15, le=480, description="Length in minutes (15 to 480).")
    mode: MeetingMode
    venue: PersonalText | None = Field(default=None, description="Address (in person) or meeting link / dial-in.")

    @field_validator("starts_at")
    @classmethod
    def _starts_at_aware(cls, v: datetime) -> datetime:
        return _aware(v)

    @model_validator(mode="after")
    def _venue_when_in_person(self) -> ScheduleMeeting:
        if self.mode is MeetingMode.IN_PERSON and not self.venue:
            raise ValueError("venue is required for an in-person meeting")
        return self


class RescheduleMeeting(CaseCommand):
    starts_at: datetime
    duration_minutes: int | None = Field(default=None, ge=15, le=480, description="Default: keep the current one.")
    mode: MeetingMode | None = Field(default=None, description="Default: keep the current one.")
    venue: PersonalText | None = Field(default=None, description="Default: keep the current one.")
    reason: OptionalNote = None

    @field_validator("starts_at")
    @classmethod
    def _starts_at_aware(cls, v: datetime) -> datetime:
        return _aware(v)


class CancelMeeting(CaseCommand):
    reason: PersonalText


@dataclass(frozen=True)
class Booking:
    """Another meeting that occupies a facilitator (from the projection)."""

    meeting_id: str
    case_id: str
    starts_at: datetime
    duration_minutes: int

    @property
    def ends_at(self) -> datetime:
        return self.starts_at + timedelta(minutes=self.duration_minutes)


@dataclass(frozen=True)
class Meeting:
    meeting_id: str
    facilitator_id: str
    starts_at: datetime
    duration_minutes: int
    mode: MeetingMode
    venue: str | None


@dataclass(frozen=True)
class CaseState:
    request: RequestSubmitted | None = None
    checks_confirmed: bool = False
    facilitator: FacilitatorAssigned | None = None
    meeting: Meeting | None = None  # the active (scheduled or rescheduled) meeting, if any
    held: bool = False
    closed: bool = False


def fold(history: Sequence[Recorded]) -> CaseState:
    request, confirmed, facilitator, meeting, held, closed = None, False, None, None, False, False
    for r in history:
        e = r.payload
        if isinstance(e, RequestSubmitted):
            request = e
        elif isinstance(e, ChecksConfirmed):
            confirmed = True
        elif isinstance(e, FacilitatorAssigned):
            facilitator = facilitator or e
        elif isinstance(e, MeetingScheduled):
            meeting = Meeting(e.meeting_id, e.facilitator_id, e.starts_at, e.duration_minutes, e.mode, e.venue)
        elif isinstance(e, MeetingRescheduled) and meeting and meeting.meeting_id == e.meeting_id:
            meeting = Meeting(e.meeting_id, meeting.facilitator_id, e.starts_at, e.duration_minutes, e.mode, e.venue)
        elif isinstance(e, MeetingCancelled) and meeting and meeting.meeting_id == e.meeting_id:
            meeting = None
        elif isinstance(e, MeetingHeld):
            held, meeting = True, None
        elif isinstance(e, CaseClosed):
            closed = True
    return CaseState(request, confirmed, facilitator, meeting, held, closed)


def least_loaded(facilitators: Sequence[Facilitator], load: Mapping[str, int]) -> Facilitator:
    """The facilitator with the fewest open cases; ties go to the earlier one in the list."""
    if not facilitators:
        raise ValueError("no facilitators configured")
    _, best = min(enumerate(facilitators), key=lambda item: (load.get(item[1].id, 0), item[0]))
    return best


def decide_assignment(history: Sequence[Recorded], choice: Facilitator) -> list[Event]:
    """Reaction to ChecksConfirmed. A case gets one facilitator, ever: later calls write nothing."""
    state = fold(history)
    if state.request is None or not state.checks_confirmed or state.facilitator is not None or state.closed:
        return []
    return [FacilitatorAssigned(facilitator_id=choice.id, facilitator_name=choice.name,
                                facilitator_email=choice.email)]


def invitees_for(request: RequestSubmitted) -> list[Person]:
    """The requester first, then everyone they named; one entry per email address."""
    me = request.requester  # from the log, so read as the log is: an address refused today still reads
    return unique_people([Person.model_validate({"name": me.name, "agency": me.agency, "email": me.email},
                                                context=FROM_LOG), *request.invitees])


def unique_people(people: Sequence[Person]) -> list[Person]:
    """One entry per email address (compared without case), first one kept, order kept."""
    seen: set[str] = set()
    out: list[Person] = []
    for p in people:
        key = str(p.email).casefold()
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _open_case(state: CaseState, case_id: str) -> None:
    """Refusals shared by every command: the case must exist, be ready and still be open."""
    if state.request is None:
        raise case_not_found(case_id)
    if state.closed:
        raise rejected("case_id", "the case is closed; no meeting can be arranged or changed")
    if state.held:
        raise rejected("case_id", "the Re-think meeting for this case has already been held")
    if not state.checks_confirmed:
        raise rejected("case_id", "waiting for the three checks to be confirmed before a meeting can be arranged")
    if state.facilitator is None:
        raise rejected("case_id", "a facilitator has not been assigned to this case yet; try again shortly")


def _check_time(starts_at: datetime, duration: int, now: datetime, booked: Sequence[Booking],
                facilitator_id: str, meeting_id: str | None) -> None:
    if starts_at <= now:
        raise rejected("starts_at", f"starts_at must be in the future (it is now {now.isoformat()})")
    ends_at = starts_at + timedelta(minutes=duration)
    for b in booked:
        if b.meeting_id != meeting_id and starts_at < b.ends_at and b.starts_at < ends_at:
            raise rejected("starts_at", f"facilitator {facilitator_id} already has meeting {b.meeting_id} "
                           f"from {b.starts_at.isoformat()} to {b.ends_at.isoformat()}; choose another time")


def decide_schedule(history: Sequence[Recorded], cmd: ScheduleMeeting, *, now: datetime, meeting_id: str,
                    booked: Sequence[Booking]) -> list[Event]:
    """``booked``: the assigned facilitator's other active meetings (may lag the log slightly)."""
    state = fold(history)
    _open_case(state, cmd.case_id)
    assert state.request is not None and state.facilitator is not None
    if state.meeting is not None:
        raise rejected("case_id", f"meeting {state.meeting.meeting_id} is already scheduled for this case; "
                       "reschedule or cancel it instead")
    fac = state.facilitator.facilitator_id
    _check_time(cmd.starts_at, cmd.duration_minutes, now, booked, fac, None)
    return [MeetingScheduled(meeting_id=meeting_id, facilitator_id=fac, starts_at=cmd.starts_at,
                             duration_minutes=cmd.duration_minutes, mode=cmd.mode, venue=cmd.venue,
                             invitees=invitees_for(state.request))]


def _active(state: CaseState, case_id: str) -> Meeting:
    _open_case(state, case_id)
    if state.meeting is None:
        raise rejected("case_id", "there is no scheduled meeting for this case")
    return state.meeting


def decide_reschedule(history: Sequence[Recorded], cmd: RescheduleMeeting, *, now: datetime,
                      booked: Sequence[Booking]) -> list[Event]:
    current = _active(fold(history), cmd.case_id)
    mode = cmd.mode or current.mode
    # A new mode makes the old venue meaningless (an address is not a meeting link), so it is kept only
    # when the mode stays the same.
    venue = cmd.venue if cmd.venue is not None else (current.venue if mode is current.mode else None)
    if mode is MeetingMode.IN_PERSON and not venue:
        raise rejected("venue", "venue is required for an in-person meeting")
    duration = cmd.duration_minutes or current.duration_minutes
    _check_time(cmd.starts_at, duration, now, booked, current.facilitator_id, current.meeting_id)
    return [MeetingRescheduled(meeting_id=current.meeting_id, starts_at=cmd.starts_at, duration_minutes=duration,
                               mode=mode, venue=venue, reason=cmd.reason)]


def decide_cancel(history: Sequence[Recorded], cmd: CancelMeeting) -> list[Event]:
    current = _active(fold(history), cmd.case_id)
    return [MeetingCancelled(meeting_id=current.meeting_id, reason=cmd.reason)]
