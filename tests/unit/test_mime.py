"""``mime.render`` writes the very bytes ``to_email(m).as_bytes()`` would, for any message it is given.

``to_email`` builds each message with the ``email`` package and stays the definition; the
outbox stores what ``render`` writes, so the two must never drift apart: every case here
compares whole byte strings, for invitations (with a calendar), changes, cancellations and
reminders, and for names, subjects and bodies drawn at random.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from rethink.scheduling.mime import render
from rethink.scheduling.notifier import Email, Notice, compose, to_email
from rethink.shared.events import MeetingMode, Person

SENDER = "rethink@example.org"
CONTACT = "the Re-think coordinator, coordinator@pscp.example.org"
STAMP = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PEOPLE = [Person(name="Sam Teacher", agency="Northside School Trust", email="dsl@school.example.org"),
          Person(name="Zoë O'Brien-Łukasz", agency="Children's Social Care", email="zoe@council.example.org"),
          Person(name="Dr. \"Jo\" Smith, MBE", agency="Community Health", email="jo.smith@nhs-trust.example.org"),
          Person(name="王小明", agency="Police", email="wang@police.example.org"),
          Person(name="A" * 120 + " Very-Long-Name", agency="Police", email="long.name@police.example.org")]


def notice(kind="invitation", venue="Civic Offices, Room 2", starts_at=datetime(2026, 7, 1, 9, 0, tzinfo=UTC)):
    return Notice(kind=kind, case_id="RT-ABCDEFGHJK", case_reference="CSC-2026-0042", meeting_id="M-1a2b3c4d",
                  starts_at=starts_at, duration_minutes=90, mode=MeetingMode.IN_PERSON, venue=venue,
                  facilitator_name="Facilitator One", facilitator_email="facilitator.one@example.org")


def same(messages: list[Email]) -> None:
    assert render(messages) == [to_email(m).as_bytes() for m in messages]


@pytest.mark.parametrize("kind", ["invitation", "changed", "cancelled"])
def test_meeting_notices_render_to_the_same_bytes(kind):
    same(compose(notice(kind), PEOPLE, "0b6f7d2e-3c1a-4e59-9f00-5d2b7c9a1e11", SENDER, STAMP, CONTACT))


def test_a_venue_in_another_script_and_a_winter_meeting_render_to_the_same_bytes():
    n = notice(venue="Salle de réunion, Hôtel de Ville — 会议室 " * 5, starts_at=datetime(2026, 12, 1, 9, tzinfo=UTC))
    same(compose(n, PEOPLE, "ev-1", SENDER, STAMP, CONTACT))


def test_messages_without_a_calendar_render_to_the_same_bytes():
    same([dataclasses.replace(m, calendar=None, method=None)
          for m in compose(notice(), PEOPLE, "ev-2", SENDER, STAMP, CONTACT)])


def test_a_body_the_email_package_would_base64_is_left_to_it():
    [m] = compose(notice(), PEOPLE[3:4], "ev-3", SENDER, STAMP, CONTACT)
    m = dataclasses.replace(m, html="<p>" + "会议室" * 200 + "</p>\n")
    [data] = render([m])
    assert b"Content-Transfer-Encoding: base64" in data and data == to_email(m).as_bytes()


def test_a_line_break_in_a_subject_is_refused_as_the_email_package_refuses_it():
    [m] = compose(notice(), PEOPLE[:1], "ev-4", SENDER, STAMP, CONTACT)
    with pytest.raises(ValueError, match="linefeed"):
        render([dataclasses.replace(m, subject="Hello\nBcc: someone@example.org")])


# Mostly ASCII with the characters that change an encoding (=, spaces at line ends, CR, tabs,
# long lines, accents), or anything at all.
_latin = st.sampled_from([*"abcXYZ019 .,;:<>@\"'-=\t\r\n", "é", "—", "ł", " " * 40, "word " * 20])
_text = st.one_of(st.lists(_latin, max_size=80).map("".join),
                  st.text(st.characters(exclude_categories=("Cs",)), max_size=300))
_line = st.one_of(st.lists(_latin.filter(lambda c: c not in "\r\n"), min_size=1, max_size=30).map("".join),
                  st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=90))


@st.composite
def messages(draw) -> Email:
    try:
        person = Person(name=draw(_line), agency="Agency", email=draw(st.sampled_from(
            ["a@example.org", "first.last@council.example.org", "x_y+z@nhs-trust.example.org"])))
    except ValidationError:
        person = PEOPLE[draw(st.integers(0, len(PEOPLE) - 1))]
    calendar = draw(st.one_of(st.none(), _text.map(lambda s: ("BEGIN:VCALENDAR\r\n" + s).encode())))
    return Email(key=draw(st.sampled_from(["ev-000", "0b6f7d2e-3c1a-4e59-9f00-5d2b7c9a1e11-003", "r|M-1|2026-12-03"])),
                 sender=SENDER, recipient=person, subject=draw(_line), text=draw(_text), html=draw(_text),
                 sent_at=STAMP + timedelta(minutes=draw(st.integers(0, 10**6))), calendar=calendar,
                 method=draw(st.sampled_from(["REQUEST", "CANCEL"])) if calendar else None)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages(), min_size=1, max_size=3))
def test_any_message_renders_to_the_same_bytes(batch):
    same(batch)


def test_a_domain_in_another_script_is_addressed_in_its_ascii_form():
    # A To header (and an SMTP recipient) carries a domain as IDNA; as typed, the header would hold
    # an encoded-word where the domain belongs, which no mail server reads as an address.
    person = Person(name="Jo Bücher", agency="Community Health", email="jo@bücher.example.org")
    [m] = compose(notice(), [person], "ev-idn", SENDER, STAMP, CONTACT)
    assert m.recipient.email == "jo@xn--bcher-kva.example.org" and m.recipient.name == "Jo Bücher"
    [data] = render([m])
    to = next(line for line in data.splitlines() if line.startswith(b"To:"))
    assert to.endswith(b"<jo@xn--bcher-kva.example.org>") and b"=?utf-8?" in to  # the name encoded, not the domain
    same([m])
