from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from rethink.scheduling import domain
from rethink.scheduling.app import meeting_id_for
from rethink.shared.errors import NotFound, Rejected
from rethink.shared.events import (
    CaseClosed,
    ChecksConfirmed,
    FacilitatorAssigned,
    MeetingCancelled,
    MeetingHeld,
    MeetingMode,
    MeetingRescheduled,
    MeetingScheduled,
    Person,
    RequestSubmitted,
)
from rethink.shared.settings import Facilitator
from tests.support import recorded, request_payload

CASE = "RT-AAAAAAAAAA"
NOW = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
NEXT_WEEK = NOW + timedelta(days=7)
FAC_1 = Facilitator(id="fac-1", name="Facilitator One", email="facilitator.one@example.org")
FAC_2 = Facilitator(id="fac-2", name="Facilitator Two", email="facilitator.two@example.org")
FAC_3 = Facilitator(id="fac-3", name="Facilitator Three", email="facilitator.three@example.org")


def submitted(**overrides) -> RequestSubmitted:
    data = request_payload(**overrides)
    data.pop("immediate_risk")
    return RequestSubmitted.model_validate(data)


def confirmed() -> ChecksConfirmed:
    return ChecksConfirmed(checks=submitted().checks)


def assigned(fac: Facilitator = FAC_1) -> FacilitatorAssigned:
    return FacilitatorAssigned(facilitator_id=fac.id, facilitator_name=fac.name, facilitator_email=fac.email)


def scheduled(meeting_id: str = "M-00000001", starts_at: datetime = NEXT_WEEK, minutes: int = 90) -> MeetingScheduled:
    return MeetingScheduled(meeting_id=meeting_id, facilitator_id="fac-1", starts_at=starts_at,
                            duration_minutes=minutes, mode=MeetingMode.VIRTUAL, venue="https://meet.example.org/abc",
                            invitees=domain.invitees_for(submitted()))


def held() -> MeetingHeld:
    return MeetingHeld.model_validate({
        "meeting_id": "M-00000001", "held_at": NEXT_WEEK.isoformat(), "outcome": "resolved", "actions": [],
        "attendees": [{"name": "Alex Social", "agency": "Children's Social Care"}],
        "stages": {"strengths": "s", "impact": "i", "ways_forward": "w", "learning": "l",
                   "perspectives": [{"professional": "Alex Social", "agency": "CSC", "feelings": "f", "needs": "n"}]},
    })



def history(*payloads):
    return [recorded(p, case_id=CASE, seq=i + 1) for i, p in enumerate(payloads)]


READY = (submitted(), confirmed(), assigned())


def schedule_cmd(**overrides) -> domain.ScheduleMeeting:
    data = {"case_id": CASE, "starts_at": NEXT_WEEK.isoformat(), "mode": "virtual",
            "venue": "https://meet.example.org/abc"} | overrides
    return domain.ScheduleMeeting.model_validate(data)


def reschedule_cmd(**overrides) -> domain.RescheduleMeeting:
    return domain.RescheduleMeeting.model_validate({"case_id": CASE, "starts_at": (NEXT_WEEK + timedelta(days=1))
                                                    .isoformat()} | overrides)


def schedule(hist, cmd=None, booked=(), now=NOW):
    return domain.decide_schedule(hist, cmd or schedule_cmd(), now=now, meeting_id="M-0000abcd", booked=list(booked))


def refusal(exc: pytest.ExceptionInfo[Rejected]) -> tuple[str, str]:
    return exc.value.reasons[0].field, exc.value.reasons[0].message


# --- assignment ------------------------------------------------------------------------------------

def test_the_least_loaded_facilitator_is_chosen():
    assert domain.least_loaded([FAC_1, FAC_2, FAC_3], {"fac-1": 3, "fac-2": 1, "fac-3": 2}) == FAC_2


def test_ties_between_facilitators_go_to_list_order_and_unseen_ones_count_as_zero():
    assert domain.least_loaded([FAC_1, FAC_2, FAC_3], {"fac-1": 1}) == FAC_2
    assert domain.least_loaded([FAC_1, FAC_2], {}) == FAC_1


def test_a_confirmed_case_is_assigned_the_chosen_facilitator():
    events = domain.decide_assignment(history(submitted(), confirmed()), FAC_2)
    assert events == [FacilitatorAssigned(facilitator_id="fac-2", facilitator_name="Facilitator Two",
                                          facilitator_email="facilitator.two@example.org")]


def test_a_case_is_never_assigned_a_second_facilitator():
    assert domain.decide_assignment(history(*READY), FAC_2) == []


def test_no_facilitator_is_assigned_before_the_checks_are_confirmed():
    assert domain.decide_assignment(history(submitted()), FAC_1) == []


# --- schedule ----------------------------------------------------------------------------------------

def test_scheduling_invites_the_requester_and_the_named_invitees_once_each():
    requester_also_listed = {"name": "Sam T.", "agency": "Northside School Trust", "email": "DSL@school.example.org"}
    request = submitted(invitees=[*request_payload()["invitees"], requester_also_listed])
    [event] = schedule(history(request, confirmed(), assigned()))
    assert isinstance(event, MeetingScheduled)
    assert [str(p.email) for p in event.invitees] == [
        "dsl@school.example.org", "sw@council.example.org", "hv@health.example.org"]
    assert event.invitees[0] == Person(name="Sam Teacher", agency="Northside School Trust",
                                       email="dsl@school.example.org")
    assert (event.meeting_id, event.facilitator_id, event.duration_minutes) == ("M-0000abcd", "fac-1", 90)
    assert event.starts_at == NEXT_WEEK and event.mode is MeetingMode.VIRTUAL


def test_meeting_ids_are_derived_from_the_command_id():
    assert meeting_id_for("cmd-1") == meeting_id_for("cmd-1") != meeting_id_for("cmd-2")
    assert len(meeting_id_for("cmd-1")) == 10 and meeting_id_for("cmd-1").startswith("M-")


def test_scheduling_an_unknown_case_is_not_found():
    with pytest.raises(NotFound) as exc:
        schedule([])
    assert exc.value.reasons[0].field == "case_id"


def test_scheduling_waits_for_the_three_checks():
    with pytest.raises(Rejected) as exc:
        schedule(history(submitted()))
    assert refusal(exc)[0] == "case_id" and "waiting for the three checks" in refusal(exc)[1]


def test_scheduling_waits_for_a_facilitator():
    with pytest.raises(Rejected) as exc:
        schedule(history(submitted(), confirmed()))
    assert "facilitator has not been assigned" in refusal(exc)[1]


def test_a_second_meeting_cannot_be_scheduled_while_one_is_active():
    with pytest.raises(Rejected) as exc:
        schedule(history(*READY, scheduled()))
    assert "already scheduled" in refusal(exc)[1]


def test_a_new_meeting_can_be_scheduled_after_a_cancellation():
    [event] = schedule(history(*READY, scheduled(), MeetingCancelled(meeting_id="M-00000001", reason="ill")))
    assert event.meeting_id == "M-0000abcd"


def test_no_meeting_is_scheduled_once_the_meeting_was_held():
    with pytest.raises(Rejected) as exc:
        schedule(history(*READY, scheduled(), held()))
    assert "already been held" in refusal(exc)[1]


def test_no_meeting_is_scheduled_on_a_closed_case():
    with pytest.raises(Rejected) as exc:
        schedule(history(*READY, CaseClosed(reason="escalation_resolved")))
    assert "closed" in refusal(exc)[1]


@pytest.mark.parametrize("starts_at", [NOW - timedelta(minutes=1), NOW])
def test_a_meeting_must_start_in_the_future(starts_at):
    with pytest.raises(Rejected) as exc:
        schedule(history(*READY), schedule_cmd(starts_at=starts_at.isoformat()))
    assert refusal(exc)[0] == "starts_at" and "in the future" in refusal(exc)[1]


def test_a_facilitator_cannot_be_double_booked():
    other = domain.Booking("M-0000ffff", "RT-BBBBBBBBBB", NEXT_WEEK + timedelta(minutes=60), 60)
    with pytest.raises(Rejected) as exc:
        schedule(history(*READY), booked=[other])
    assert refusal(exc)[0] == "starts_at" and "M-0000ffff" in refusal(exc)[1]


def test_back_to_back_meetings_of_one_facilitator_are_allowed():
    before = domain.Booking("M-0000fff1", "RT-BBBBBBBBBB", NEXT_WEEK - timedelta(minutes=60), 60)
    after = domain.Booking("M-0000fff2", "RT-CCCCCCCCCC", NEXT_WEEK + timedelta(minutes=90), 30)
    assert len(schedule(history(*READY), booked=[before, after])) == 1


# --- command validation --------------------------------------------------------------------------------

def test_a_start_time_without_a_timezone_is_refused_with_a_clear_reason():
    with pytest.raises(ValidationError) as exc:
        schedule_cmd(starts_at="2026-05-08T10:00:00")
    [err] = exc.value.errors()
    assert err["loc"] == ("starts_at",) and "timezone offset" in err["msg"]


def test_an_in_person_meeting_needs_a_venue():
    with pytest.raises(ValidationError, match="venue is required"):
        schedule_cmd(mode="in_person", venue=None)
    assert schedule_cmd(mode="virtual", venue=None).venue is None


@pytest.mark.parametrize("minutes", [14, 481])
def test_a_meeting_lasts_between_a_quarter_hour_and_eight_hours(minutes):
    with pytest.raises(ValidationError):
        schedule_cmd(duration_minutes=minutes)


def test_cancelling_needs_a_reason_and_unknown_fields_are_refused():
    with pytest.raises(ValidationError):
        domain.CancelMeeting.model_validate({"case_id": CASE})
    with pytest.raises(ValidationError):
        schedule_cmd(room="B12")


# --- reschedule --------------------------------------------------------------------------------------------

def test_rescheduling_keeps_the_current_arrangements_unless_told_otherwise():
    [event] = domain.decide_reschedule(history(*READY, scheduled(minutes=60)), reschedule_cmd(reason="clash"),
                                       now=NOW, booked=[])
    assert event == MeetingRescheduled(meeting_id="M-00000001", starts_at=NEXT_WEEK + timedelta(days=1),
                                       duration_minutes=60, mode=MeetingMode.VIRTUAL,
                                       venue="https://meet.example.org/abc", reason="clash")


def test_rescheduling_in_person_drops_the_old_link_and_needs_a_venue():
    with pytest.raises(Rejected) as exc:
        domain.decide_reschedule(history(*READY, scheduled()), reschedule_cmd(mode="in_person"), now=NOW, booked=[])
    assert refusal(exc)[0] == "venue"
    [event] = domain.decide_reschedule(history(*READY, scheduled()),
                                       reschedule_cmd(mode="in_person", venue="Civic Offices, Room 2"),
                                       now=NOW, booked=[])
    assert (event.mode, event.venue) == (MeetingMode.IN_PERSON, "Civic Offices, Room 2")


def test_rescheduling_needs_an_active_meeting():
    for hist in (history(*READY), history(*READY, scheduled(), MeetingCancelled(meeting_id="M-00000001",
                                                                               reason="no longer needed"))):
        with pytest.raises(Rejected) as exc:
            domain.decide_reschedule(hist, reschedule_cmd(), now=NOW, booked=[])
        assert "no scheduled meeting" in refusal(exc)[1]


def test_rescheduling_into_the_past_is_refused():
    with pytest.raises(Rejected) as exc:
        domain.decide_reschedule(history(*READY, scheduled()), reschedule_cmd(starts_at="2026-04-01T10:00:00+01:00"),
                                 now=NOW, booked=[])
    assert refusal(exc)[0] == "starts_at"


def test_rescheduling_onto_another_meeting_of_the_facilitator_is_refused_but_not_onto_itself():
    own = domain.Booking("M-00000001", CASE, NEXT_WEEK, 90)
    other = domain.Booking("M-0000ffff", "RT-BBBBBBBBBB", NEXT_WEEK + timedelta(days=1, minutes=30), 60)
    moved = domain.decide_reschedule(history(*READY, scheduled()), reschedule_cmd(starts_at=(NEXT_WEEK + timedelta(
        minutes=30)).isoformat()), now=NOW, booked=[own])
    assert moved[0].starts_at == NEXT_WEEK + timedelta(minutes=30)
    with pytest.raises(Rejected) as exc:
        domain.decide_reschedule(history(*READY, scheduled()), reschedule_cmd(), now=NOW, booked=[own, other])
    assert "M-0000ffff" in refusal(exc)[1]


def test_a_held_meeting_or_closed_case_cannot_be_rescheduled():
    for late in (held(), CaseClosed(reason="resolved_at_meeting")):
        with pytest.raises(Rejected):
            domain.decide_reschedule(history(*READY, scheduled(), late), reschedule_cmd(), now=NOW, booked=[])


# --- cancel ----------------------------------------------------------------------------------------------------

def test_cancelling_calls_off_the_active_meeting():
    cmd = domain.CancelMeeting(case_id=CASE, reason="Agreement reached before the meeting")
    assert domain.decide_cancel(history(*READY, scheduled()), cmd) == [
        MeetingCancelled(meeting_id="M-00000001", reason="Agreement reached before the meeting")]


def test_cancelling_without_an_active_meeting_or_after_it_was_held_is_refused():
    cmd = domain.CancelMeeting(case_id=CASE, reason="not needed")
    with pytest.raises(Rejected) as exc:
        domain.decide_cancel(history(*READY), cmd)
    assert "no scheduled meeting" in refusal(exc)[1]
    with pytest.raises(Rejected) as exc:
        domain.decide_cancel(history(*READY, scheduled(), held()), cmd)
    assert "already been held" in refusal(exc)[1]
    with pytest.raises(NotFound):
        domain.decide_cancel([], cmd)

