"""Telling invitees about their meeting: the port, the messages, and the default .eml-folder adapter.

A message names the child's case only by its case reference: never the description, the
reasons given, or anything else about the child or family. Free-text reasons for a change
or cancellation are left out for the same reason (they may contain such details).
"""

from __future__ import annotations

import os
import tempfile
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

from rethink.shared.events import MeetingMode, Person

LONDON = ZoneInfo("Europe/London")
Kind = Literal["invitation", "changed", "cancelled"]
_MODES = {MeetingMode.IN_PERSON: "In person", MeetingMode.VIRTUAL: "Virtual"}


@dataclass(frozen=True)
class Invitation:
    """One message to one person. ``key`` is stable across redeliveries of the event it came from."""

    key: str
    sender: str
    recipient: Person
    subject: str
    body: str
    sent_at: datetime


class Notifier(Protocol):
    def send(self, messages: Sequence[Invitation]) -> None: ...


@dataclass(frozen=True)
class Notice:
    """What changed about a meeting, as the invitees need to know it."""

    kind: Kind
    case_reference: str
    meeting_id: str
    starts_at: datetime
    duration_minutes: int
    mode: MeetingMode
    venue: str | None
    facilitator_name: str
    facilitator_email: str


def london_time(starts_at: datetime, duration_minutes: int) -> str:
    start = starts_at.astimezone(LONDON)
    end = (starts_at + timedelta(minutes=duration_minutes)).astimezone(LONDON)
    day = f"{start:%A} {start.day} {start:%B %Y}"
    until = f"{end:%H:%M}" if end.date() == start.date() else f"{end:%A} {end.day} {end:%B %Y} {end:%H:%M}"
    return f"{day}, {start:%H:%M} to {until} UK time ({start.tzname()})"


def _subject(n: Notice) -> str:
    return f"Re-think meeting for case reference {n.case_reference} \u2014 {n.kind}"


def _body(n: Notice, person: Person, sender: str) -> str:
    opening = {
        "invitation": f"You are invited to a Re-think meeting for case reference {n.case_reference}.",
        "changed": f"The Re-think meeting for case reference {n.case_reference} has changed. "
                   "The new arrangements are below.",
        "cancelled": f"The Re-think meeting for case reference {n.case_reference} has been cancelled. "
                     "It was arranged as below; please remove it from your diary.",
    }[n.kind]
    lines = [
        f"Dear {person.name},", "", opening, "",
        f"When:        {london_time(n.starts_at, n.duration_minutes)}",
        f"Duration:    {n.duration_minutes} minutes",
        f"Mode:        {_MODES[n.mode]}",
        f"Venue:       {n.venue or 'to be confirmed by the facilitator'}",
        f"Facilitator: {n.facilitator_name} <{n.facilitator_email}>",
        f"Meeting:     {n.meeting_id}",
        "",
        "-- ",
        textwrap.fill(
            f"You received this because you are named as a participant in a Re-think request for case "
            f"reference {n.case_reference}. Please do not reply with details about the child or family by "
            f"email. For questions, or if you think this reached you in error, contact the safeguarding "
            f"partnership at {sender}.", width=76),
    ]
    return "\n".join(lines) + "\n"


def compose(notice: Notice, invitees: Sequence[Person], event_id: str, sender: str,
            sent_at: datetime) -> list[Invitation]:
    """One message per invitee; keys from the event id and position, so a redelivery repeats them."""
    return [
        Invitation(key=f"{event_id}-{i:03d}", sender=sender, recipient=p, subject=_subject(notice),
                   body=_body(notice, p, sender), sent_at=sent_at)
        for i, p in enumerate(invitees)
    ]


def to_email(m: Invitation) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = Address("Re-think", addr_spec=m.sender)
    msg["To"] = Address(m.recipient.name, addr_spec=str(m.recipient.email))
    msg["Subject"] = m.subject
    msg["Date"] = format_datetime(m.sent_at)
    msg["Message-ID"] = f"<{m.key}@{m.sender.rsplit('@', 1)[-1]}>"
    msg.set_content(m.body)
    return msg


class EmlFolderNotifier:
    """Writes each message as an RFC 5322 file, for a mail relay or a person to pick up.

    The same message always lands in the same file, written whole (temp file, then rename),
    so a redelivered event rewrites rather than duplicates, and no reader sees half a file.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def send(self, messages: Sequence[Invitation]) -> None:
        if not messages:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for m in messages:
            data = to_email(m).as_bytes()
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, self.folder / f"{m.key}.eml")
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
