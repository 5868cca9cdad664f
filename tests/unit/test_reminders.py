"""Which reminders are due when: working days before meetings, action due dates and stage deadlines."""

from __future__ import annotations

import email
from datetime import UTC, date, datetime
from email import policy

from rethink.scheduling.notifier import compose_reminder, to_email
from rethink.scheduling.reminders import ActionItem, MeetingItem, StageItem, Timings, due
from rethink.shared.events import MeetingMode, Person
from rethink.shared.workdays import england_and_wales

HOLIDAYS = england_and_wales()
TIMINGS = Timings()
SAM = Person(name="Sam Teacher", agency="Northside School Trust", email="dsl@school.example.org")
ALEX = Person(name="Alex Social", agency="Children's Social Care", email="sw@council.example.org")
FAC = Person(name="Facilitator One", agency="Re-think facilitator", email="facilitator.one@example.org")


def at(day: date, hour: int = 9) -> datetime:
    return datetime(day.year, day.month, day.day, hour, 0, tzinfo=UTC)


def meeting(starts_at: datetime) -> MeetingItem:
    return MeetingItem("RT-ABCDEFGHJK", "CSC-2026-0042", "M-1a2b3c4d", starts_at, 90, MeetingMode.VIRTUAL,
                       "https://meet.example.org/x", (SAM, ALEX, SAM), "Facilitator One",
                       "facilitator.one@example.org")


def action(due_date: date) -> ActionItem:
    return ActionItem("RT-ABCDEFGHJK", "CSC-2026-0042", "M-1a2b3c4d-A1", "M-1a2b3c4d", ALEX, due_date,
                      "Facilitator One", "facilitator.one@example.org")


def stage(deadline: date) -> StageItem:
    return StageItem("RT-ABCDEFGHJK", "CSC-2026-0042", "E-12345678", 2, "Manager to manager",
                     "Line managers of each practitioner", deadline, (FAC, SAM))


def test_invitees_are_reminded_the_working_day_before_a_monday_meeting_that_is_on_the_friday():
    monday = meeting(at(date(2026, 12, 7), 10))  # Monday
    assert due([monday], at(date(2026, 12, 3)), TIMINGS, HOLIDAYS) == []  # Thursday: too early
    friday = due([monday], at(date(2026, 12, 4)), TIMINGS, HOLIDAYS)
    assert [r.recipient for r in friday] == [SAM, ALEX]  # once each, even if listed twice
    assert {r.working_days_before for r in friday} == {1}
    assert len({r.key for r in friday}) == 2
    # Still due (a catch-up) over the weekend, never once the meeting has started.
    assert [r.key for r in due([monday], at(date(2026, 12, 6)), TIMINGS, HOLIDAYS)] == [r.key for r in friday]
    assert due([monday], at(date(2026, 12, 7), 11), TIMINGS, HOLIDAYS) == []


def test_bank_holidays_are_skipped_when_counting_back():
    # Tuesday 29 December 2026: the working day before is Thursday 24th (25th and 28th are bank holidays).
    tuesday = meeting(at(date(2026, 12, 29), 10))
    assert due([tuesday], at(date(2026, 12, 23)), TIMINGS, HOLIDAYS) == []
    assert len(due([tuesday], at(date(2026, 12, 24)), TIMINGS, HOLIDAYS)) == 2


def test_a_moved_meeting_gets_a_reminder_of_its_own():
    first = due([meeting(at(date(2026, 12, 7), 10))], at(date(2026, 12, 4)), TIMINGS, HOLIDAYS)
    moved = due([meeting(at(date(2026, 12, 7), 14))], at(date(2026, 12, 4)), TIMINGS, HOLIDAYS)
    assert {r.key for r in first}.isdisjoint(r.key for r in moved)


def test_action_owners_are_reminded_three_working_days_before_and_on_the_due_date():
    item = action(date(2026, 12, 9))  # Wednesday; three working days before is Friday 4th
    assert due([item], at(date(2026, 12, 3)), TIMINGS, HOLIDAYS) == []
    three_before = due([item], at(date(2026, 12, 4)), TIMINGS, HOLIDAYS)
    assert [(r.recipient, r.working_days_before) for r in three_before] == [(ALEX, 3)]
    assert [r.key for r in due([item], at(date(2026, 12, 8)), TIMINGS, HOLIDAYS)] == [three_before[0].key]
    on_the_day = due([item], at(date(2026, 12, 9)), TIMINGS, HOLIDAYS)
    assert [r.working_days_before for r in on_the_day] == [0] and on_the_day[0].key != three_before[0].key
    assert due([item], at(date(2026, 12, 10)), TIMINGS, HOLIDAYS) == []  # overdue is escalation's business


def test_the_people_on_a_case_are_reminded_one_working_day_before_a_stage_deadline():
    item = stage(date(2026, 12, 14))  # Monday
    assert due([item], at(date(2026, 12, 10)), TIMINGS, HOLIDAYS) == []
    friday = due([item], at(date(2026, 12, 11)), TIMINGS, HOLIDAYS)
    assert [r.recipient for r in friday] == [FAC, SAM]
    advanced = StageItem(**{**item.__dict__, "stage": 3, "deadline": date(2026, 12, 14)})
    assert {r.key for r in friday}.isdisjoint(r.key for r in due([advanced], at(date(2026, 12, 11)), TIMINGS,
                                                                  HOLIDAYS))


def test_timings_come_from_settings():
    item = action(date(2026, 12, 9))
    assert due([item], at(date(2026, 12, 4)), Timings(action=(1,)), HOLIDAYS) == []
    assert len(due([item], at(date(2026, 12, 8)), Timings(action=(1,)), HOLIDAYS)) == 1


def test_london_dates_decide_the_day_not_utc():
    # 23:30 UTC on Thursday 3 December is still Thursday in London (GMT); in June it is already Friday (BST).
    assert due([action(date(2026, 12, 9))], datetime(2026, 12, 3, 23, 30, tzinfo=UTC), TIMINGS, HOLIDAYS) == []
    assert len(due([action(date(2026, 6, 10))], datetime(2026, 6, 4, 23, 30, tzinfo=UTC), TIMINGS, HOLIDAYS)) == 1


def test_reminder_emails_say_why_and_whom_to_contact_and_carry_nothing_about_the_child():
    reminders = due([meeting(at(date(2026, 12, 7), 10)), action(date(2026, 12, 7)), stage(date(2026, 12, 7))],
                    at(date(2026, 12, 4)), TIMINGS, HOLIDAYS)
    assert {r.kind for r in reminders} == {"meeting", "action", "escalation"}
    for r in reminders:
        m = compose_reminder(r, "rethink@example.org", "the coordinator at coordinator@pscp.example.org",
                             at(date(2026, 12, 4)))
        msg = email.message_from_bytes(to_email(m).as_bytes(), policy=policy.default)
        plain, html = msg.get_body(("plain",)).get_content(), msg.get_body(("html",)).get_content()
        assert "CSC-2026-0042" in msg["Subject"] and "Reminder" in msg["Subject"]
        assert msg["To"].addresses[0].addr_spec == str(r.recipient.email)
        for body in (plain, " ".join(html.split())):
            assert "You received this because" in body and "coordinator@pscp.example.org" in " ".join(body.split())
        assert not list(msg.iter_attachments())
