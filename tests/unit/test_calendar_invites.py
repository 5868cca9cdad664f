"""The calendar entries sent with invitations, read back with ``icalendar`` as a calendar would."""

from __future__ import annotations

import email
from datetime import UTC, datetime, timedelta
from email import policy
from zoneinfo import ZoneInfo

import icalendar
import pytest

from rethink.scheduling.notifier import Notice, compose, to_email
from rethink.shared.events import MeetingMode, Person

SENDER = "rethink@example.org"
INVITEES = [Person(name="Sam Teacher", agency="Northside School Trust", email="dsl@school.example.org"),
            Person(name="Alex Social", agency="Children's Social Care", email="sw@council.example.org")]
LONDON = ZoneInfo("Europe/London")


def notice(kind="invitation", starts_at=datetime(2026, 7, 1, 9, 0, tzinfo=UTC), sequence=0) -> Notice:
    return Notice(kind=kind, case_id="RT-ABCDEFGHJK", case_reference="CSC-2026-0042", meeting_id="M-1a2b3c4d",
                  starts_at=starts_at, duration_minutes=90, mode=MeetingMode.IN_PERSON, venue="Civic Offices",
                  facilitator_name="Facilitator One", facilitator_email="facilitator.one@example.org",
                  sequence=sequence)


def calendar_of(n: Notice, event_id: str = "ev-1") -> tuple[email.message.EmailMessage, icalendar.Calendar]:
    [first, _] = compose(n, INVITEES, event_id, SENDER, datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    msg = email.message_from_bytes(to_email(first).as_bytes(), policy=policy.default)
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_content_type() == "text/calendar"
    assert attachment.get_filename() == "invite.ics"
    return msg, icalendar.Calendar.from_ical(attachment.get_content())


def test_a_scheduled_meeting_is_a_request_with_organizer_attendees_and_london_times():
    msg, cal = calendar_of(notice())
    [event] = cal.walk("VEVENT")
    assert cal["METHOD"] == "REQUEST" and msg.get_body(("plain",)) is not None
    assert list(msg.iter_attachments())[0].get_param("method") == "REQUEST"
    assert str(event["UID"]) == "RT-ABCDEFGHJK-M-1a2b3c4d@example.org"
    assert event["SEQUENCE"] == 0 and event["STATUS"] == "CONFIRMED"
    assert str(event["ORGANIZER"]) == f"mailto:{SENDER}"
    assert [str(a) for a in event["ATTENDEE"]] == ["mailto:dsl@school.example.org", "mailto:sw@council.example.org"]
    assert event["DTSTART"].params["TZID"] == "Europe/London"
    assert event.decoded("DTSTART") == datetime(2026, 7, 1, 10, 0, tzinfo=LONDON)  # 09:00 UTC is 10:00 BST
    assert event.decoded("DTEND") - event.decoded("DTSTART") == timedelta(minutes=90)
    assert [tz["TZID"] for tz in cal.walk("VTIMEZONE")] == ["Europe/London"]


def test_a_change_is_a_request_with_the_same_uid_and_a_higher_sequence_and_a_cancellation_is_a_cancel():
    _, first = calendar_of(notice(), "ev-1")
    _, moved = calendar_of(notice("changed", datetime(2026, 7, 2, 13, 0, tzinfo=UTC), sequence=1), "ev-2")
    _, called_off = calendar_of(notice("cancelled", datetime(2026, 7, 2, 13, 0, tzinfo=UTC), sequence=2), "ev-3")
    events = [c.walk("VEVENT")[0] for c in (first, moved, called_off)]
    assert [c["METHOD"] for c in (first, moved, called_off)] == ["REQUEST", "REQUEST", "CANCEL"]
    assert len({str(e["UID"]) for e in events}) == 1
    assert [e["SEQUENCE"] for e in events] == [0, 1, 2]
    assert events[1].decoded("DTSTART") == datetime(2026, 7, 2, 14, 0, tzinfo=LONDON)
    assert events[2]["STATUS"] == "CANCELLED"


@pytest.mark.parametrize(("starts_at", "wall_clock", "zone_name"), [
    # The clocks go back at 02:00 BST on Sunday 25 October 2026, the last Sunday of October.
    (datetime(2026, 10, 24, 9, 0, tzinfo=UTC), datetime(2026, 10, 24, 10, 0), "BST"),
    (datetime(2026, 10, 25, 10, 0, tzinfo=UTC), datetime(2026, 10, 25, 10, 0), "GMT"),
    (datetime(2026, 10, 26, 10, 0, tzinfo=UTC), datetime(2026, 10, 26, 10, 0), "GMT"),
])
def test_meetings_either_side_of_the_october_clock_change_land_on_the_right_instant(starts_at, wall_clock,
                                                                                     zone_name):
    msg, cal = calendar_of(notice(starts_at=starts_at))
    [event] = cal.walk("VEVENT")
    raw = event["DTSTART"].to_ical().decode()
    assert raw == wall_clock.strftime("%Y%m%dT%H%M%S")  # written as London wall-clock time...
    assert event.decoded("DTSTART").astimezone(UTC) == starts_at  # ...which names the right UTC instant
    # A calendar without its own tz database uses the VTIMEZONE sent along: it must agree.
    sent_zone = cal.walk("VTIMEZONE")[0].to_tz()
    assert wall_clock.replace(tzinfo=sent_zone).astimezone(UTC) == starts_at
    assert f"UK time ({zone_name})" in msg.get_body(("plain",)).get_content()


def test_the_calendar_entry_names_the_case_by_reference_only():
    _, cal = calendar_of(notice())
    text = cal.to_ical().decode()
    assert "CSC-2026-0042" in text
    assert "neglect" not in text and "attendance" not in text
