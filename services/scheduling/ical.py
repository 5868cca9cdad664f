"""The calendar entry that travels with each invitation: an iCalendar (RFC 5545 / iTIP) object.

Pure: the caller hands in everything, including the stamp, so the same meeting state always
gives the same bytes. One UID per meeting for its whole life; every change raises SEQUENCE,
which is how Outlook and Google tell a newer REQUEST (or a CANCEL) from an old one. Times are
written as Europe/London wall-clock times with a VTIMEZONE, which calendars need to place a
meeting correctly on either side of a clock change.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event, Timezone, vCalAddress, vText

from rethink.shared.events import MeetingMode, Person

LONDON = ZoneInfo("Europe/London")
PRODID = "-//Re-think//Meeting invitations//EN"
Method = Literal["REQUEST", "CANCEL"]


def meeting_uid(case_id: str, meeting_id: str, organizer: str) -> str:
    """Stable for the meeting's life: a reschedule or cancellation updates the same calendar entry."""
    return f"{case_id}-{meeting_id}@{organizer.rsplit('@', 1)[-1]}"


def _address(email: str, name: str, **params: str) -> vCalAddress:
    addr = vCalAddress(f"mailto:{email}")
    addr.params["CN"] = vText(name)
    for key, value in params.items():
        addr.params[key] = vText(value)
    return addr


@functools.lru_cache(maxsize=16)
def _london_zone(year: int) -> bytes:
    # The transitions of the meeting's year and the next are enough for any calendar to place it,
    # and keep the VTIMEZONE short (the full 1970-2038 history is several kilobytes). The same
    # for every meeting of a year, and two fifths of the work of a calendar: made once per year.
    return Timezone.from_tzinfo(LONDON, tzid="Europe/London", first_date=date(year - 1, 1, 1),
                                last_date=date(year + 1, 12, 31)).to_ical()


def meeting_calendar(*, method: Method, uid: str, sequence: int, case_reference: str, meeting_id: str,
                     starts_at: datetime, duration_minutes: int, mode: MeetingMode, venue: str | None,
                     organizer: str, attendees: Sequence[Person], stamp: datetime) -> bytes:
    """A VCALENDAR with one VEVENT: a REQUEST to book or update the meeting, or a CANCEL."""
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("method", method)
    event = Event()
    event.add("uid", uid)
    event.add("sequence", sequence)
    event.add("dtstamp", stamp)
    start = starts_at.astimezone(LONDON)
    event.add("dtstart", start)
    event.add("dtend", (starts_at + timedelta(minutes=duration_minutes)).astimezone(LONDON))
    # The summary names the case by its reference only: nothing about the child.
    event.add("summary", f"Re-think meeting, case reference {case_reference}")
    event.add("description", f"Re-think meeting {meeting_id} for case reference {case_reference} "
                             f"({'in person' if mode is MeetingMode.IN_PERSON else 'virtual'}).")
    if venue:
        event.add("location", venue)
    event.add("status", "CANCELLED" if method == "CANCEL" else "CONFIRMED")
    event.add("transp", "OPAQUE")
    event.add("organizer", _address(organizer, "Re-think"))
    for person in attendees:
        event.add("attendee", _address(str(person.email), person.name, ROLE="REQ-PARTICIPANT",
                                       PARTSTAT="NEEDS-ACTION", RSVP="TRUE"))
    cal.add_component(event)
    # The VTIMEZONE goes before the VEVENT that refers to it, as add_component would have put it.
    data = cal.to_ical()
    at = data.index(b"BEGIN:VEVENT\r\n")
    return data[:at] + _london_zone(starts_at.astimezone(LONDON).year) + data[at:]
