"""The outbox against a real SMTP server (aiosmtpd): what arrives, retries, and restarts mid-send.

Time is a FixedClock moved by hand, so backoff and claim timeouts are stepped through, not
waited for. Each outbox instance opens the database afresh, as a restarted service would.
Every test runs on SQLite (the embedded default) and on the machine's PostgreSQL, in a schema
of its own that is dropped afterwards.
"""

from __future__ import annotations

import asyncio
import email
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email import policy

import icalendar
import pytest
from sqlalchemy import create_engine, select, text

from rethink.scheduling.mail import SmtpTransport
from rethink.scheduling.notifier import Notice, compose, compose_reminder
from rethink.scheduling.outbox import ERASED, Outbox, RetryPolicy
from rethink.scheduling.outbox import outbox as outbox_table
from rethink.scheduling.reminders import ActionItem, Timings, due
from rethink.shared.clock import FixedClock
from rethink.shared.events import MeetingMode, Person
from rethink.shared.projection import make_engine
from rethink.shared.workdays import england_and_wales
from tests.support import wait_for

SENDER = "rethink@example.org"
CONTACT = "the Re-think coordinator at coordinator@pscp.example.org"
NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
INVITEES = [Person(name="Sam Teacher", agency="Northside School Trust", email="dsl@school.example.org"),
            Person(name="Alex Social", agency="Children's Social Care", email="sw@council.example.org")]
POLICY = RetryPolicy(max_attempts=5, backoff=timedelta(seconds=30), backoff_max=timedelta(minutes=10),
                     claim_timeout=timedelta(minutes=5))


def invitations(event_id: str = "ev-1"):
    notice = Notice(kind="invitation", case_id="RT-ABCDEFGHJK", case_reference="CSC-2026-0042",
                    meeting_id="M-1a2b3c4d", starts_at=datetime(2026, 12, 7, 10, 0, tzinfo=UTC), duration_minutes=90,
                    mode=MeetingMode.IN_PERSON, venue="Civic Offices", facilitator_name="Facilitator One",
                    facilitator_email="facilitator.one@example.org")
    return compose(notice, INVITEES, event_id, SENDER, NOW, CONTACT)


def action_reminder():
    item = ActionItem("RT-ABCDEFGHJK", "CSC-2026-0042", "M-1a2b3c4d-A1", "M-1a2b3c4d", INVITEES[1],
                      date(2026, 12, 9), "Facilitator One", "facilitator.one@example.org")
    [reminder] = due([item], NOW, Timings(), england_and_wales())
    return compose_reminder(reminder, SENDER, CONTACT, NOW)


PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'outbox.db'}"
        return
    schema = f"outbox_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # no PostgreSQL on this machine: say so rather than pass quietly
        admin.dispose()
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 not reachable: {type(exc).__name__}")
    try:
        yield f"{PG}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def outbox(url: str, clock: FixedClock, port: int, transport=None, policy: RetryPolicy = POLICY) -> Outbox:
    box = Outbox(make_engine(url), clock,
                 transport or SmtpTransport("127.0.0.1", port, "none", None, None, timeout=10), policy)
    box.create_schema()
    return box


def parsed(handler) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(data, policy=policy.default) for _, _, data in handler.received]


def message_ids(handler) -> list[str]:
    return sorted(m["Message-ID"] for m in parsed(handler))


async def test_messages_arrive_with_headers_bodies_and_calendar_entries_that_parse(smtp_server, db):
    handler, port = smtp_server
    box = outbox(db, FixedClock(NOW), port)
    assert box.enqueue(invitations(), "invitation") == 2
    assert box.enqueue([action_reminder()], "reminder") == 1

    assert (await box.drain()).sent == 3

    envelopes = sorted((frm, tuple(to)) for frm, to, _ in handler.received)
    assert envelopes == [(SENDER, ("dsl@school.example.org",)), (SENDER, ("sw@council.example.org",)),
                         (SENDER, ("sw@council.example.org",))]
    by_subject = {m["Subject"]: m for m in parsed(handler)}
    invite = next(m for s, m in by_subject.items() if s.endswith("invitation"))
    reminder = next(m for s, m in by_subject.items() if s.startswith("Reminder"))
    assert invite["From"].addresses[0].addr_spec == SENDER and invite["Date"] is not None
    assert invite["Message-ID"].endswith("@example.org>")
    assert "You received this because" in invite.get_body(("plain",)).get_content()
    assert invite.get_body(("html",)).get_content().startswith("<!DOCTYPE html>")
    [ics] = list(invite.iter_attachments())
    cal = icalendar.Calendar.from_ical(ics.get_content())
    [event] = cal.walk("VEVENT")
    assert cal["METHOD"] == "REQUEST" and str(event["ORGANIZER"]) == f"mailto:{SENDER}"
    assert event.decoded("DTSTART").astimezone(UTC) == datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    assert "M-1a2b3c4d-A1" in reminder["Subject"] and not list(reminder.iter_attachments())
    assert [r["status"] for r in box.list()] == ["sent"] * 3

    # The same messages recorded again (a redelivered event, a reminder run) are not sent again.
    assert box.enqueue(invitations(), "invitation") == 0 and box.enqueue([action_reminder()], "reminder") == 0
    assert (await box.drain()).sent == 0
    assert len(handler.received) == 3


async def test_a_server_that_refuses_then_recovers_gets_each_message_exactly_once(smtp_server, db):
    handler, port = smtp_server
    handler.refusals_left = 3
    clock = FixedClock(NOW)
    box = outbox(db, clock, port)
    box.enqueue(invitations(), "invitation")

    first = await box.drain()  # both refused (451): each waits 30 s
    assert (first.sent, first.retrying) == (0, 2)
    assert (await box.drain()).sent == 0  # not due yet: nothing is hammered
    clock.advance(timedelta(seconds=30))
    second = await box.drain()  # the first is refused once more (now waits 60 s), the second goes through
    assert (second.sent, second.retrying) == (1, 1)
    clock.advance(timedelta(seconds=30))
    assert (await box.drain()).sent == 0
    clock.advance(timedelta(seconds=30))
    assert (await box.drain()).sent == 1

    assert handler.attempts == 5
    assert message_ids(handler) == sorted(f"<{m.key}@example.org>" for m in invitations())
    rows = sorted(box.list(), key=lambda r: r["id"])
    assert [(r["status"], r["attempts"]) for r in rows] == [("sent", 3), ("sent", 2)]
    clock.advance(timedelta(hours=1))
    assert (await box.drain()).sent == 0 and len(handler.received) == 2


async def test_messages_that_keep_failing_are_marked_failed_listed_and_can_be_retried(smtp_server, db):
    handler, port = smtp_server
    handler.refusals_left = 100
    clock = FixedClock(NOW)
    box = outbox(db, clock, port, policy=RetryPolicy(max_attempts=2,
                                                                         backoff=timedelta(seconds=30)))
    box.enqueue(invitations()[:1], "invitation")
    await box.drain()
    clock.advance(timedelta(seconds=30))
    assert (await box.drain()).failed == 1
    [failed] = box.list(failed_only=True)
    assert failed["status"] == "failed" and failed["attempts"] == 2 and "451" in failed["last_error"]
    clock.advance(timedelta(hours=2))
    assert (await box.drain()).sent == 0  # failed stays failed until someone retries

    handler.refusals_left = 0
    assert box.retry(None) == [failed["id"]]
    assert (await box.drain()).sent == 1
    assert box.list(failed_only=True) == [] and len(handler.received) == 1
    assert box.retry(None) == []


async def test_a_permanent_refusal_fails_at_once(smtp_server, db):
    handler, port = smtp_server
    handler.refusals_left, handler.refusal = 1, "550 5.1.1 Mailbox unavailable"
    box = outbox(db, FixedClock(NOW), port)
    box.enqueue(invitations()[:1], "invitation")
    assert (await box.drain()).failed == 1
    [row] = box.list(failed_only=True)
    assert row["attempts"] == 1 and "550" in row["last_error"]


class StallOn:
    """Hands messages to SMTP, but stalls forever on one key: before or after the server has it."""

    def __init__(self, inner: SmtpTransport, key: str, after_send: bool) -> None:
        self.inner, self.key, self.after_send = inner, key, after_send

    async def deliver(self, key: str, sender: str, recipient: str, data: bytes) -> None:
        if key == self.key and not self.after_send:
            await asyncio.Event().wait()
        await self.inner.deliver(key, sender, recipient, data)
        if key == self.key:
            await asyncio.Event().wait()


async def _die_while_sending(box: Outbox, row_id: int, server_has=None) -> None:
    """Run a drain until it is stuck in the middle of sending ``row_id``, then kill it.
    With ``server_has``, wait also until the SMTP server holds that many messages (the kill must
    come after the server accepted it, however slow the machine)."""
    task = asyncio.create_task(box.drain())

    async def status():
        return box.status_of(row_id)

    await wait_for(status, lambda s: s == "sending", what="the message to be claimed")
    if server_has is not None:
        handler, count = server_has

        async def received():
            return len(handler.received)

        await wait_for(received, lambda n: n >= count, what="the server to accept the message")
    task.cancel()  # like a killed process: no handler runs, the row stays claimed
    await asyncio.gather(task, return_exceptions=True)
    box.engine.dispose()


async def test_a_restart_mid_send_sends_nothing_twice(smtp_server, db):
    handler, port = smtp_server
    clock = FixedClock(NOW)
    messages = [*invitations(), action_reminder()]
    smtp = SmtpTransport("127.0.0.1", port, "none", None, None, timeout=10)
    before = outbox(db, clock, port, StallOn(smtp, messages[1].key, after_send=False))
    before.enqueue(messages, "invitation")
    ids = [r["id"] for r in sorted(before.list(), key=lambda r: r["id"])]
    await _die_while_sending(before, ids[1])
    assert message_ids(handler) == [f"<{messages[0].key}@example.org>"]

    after = outbox(db, clock, port)  # a new process; the same messages are recorded again on its start
    assert after.enqueue(messages, "invitation") == 0
    assert (await after.drain()).sent == 1  # the third; the claimed one may still be in another sender's hands
    clock.advance(POLICY.claim_timeout)
    assert (await after.drain()).sent == 1  # the interrupted one, now taken as abandoned
    assert (await after.drain()).sent == 0

    assert message_ids(handler) == sorted(f"<{m.key}@example.org>" for m in messages)
    assert [r["status"] for r in after.list()] == ["sent"] * 3
    interrupted = next(r for r in after.list() if r["id"] == ids[1])
    assert interrupted["attempts"] == 2


async def test_a_send_cut_off_after_the_server_accepted_it_is_repeated_as_the_same_message(smtp_server, db):
    """The documented limit: between the server's 250 and our commit, at-least-once is the best on offer."""
    handler, port = smtp_server
    clock = FixedClock(NOW)
    [message] = invitations()[:1]
    smtp = SmtpTransport("127.0.0.1", port, "none", None, None, timeout=10)
    before = outbox(db, clock, port, StallOn(smtp, message.key, after_send=True))
    before.enqueue([message], "invitation")
    await _die_while_sending(before, before.list()[0]["id"], server_has=(handler, 1))

    after = outbox(db, clock, port)
    clock.advance(POLICY.claim_timeout)
    assert (await after.drain()).sent == 1

    first, second = handler.received
    assert first[2] == second[2]  # byte for byte, with one Message-ID: recognisably the same message
    [row] = after.list()
    assert row["status"] == "sent" and "interrupted" not in (row["last_error"] or "")


async def test_sent_emails_lose_their_content_after_the_keep_period_but_are_never_sent_again(smtp_server, db):
    handler, port = smtp_server
    box = outbox(db, FixedClock(NOW), port)
    box.enqueue(invitations(), "invitation")
    assert (await box.drain()).sent == 2
    box.enqueue([action_reminder()], "reminder")  # queued later: still waiting to be sent

    assert box.erase_sent_before(NOW - timedelta(days=1)) == 0  # nothing that old yet
    assert box.erase_sent_before(NOW + timedelta(seconds=1)) == 2
    with box.engine.connect() as conn:
        rows = conn.execute(select(outbox_table.c.status, outbox_table.c.recipient, outbox_table.c.sender,
                                   outbox_table.c.data)).all()
    erased = [r for r in rows if r.status == "sent"]
    assert [(r.recipient, r.sender, r.data) for r in erased] == [(ERASED, ERASED, b"")] * 2
    assert [r.recipient for r in rows if r.status == "pending"] == ["sw@council.example.org"]  # untouched
    assert all(b"example.org" not in r.data for r in erased)

    # A late redelivery of the invitations' event finds them sent: nothing new is sent.
    assert box.enqueue(invitations(), "invitation") == 0
    assert (await box.drain()).sent == 1 and len(handler.received) == 3


async def test_two_senders_on_one_outbox_send_each_message_once(smtp_server, db):
    """Two scheduling replicas: each drains the shared outbox; a row one has claimed the other skips."""
    handler, port = smtp_server
    clock = FixedClock(NOW)
    messages = [m for i in range(10) for m in invitations(f"ev-{i}")]
    first, second = outbox(db, clock, port), outbox(db, clock, port)
    # Both replicas record the same messages (each handled the event, or a redelivery did).
    assert (first.enqueue(messages, "invitation"), second.enqueue(messages, "invitation")) == (len(messages), 0)

    a, b = await asyncio.gather(first.drain(), second.drain())

    assert a.sent > 0 and b.sent > 0  # they really did work side by side...
    assert a.sent + b.sent == len(messages)  # ...and no message went out twice
    assert message_ids(handler) == sorted(f"<{m.key}@example.org>" for m in messages)
    assert [r["status"] for r in first.list(limit=100)] == ["sent"] * len(messages)


async def test_a_key_another_writer_records_between_our_look_and_our_insert_is_left_to_it(smtp_server, db,
                                                                                         monkeypatch):
    """A batch that collides with another writer's row is recorded one message at a time: the rest
    go in, the colliding one is left as that writer recorded it."""
    handler, port = smtp_server
    clock = FixedClock(NOW)
    ours, theirs = outbox(db, clock, port), outbox(db, clock, port)
    messages = invitations()
    assert theirs.enqueue(messages[1:], "invitation", "RT-ABCDEFGHJK") == 1
    monkeypatch.setattr(Outbox, "_known", staticmethod(lambda conn, keys: set()))  # our look misses it

    assert ours.enqueue(messages, "invitation", "RT-ABCDEFGHJK") == 1

    assert sorted(r["recipient"] for r in ours.list()) == ["dsl@school.example.org", "sw@council.example.org"]
    assert (await ours.drain()).sent == 2
    assert message_ids(handler) == sorted(f"<{m.key}@example.org>" for m in messages)
    assert ours.erase_case("RT-ABCDEFGHJK") == 2  # both are known to belong to the case
