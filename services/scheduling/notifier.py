"""What the emails say: meeting invitations, changes, cancellations and reminders, as MIME messages.

A message names the child's case only by its case reference: never the description, the
reasons given, an action's wording, or anything else about the child or family. Free-text
reasons for a change, a cancellation or an escalation are left out for the same reason (they
may contain such details). Every message has a plain-text body, the same as HTML, and a
footer saying why the recipient got it and whom to contact. Invitations carry an iCalendar
attachment (see ``ical``). Pure: sending is the outbox's job (``outbox``, ``mail``).
"""

from __future__ import annotations

import hashlib
import html
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Literal
from zoneinfo import ZoneInfo

from email_validator import EmailNotValidError, validate_email

from rethink.shared.events import MeetingMode, Person, deliverable

from . import ical
from .reminders import ActionItem, MeetingItem, Reminder, StageItem

LONDON = ZoneInfo("Europe/London")
Kind = Literal["invitation", "changed", "cancelled"]
_MODES = {MeetingMode.IN_PERSON: "In person", MeetingMode.VIRTUAL: "Virtual"}


@dataclass(frozen=True)
class Email:
    """One message to one person. ``key`` is stable across redeliveries and restarts of its cause."""

    key: str
    sender: str
    recipient: Person
    subject: str
    text: str
    html: str
    sent_at: datetime
    calendar: bytes | None = None
    method: str | None = None  # the iTIP method of the calendar attachment


Invitation = Email  # the name before reminders arrived


@dataclass(frozen=True)
class Notice:
    """What changed about a meeting, as the invitees need to know it."""

    kind: Kind
    case_id: str
    case_reference: str
    meeting_id: str
    starts_at: datetime
    duration_minutes: int
    mode: MeetingMode
    venue: str | None
    facilitator_name: str
    facilitator_email: str
    sequence: int = 0  # 0 when scheduled; each change or cancellation adds one


@dataclass(frozen=True)
class _Content:
    subject: str
    opening: str
    details: list[tuple[str, str]]
    why: str


def london_time(starts_at: datetime, duration_minutes: int) -> str:
    start = starts_at.astimezone(LONDON)
    end = (starts_at + timedelta(minutes=duration_minutes)).astimezone(LONDON)
    day = f"{start:%A} {start.day} {start:%B %Y}"
    until = f"{end:%H:%M}" if end.date() == start.date() else f"{end:%A} {end.day} {end:%B %Y} {end:%H:%M}"
    return f"{day}, {start:%H:%M} to {until} UK time ({start.tzname()})"


def long_date(day: date) -> str:
    return f"{day:%A} {day.day} {day:%B %Y}"


def _participant(reference: str) -> str:
    return f"you are named as a participant in a Re-think request for case reference {reference}"


def _meeting_details(n: Notice | MeetingItem) -> list[tuple[str, str]]:
    return [
        ("When", london_time(n.starts_at, n.duration_minutes)),
        ("Duration", f"{n.duration_minutes} minutes"),
        ("Mode", _MODES[n.mode]),
        ("Venue", n.venue or "to be confirmed by the facilitator"),
        ("Facilitator", f"{n.facilitator_name} <{n.facilitator_email}>"),
        ("Meeting", n.meeting_id),
    ]


def _page(c: _Content, contact: str) -> Callable[[Person], tuple[str, str]]:
    """The same words as plain text and as HTML, for each recipient: all but the greeting written once."""
    footer = (f"You received this because {c.why}. Please do not reply with details about the child or "
              f"family by email. For questions, or if you think this reached you in error, contact {contact}.")
    width = max(len(label) for label, _ in c.details) + 2
    text = "\n".join([
        "", textwrap.fill(c.opening, width=76), "",
        *(f"{label + ':':<{width}}{value}" for label, value in c.details),
        "", "-- ", textwrap.fill(footer, width=76),
    ]) + "\n"
    e = html.escape
    rows = "".join(f"<tr><th align=\"left\">{e(label)}</th><td>{e(value)}</td></tr>" for label, value in c.details)
    body = (f"<p>{e(c.opening)}</p><table>{rows}</table><hr><p><small>{e(footer)}</small></p></body></html>\n")

    def render(person: Person) -> tuple[str, str]:
        return (f"Dear {person.name},\n{text}",
                f"<!DOCTYPE html><html><body><p>Dear {e(person.name)},</p>{body}")

    return render


def _email(key: str, content: _Content, page: Callable[[Person], tuple[str, str]], person: Person, sender: str,
           sent_at: datetime, calendar: bytes | None = None, method: str | None = None) -> Email:
    text, body = page(person)
    return Email(key=key, sender=sender, recipient=mailable(person), subject=content.subject, text=text, html=body,
                 sent_at=sent_at, calendar=calendar, method=method)


def mailable(person: Person) -> Person:
    """The person with their address's domain in its ASCII form (``bücher.example.org`` ->
    ``xn--bcher-kva.example.org``), as a To header and an SMTP recipient must carry it; the local
    part is ASCII already (``deliverable``). Left as it is if it has no such form: the transport
    then says what is wrong with it, for that message alone."""
    address = str(person.email)
    if address.isascii():
        return person
    try:
        ascii_address = validate_email(address, check_deliverability=False).ascii_email
    except EmailNotValidError:
        return person
    return person.model_copy(update={"email": ascii_address}) if ascii_address else person


def _notice_content(n: Notice) -> _Content:
    opening = {
        "invitation": f"You are invited to a Re-think meeting for case reference {n.case_reference}. "
                      "The calendar invitation is attached.",
        "changed": f"The Re-think meeting for case reference {n.case_reference} has changed. "
                   "The new arrangements are below; the attached update moves it in your calendar.",
        "cancelled": f"The Re-think meeting for case reference {n.case_reference} has been cancelled. "
                     "It was arranged as below; the attached cancellation removes it from your calendar.",
    }[n.kind]
    return _Content(f"Re-think meeting for case reference {n.case_reference} \u2014 {n.kind}", opening,
                    _meeting_details(n), _participant(n.case_reference))


def compose(notice: Notice, invitees: Sequence[Person], event_id: str, sender: str, sent_at: datetime,
            contact: str | None = None) -> list[Email]:
    """One message per invitee; keys from the event id and position, so a redelivery repeats them.

    An invitee this system cannot mail (``deliverable``: only ever from the log, as new ones are
    refused) gets none; the others keep their positions, so their keys do not move.
    """
    method: ical.Method = "CANCEL" if notice.kind == "cancelled" else "REQUEST"
    calendar = ical.meeting_calendar(
        method=method, uid=ical.meeting_uid(notice.case_id, notice.meeting_id, sender), sequence=notice.sequence,
        case_reference=notice.case_reference, meeting_id=notice.meeting_id, starts_at=notice.starts_at,
        duration_minutes=notice.duration_minutes, mode=notice.mode, venue=notice.venue, organizer=sender,
        attendees=invitees, stamp=sent_at)
    content = _notice_content(notice)
    page = _page(content, contact or sender)
    return [_email(f"{event_id}-{i:03d}", content, page, p, sender, sent_at, calendar, method)
            for i, p in enumerate(invitees) if deliverable(str(p.email))]


def _reminder_content(r: Reminder) -> _Content:
    item = r.item
    if isinstance(item, MeetingItem):
        day = long_date(item.starts_at.astimezone(LONDON).date())
        return _Content(f"Reminder: Re-think meeting for case reference {item.case_reference} on {day}",
                        f"This is a reminder of the Re-think meeting for case reference {item.case_reference}.",
                        _meeting_details(item), _participant(item.case_reference))
    if isinstance(item, ActionItem):
        when = "today" if r.working_days_before == 0 else f"on {long_date(item.due_date)}"
        return _Content(
            f"Reminder: Re-think action {item.action_id} for case reference {item.case_reference} is due {when}",
            f"An action you own from the Re-think meeting for case reference {item.case_reference} is due {when}. "
            "Its wording is in the meeting record; ask the facilitator if you need it again.",
            [("Action", item.action_id), ("Due", long_date(item.due_date)), ("Meeting", item.meeting_id),
             ("Facilitator", f"{item.facilitator_name} <{item.facilitator_email}>")],
            f"you are recorded as the owner of an action agreed at the Re-think meeting for case reference "
            f"{item.case_reference}")
    assert isinstance(item, StageItem)
    return _Content(
        f"Reminder: escalation stage {item.stage} for case reference {item.case_reference} "
        f"is due by {long_date(item.deadline)}",
        f"The professional disagreement about case reference {item.case_reference} is at escalation stage "
        f"{item.stage} ({item.stage_name}). Its holder should resolve it, or advance it, by the deadline below. "
        "If you are not the holder, please make sure they know.",
        [("Stage", f"{item.stage}: {item.stage_name}"), ("Holder", item.holder),
         ("Deadline", long_date(item.deadline)), ("Escalation", item.escalation_id)],
        f"you take part in case reference {item.case_reference}, whose disagreement is under the escalation "
        "protocol")


def compose_reminder(reminder: Reminder, sender: str, contact: str, sent_at: datetime) -> Email:
    content = _reminder_content(reminder)
    return _email(reminder.key, content, _page(content, contact), reminder.recipient, sender, sent_at)


def to_email(m: Email) -> EmailMessage:
    """The RFC 5322 message: text and HTML alternatives, plus the calendar entry when there is one."""
    msg = EmailMessage()
    msg["From"] = Address("Re-think", addr_spec=m.sender)
    msg["To"] = Address(m.recipient.name, addr_spec=str(m.recipient.email))
    msg["Subject"] = m.subject
    msg["Date"] = format_datetime(m.sent_at)
    # Stable per message: a copy sent again after an interrupted send is recognisably the same message.
    msg["Message-ID"] = f"<{m.key}@{m.sender.rsplit('@', 1)[-1]}>"
    msg.set_content(m.text)
    msg.add_alternative(m.html, subtype="html")
    if m.calendar is not None:
        msg.add_attachment(m.calendar.decode(), subtype="calendar", filename="invite.ics",
                           params={"method": m.method or "REQUEST"})
    # Boundaries from the key, not random: the same message renders to the same bytes every time.
    digest = hashlib.sha256(m.key.encode()).hexdigest()[:24]
    for i, part in enumerate(p for p in msg.walk() if p.is_multipart()):
        part.set_boundary(f"==rethink-{digest}-{i}")
    return msg
