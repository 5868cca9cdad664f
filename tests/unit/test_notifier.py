from __future__ import annotations

import asyncio
import email
from datetime import UTC, datetime
from email import policy

from rethink.scheduling.mail import EmlFolderTransport
from rethink.scheduling.notifier import Notice, compose, london_time, to_email
from rethink.shared.events import MeetingMode, Person
from tests.support import request_payload

SENDER = "rethink@example.org"
CONTACT = "the Re-think coordinator, coordinator@pscp.example.org"
EVENT_ID = "0b6f7d2e-3c1a-4e59-9f00-5d2b7c9a1e11"
INVITEES = [Person(name="Sam Teacher", agency="Northside School Trust", email="dsl@school.example.org"),
            Person(name="Alex Social", agency="Children's Social Care", email="sw@council.example.org")]


def notice(kind="invitation", starts_at=datetime(2026, 7, 1, 9, 0, tzinfo=UTC)) -> Notice:
    return Notice(kind=kind, case_id="RT-ABCDEFGHJK", case_reference="CSC-2026-0042", meeting_id="M-1a2b3c4d", starts_at=starts_at,
                  duration_minutes=90, mode=MeetingMode.IN_PERSON, venue="Civic Offices, Room 2",
                  facilitator_name="Facilitator One", facilitator_email="facilitator.one@example.org")


def write(tmp_path, n=None):
    messages = compose(n or notice(), INVITEES, EVENT_ID, SENDER, datetime(2026, 6, 1, 12, 0, tzinfo=UTC), CONTACT)
    transport = EmlFolderTransport(tmp_path)
    for m in messages:
        asyncio.run(transport.deliver(m.key, m.sender, str(m.recipient.email), to_email(m).as_bytes()))
    return {p.name: p.read_bytes() for p in sorted(tmp_path.iterdir())}


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=policy.default)


def text(msg) -> str:
    return msg.get_body(("plain",)).get_content()


def html(msg) -> str:
    return msg.get_body(("html",)).get_content()


def ics(msg) -> str:
    [attachment] = list(msg.iter_attachments())
    return attachment.get_content()


def test_each_invitee_gets_a_parseable_eml_file_named_after_the_event(tmp_path):
    files = write(tmp_path)
    assert sorted(files) == [f"{EVENT_ID}-000.eml", f"{EVENT_ID}-001.eml"]
    msg = parse(files[f"{EVENT_ID}-001.eml"])
    assert msg["To"].addresses[0].addr_spec == "sw@council.example.org"
    assert msg["From"].addresses[0].addr_spec == SENDER
    assert msg["Subject"] == "Re-think meeting for case reference CSC-2026-0042 \u2014 invitation"
    assert msg["Message-ID"] == f"<{EVENT_ID}-001@example.org>"
    body = msg.get_body(("plain",)).get_content()
    assert body.startswith("Dear Alex Social,")
    assert "Facilitator One <facilitator.one@example.org>" in body and "Civic Offices, Room 2" in body


def test_the_time_is_given_in_london_time(tmp_path):
    body = text(parse(write(tmp_path)[f"{EVENT_ID}-000.eml"]))
    assert "Wednesday 1 July 2026, 10:00 to 11:30 UK time (BST)" in body
    assert london_time(datetime(2026, 12, 1, 9, 0, tzinfo=UTC), 60) == "Tuesday 1 December 2026, 09:00 to 10:00 UK time (GMT)"


def test_messages_name_the_case_by_reference_only(tmp_path):
    description = request_payload()["description"]
    for raw in write(tmp_path).values():
        msg = parse(raw)
        for part in (msg["Subject"], text(msg), html(msg), ics(msg)):
            assert description not in part and "neglect" not in part and "attendance" not in part
        assert all("CSC-2026-0042" in part for part in (msg["Subject"], text(msg), html(msg), ics(msg)))


def test_the_footer_says_why_it_was_received_and_whom_to_contact(tmp_path):
    msg = parse(write(tmp_path)[f"{EVENT_ID}-000.eml"])
    footer = " ".join(text(msg).split("\n-- \n", 1)[1].split())
    assert "You received this because you are named as a participant" in footer
    assert CONTACT in footer
    assert "You received this because you are named as a participant" in html(msg) and CONTACT in html(msg)


def test_changes_and_cancellations_say_so(tmp_path):
    assert parse(write(tmp_path / "c", notice("changed"))[f"{EVENT_ID}-000.eml"])["Subject"].endswith("changed")
    cancelled = parse(write(tmp_path / "x", notice("cancelled"))[f"{EVENT_ID}-000.eml"])
    assert cancelled["Subject"].endswith("cancelled") and "has been cancelled" in text(cancelled)


def test_a_redelivered_event_rewrites_the_same_files(tmp_path):
    first = write(tmp_path)
    second = write(tmp_path)
    assert second == first  # same names, same bytes, no temp files left behind
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".eml")]
