"""The meeting service's rules, decided against hand-built histories (no server, fixed times)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from rethink.meeting import domain
from rethink.shared.errors import NotFound, Rejected
from rethink.shared.events import (
    ActionCompleted,
    ActionOverdue,
    ActionRecorded,
    CaseClosed,
    MeetingCancelled,
    MeetingHeld,
    MeetingRescheduled,
    MeetingScheduled,
    Person,
    RequestSubmitted,
)
from tests.support import recorded, request_payload

CASE = "RT-AAAAAAAAAA"
SUBMITTED = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ARRANGED = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
HELD = datetime(2026, 3, 16, 10, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 16, 12, 0, tzinfo=UTC)
TODAY = NOW.date()
OWNER = {"name": "Alex Social", "agency": "Children's Social Care", "email": "sw@council.example.org"}


def submitted() -> RequestSubmitted:
    p = request_payload()
    del p["immediate_risk"]
    return RequestSubmitted.model_validate(p)


def scheduled(meeting_id: str = "MTG-1") -> MeetingScheduled:
    return MeetingScheduled(meeting_id=meeting_id, facilitator_id="fac-1", starts_at=HELD, duration_minutes=90,
                            mode="in_person", venue="Civic Offices, Room 2",
                            invitees=[Person.model_validate(OWNER)])


def history(*items) -> list:
    """Items are payloads (recorded at SUBMITTED + n hours) or (payload, at) pairs."""
    out = []
    for seq, item in enumerate(items, start=1):
        payload, at = item if isinstance(item, tuple) else (item, SUBMITTED + timedelta(hours=seq))
        out.append(recorded(payload, case_id=CASE, seq=seq, at=at))
    return out


def arranged(*more) -> list:
    return history(submitted(), (scheduled(), ARRANGED), *more)


def record_cmd(**overrides) -> domain.RecordMeeting:
    body = {
        "case_id": CASE,
        "actor": "facilitator.one@example.org",
        "held_at": HELD.isoformat(),
        "attendees": [{"name": "Alex Social", "agency": "Children's Social Care", "role": "Social worker"},
                      {"name": "Sam Teacher", "agency": "Northside School Trust"}],
        "stages": {
            "strengths": "The family engage well with school.",
            "perspectives": [{"professional": "Sam Teacher", "agency": "Northside School Trust",
                              "feelings": "Worried", "needs": "A clear attendance plan"}],
            "impact": "Attendance has fallen for a term.",
            "ways_forward": "A joint visit and a revised plan.",
            "learning": "Agree attendance thresholds early.",
        },
        "outcome": "partly_resolved",
        "actions": [
            {"description": "Joint home visit", "owner": OWNER, "due_date": "2026-03-23"},
            {"description": "Revise the plan", "owner": {**OWNER, "email": "hv@health.example.org",
                                                         "agency": "Community Health"}, "due_date": "2026-03-30"},
        ],
    }
    body.update(overrides)
    return domain.RecordMeeting.model_validate(body)


def held(actions=None) -> MeetingHeld:
    return domain.decide_record(arranged(), record_cmd(**({"actions": actions} if actions is not None else {})), NOW)[0]


def with_actions(*more) -> list:
    h = held()
    return arranged(h, *domain.react(arranged(h), recorded(h, case_id=CASE)), *more)


def reasons(exc: pytest.ExceptionInfo[Rejected]) -> dict[str, str]:
    return {r.field: r.message for r in exc.value.reasons}


# --- record -------------------------------------------------------------------------------


def test_recording_a_scheduled_meeting_writes_one_meeting_held_with_numbered_actions():
    [event] = domain.decide_record(arranged(), record_cmd(), NOW)
    assert isinstance(event, MeetingHeld)
    assert event.meeting_id == "MTG-1"
    assert event.held_at == HELD
    assert event.outcome == "partly_resolved"
    assert len(event.attendees) == 2
    assert [a.action_id for a in event.actions] == ["MTG-1-A1", "MTG-1-A2"]
    assert [a.due_date for a in event.actions] == [date(2026, 3, 23), date(2026, 3, 30)]
    assert event.actions[1].owner.email == "hv@health.example.org"


def test_a_meeting_may_be_recorded_with_no_actions():
    [event] = domain.decide_record(arranged(), record_cmd(actions=[]), NOW)
    assert event.actions == []


def test_a_rescheduled_meeting_is_recorded_under_its_meeting_id():
    moved = MeetingRescheduled(meeting_id="MTG-1", starts_at=HELD, duration_minutes=60, mode="virtual")
    [event] = domain.decide_record(arranged(moved), record_cmd(), NOW)
    assert event.meeting_id == "MTG-1"


def test_a_meeting_arranged_after_a_cancelled_one_is_the_one_recorded():
    h = arranged(MeetingCancelled(meeting_id="MTG-1", reason="Facilitator ill"), (scheduled("MTG-2"), ARRANGED))
    [event] = domain.decide_record(h, record_cmd(), NOW)
    assert event.meeting_id == "MTG-2"
    assert event.actions[0].action_id == "MTG-2-A1"


def test_recording_a_meeting_for_an_unknown_case_is_not_found():
    with pytest.raises(NotFound) as exc:
        domain.decide_record([], record_cmd(), NOW)
    assert "case_id" in reasons(exc)


def test_recording_before_any_meeting_is_scheduled_is_refused():
    with pytest.raises(Rejected) as exc:
        domain.decide_record(history(submitted()), record_cmd(), NOW)
    assert "schedule the meeting first" in reasons(exc)["case_id"]


def test_recording_a_cancelled_meeting_is_refused():
    with pytest.raises(Rejected) as exc:
        domain.decide_record(arranged(MeetingCancelled(meeting_id="MTG-1", reason="Moved")), record_cmd(), NOW)
    assert "schedule the meeting first" in reasons(exc)["case_id"]


def test_recording_the_same_meeting_twice_is_refused():
    with pytest.raises(Rejected) as exc:
        domain.decide_record(arranged(held()), record_cmd(), NOW)
    assert "already recorded" in reasons(exc)["case_id"]


def test_a_meeting_held_in_the_future_is_refused():
    with pytest.raises(Rejected) as exc:
        domain.decide_record(arranged(), record_cmd(held_at=(NOW + timedelta(minutes=1)).isoformat()), NOW)
    assert "future" in reasons(exc)["held_at"]


def test_a_meeting_held_before_it_was_arranged_is_refused():
    with pytest.raises(Rejected) as exc:
        domain.decide_record(arranged(), record_cmd(held_at=(ARRANGED - timedelta(hours=1)).isoformat()), NOW)
    assert "before the meeting was arranged" in reasons(exc)["held_at"]


def test_held_at_in_another_timezone_is_compared_as_an_instant():
    # 11:30 at +01:00 is 10:30 UTC: before NOW (12:00 UTC), so it is not in the future.
    cmd = record_cmd(held_at=datetime(2026, 3, 16, 11, 30, tzinfo=timezone(timedelta(hours=1))).isoformat())
    [event] = domain.decide_record(arranged(), cmd, NOW)
    assert event.held_at == datetime(2026, 3, 16, 10, 30, tzinfo=UTC)


def test_an_action_due_before_the_meeting_date_is_refused_with_its_path():
    actions = [{"description": "Visit", "owner": OWNER, "due_date": "2026-03-16"},
               {"description": "Write up", "owner": OWNER, "due_date": "2026-03-15"}]
    with pytest.raises(Rejected) as exc:
        domain.decide_record(arranged(), record_cmd(actions=actions), NOW)
    assert list(reasons(exc)) == ["actions.1.due_date"]


def test_recording_a_meeting_on_a_closed_case_is_refused():
    with pytest.raises(Rejected) as exc:
        domain.decide_record(arranged(CaseClosed(reason="escalation_resolved")), record_cmd(), NOW)
    assert "closed" in reasons(exc)["case_id"]


def test_a_meeting_id_unfit_for_an_action_id_is_replaced_by_a_stable_hash():
    odd = domain.action_id("meeting/2026.03_16", 3)
    assert odd == domain.action_id("meeting/2026.03_16", 3)
    assert odd != domain.action_id("meeting/2026.03_17", 3)
    assert odd.endswith("-A3") and len(odd) <= 64 and odd.replace("-", "").isalnum()
    assert domain.action_id("x" * 70, 50) != domain.action_id("x" * 71, 50)


# --- command models -----------------------------------------------------------------------


def test_a_naive_held_at_is_refused_by_the_model():
    with pytest.raises(ValidationError) as exc:
        record_cmd(held_at="2026-03-16T10:00:00")
    assert exc.value.errors()[0]["loc"] == ("held_at",)


def test_a_due_date_that_is_not_a_date_is_refused_with_its_path():
    with pytest.raises(ValidationError) as exc:
        record_cmd(actions=[{"description": "Visit", "owner": OWNER, "due_date": "tomorrow"}])
    assert exc.value.errors()[0]["loc"] == ("actions", 0, "due_date")


def test_a_meeting_needs_an_attendee_and_at_most_fifty_actions():
    with pytest.raises(ValidationError):
        record_cmd(attendees=[])
    with pytest.raises(ValidationError) as exc:
        record_cmd(actions=[{"description": "x", "owner": OWNER, "due_date": "2026-04-01"}] * 51)
    assert exc.value.errors()[0]["loc"] == ("actions",)


def test_unknown_fields_are_refused_and_check_overdue_needs_no_case():
    with pytest.raises(ValidationError):
        record_cmd(minutes="secret")
    assert domain.CheckOverdue.model_validate({}).as_of is None


# --- reaction: actions recorded -----------------------------------------------------------


def test_a_held_meeting_records_each_action_with_the_same_id():
    h = held()
    events = domain.react(arranged(h), recorded(h, case_id=CASE))
    assert all(isinstance(e, ActionRecorded) for e in events)
    assert [(e.action_id, e.meeting_id, e.due_date) for e in events] == [
        ("MTG-1-A1", "MTG-1", date(2026, 3, 23)), ("MTG-1-A2", "MTG-1", date(2026, 3, 30))]
    assert events[0].description == "Joint home visit" and events[0].owner.email == OWNER["email"]


def test_actions_already_recorded_are_not_recorded_again():
    h = held()
    assert domain.react(with_actions(), recorded(h, case_id=CASE)) == []


def test_actions_are_recorded_even_if_the_case_closed_after_the_meeting():
    h = held()
    events = domain.react(arranged(h, CaseClosed(reason="resolved_at_meeting")), recorded(h, case_id=CASE))
    assert len(events) == 2


def test_events_other_than_meeting_held_cause_no_reaction():
    assert domain.react(arranged(), recorded(scheduled(), case_id=CASE)) == []


# --- complete_action ----------------------------------------------------------------------


def complete_cmd(**overrides) -> domain.CompleteAction:
    return domain.CompleteAction.model_validate({"case_id": CASE, "action_id": "MTG-1-A1", **overrides})


def test_completing_an_action_defaults_to_today():
    [event] = domain.decide_complete(with_actions(), complete_cmd(note="Visit done"), TODAY)
    assert event == ActionCompleted(action_id="MTG-1-A1", completed_on=TODAY, note="Visit done")


def test_completing_an_action_on_a_given_past_day():
    [event] = domain.decide_complete(with_actions(), complete_cmd(completed_on="2026-03-16"), date(2026, 3, 20))
    assert event.completed_on == date(2026, 3, 16)


def test_completing_an_unknown_action_is_refused_on_action_id():
    with pytest.raises(Rejected) as exc:
        domain.decide_complete(with_actions(), complete_cmd(action_id="MTG-1-A9"), TODAY)
    assert "no action MTG-1-A9" in reasons(exc)["action_id"]


def test_completing_an_action_twice_is_refused():
    done = ActionCompleted(action_id="MTG-1-A1", completed_on=TODAY)
    with pytest.raises(Rejected) as exc:
        domain.decide_complete(with_actions(done), complete_cmd(), TODAY)
    assert "already completed" in reasons(exc)["action_id"]


def test_completing_an_action_in_the_future_is_refused():
    with pytest.raises(Rejected) as exc:
        domain.decide_complete(with_actions(), complete_cmd(completed_on="2026-03-17"), TODAY)
    assert "future" in reasons(exc)["completed_on"]


def test_completing_an_action_before_the_meeting_agreed_it_is_refused():
    with pytest.raises(Rejected) as exc:
        domain.decide_complete(with_actions(), complete_cmd(completed_on="2026-03-15"), TODAY)
    assert "before the action was agreed" in reasons(exc)["completed_on"]


def test_completing_an_action_of_an_unknown_case_is_not_found():
    with pytest.raises(NotFound):
        domain.decide_complete([], complete_cmd(), TODAY)


# --- overdue ------------------------------------------------------------------------------


def test_an_open_action_past_its_due_date_is_reported_overdue():
    assert domain.decide_overdue(with_actions(), "MTG-1-A1", date(2026, 3, 24)) == [
        ActionOverdue(action_id="MTG-1-A1", due_date=date(2026, 3, 23), as_of=date(2026, 3, 24))]


def test_an_action_due_today_is_not_yet_overdue():
    assert domain.decide_overdue(with_actions(), "MTG-1-A1", date(2026, 3, 23)) == []


def test_an_action_is_reported_overdue_only_once():
    first = ActionOverdue(action_id="MTG-1-A1", due_date=date(2026, 3, 23), as_of=date(2026, 3, 24))
    assert domain.decide_overdue(with_actions(first), "MTG-1-A1", date(2026, 3, 30)) == []


def test_a_completed_action_is_never_overdue():
    done = ActionCompleted(action_id="MTG-1-A1", completed_on=date(2026, 3, 20))
    assert domain.decide_overdue(with_actions(done), "MTG-1-A1", date(2026, 4, 30)) == []


def test_an_action_unknown_to_the_case_is_not_reported():
    assert domain.decide_overdue(arranged(), "MTG-1-A1", date(2026, 4, 30)) == []

