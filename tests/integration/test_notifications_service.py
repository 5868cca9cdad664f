"""The scheduling service's emails end to end: events in the log -> outbox -> a real SMTP server.

The service runs on a FixedClock, so reminder days and retry backoff are stepped through by
moving the clock; the events are seeded into the log as the owning services would write them.
"""

from __future__ import annotations

import asyncio
import email
import json
import sys
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from email import policy

import pytest

from rethink.scheduling.app import build as scheduling
from rethink.shared.cli.supervisor import service_env
from rethink.shared.clock import FixedClock
from rethink.shared.events import (
    ActionItem,
    ActionRecorded,
    Attendee,
    ChecksConfirmed,
    EscalationRaised,
    FacilitatorAssigned,
    MeetingHeld,
    MeetingScheduled,
    Perspective,
    RequestSubmitted,
    Stages,
)
from tests.support import ask, request_payload, seed_case, wait_for

pytestmark = pytest.mark.nats

THURSDAY = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
MONDAY_MEETING = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
OWNER = {"name": "Alex Social", "agency": "Children's Social Care", "email": "sw@council.example.org"}


def opening(meeting_id: str, starts_at: datetime) -> list:
    request = RequestSubmitted.model_validate({k: v for k, v in request_payload().items() if k != "immediate_risk"})
    invitees = [request.requester.model_dump(include={"name", "agency", "email"}),
                *[p.model_dump() for p in request.invitees]]
    return [
        request,
        ChecksConfirmed(checks=request.checks),
        FacilitatorAssigned(facilitator_id="fac-1", facilitator_name="Facilitator One",
                            facilitator_email="facilitator.one@example.org"),
        MeetingScheduled(meeting_id=meeting_id, facilitator_id="fac-1", starts_at=starts_at, duration_minutes=90,
                         mode="virtual", venue="https://meet.example.org/r", invitees=invitees),
    ]


def held_with_action_and_escalation() -> list:
    held = MeetingHeld(
        meeting_id="M-2", held_at=datetime(2026, 12, 1, 10, tzinfo=UTC),
        attendees=[Attendee(name="Alex Social", agency="Children's Social Care")],
        stages=Stages(strengths="s", impact="i", ways_forward="w", learning="l",
                      perspectives=[Perspective(professional="Alex Social", agency="Children's Social Care",
                                                feelings="f", needs="n")]),
        outcome="unresolved",
        actions=[ActionItem(action_id="M-2-A1", description="Share the chronology about the child", owner=OWNER,
                            due_date=date(2026, 12, 9))])
    return [
        held,
        ActionRecorded(action_id="M-2-A1", meeting_id="M-2", description="Share the chronology about the child",
                       owner=OWNER, due_date=date(2026, 12, 9)),
        EscalationRaised(escalation_id="E-00000001", trigger="meeting_unresolved", stage=2,
                         stage_name="Manager to manager", holder="Line managers of each practitioner",
                         deadline=date(2026, 12, 7), reason="Disagreement about the child's plan"),
    ]


def received(handler) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(data, policy=policy.default) for _, _, data in handler.received]


async def count(handler, n: int, what: str) -> list[email.message.EmailMessage]:
    async def probe():
        return received(handler)

    return await wait_for(probe, lambda ms: len(ms) >= n, what=what)


async def rethink_cli(settings, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rethink.shared.cli", *args, env=service_env(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode, out.decode(), err.decode()


async def test_invitations_and_reminders_reach_an_smtp_server_once_each_and_failures_can_be_retried(
        run_services, nc, subjects, event_log, settings, smtp_server):
    handler, port = smtp_server
    settings.mail_adapter, settings.smtp_host, settings.smtp_port = "smtp", "127.0.0.1", port
    settings.smtp_security = "none"
    settings.reminder_interval_seconds = 0.1
    settings.partnership_contact = "the Re-think coordinator at coordinator@pscp.example.org"
    handler.refusals_left = 2  # the server is unwell at first
    clock = FixedClock(THURSDAY)
    await run_services(scheduling, clock=clock)
    await seed_case(event_log, "RT-MEETING2AA", opening("M-1", MONDAY_MEETING))
    await seed_case(event_log, "RT-ESCALATE2B", opening("M-2", datetime(2026, 12, 1, 10, tzinfo=UTC))
                    + held_with_action_and_escalation())

    # Thursday: six invitations (three per case); two are refused and wait for their backoff.
    await count(handler, 4, "the invitations the server accepted")
    await wait_for(lambda: ask(nc, subjects.query("scheduling", "notifications"), {}),
                   lambda r: r["counts"] == {"sent": 4, "pending": 2}, what="two waiting to be retried")

    # Friday: the retries go out, and so do the reminders due one working day before Monday
    # (meeting invitees; the stage's people) and three working days before Wednesday (the action's owner).
    clock.advance(timedelta(days=1))
    messages = await count(handler, 6 + 3 + 1 + 4, "invitations and Friday's reminders")
    by_id = Counter(m["Message-ID"] for m in received(handler))
    assert len(messages) == len(by_id) == 14 and set(by_id.values()) == {1}
    subjects_by_kind = Counter(m["Subject"].split(" ")[0] for m in messages)
    assert subjects_by_kind == {"Re-think": 6, "Reminder:": 8}
    action = next(m for m in messages if "M-2-A1" in m["Subject"])
    assert action["To"].addresses[0].addr_spec == OWNER["email"]
    for m in messages:
        plain = m.get_body(("plain",)).get_content()
        assert "chronology" not in plain and "Disagreement" not in plain  # free text stays out
        assert "coordinator@pscp.example.org" in " ".join(plain.split())
    invitations = [m for m in messages if m["Subject"].endswith("invitation")]
    assert all(next(m.iter_attachments()).get_content_type() == "text/calendar" for m in invitations)

    # Wednesday: the due-date reminder is refused for good; it is listed as failed, then retried.
    handler.refusals_left, handler.refusal = 1, "550 5.7.1 Not today"
    clock.advance(timedelta(days=5))
    failed = await wait_for(lambda: ask(nc, subjects.query("scheduling", "notifications"), {"failed": True}),
                            lambda r: len(r["result"]) == 1, what="the refused reminder listed as failed")
    [row] = failed["result"]
    assert row["kind"] == "reminder" and "550" in row["last_error"] and row["recipient"] == OWNER["email"]
    code, out, err = await rethink_cli(settings, "notifications", "list", "--failed", "--json")
    assert code == 0, err
    assert [r["id"] for r in json.loads(out)] == [row["id"]]

    code, out, err = await rethink_cli(settings, "notifications", "retry", str(row["id"]))
    assert code == 0, err
    assert f"1 email(s) queued to send again: {row['id']}" in out
    await count(handler, 15, "the retried reminder")
    code, _, err = await rethink_cli(settings, "notifications", "retry", str(row["id"]))
    assert code == 1 and "is sent, not failed" in err
    code, _, err = await rethink_cli(settings, "notifications", "retry")
    assert code == 1 and "--all" in err

    clock.advance(timedelta(hours=1))
    await wait_for(lambda: ask(nc, subjects.query("scheduling", "notifications"), {}),
                   lambda r: r["counts"] == {"sent": 15}, what="everything sent")
    assert sorted(Counter(m["Message-ID"] for m in received(handler)).values()) == [1] * 15


async def test_a_redelivered_event_reacts_and_writes_its_emails_once(event_log, settings, monkeypatch):
    """An event the projection has applied is not reacted to again: no second assignment, no emails composed again."""
    from rethink.scheduling import app

    calls = Counter()

    def counting(name, real):
        def call(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(app, "react", counting("react", app.react))
    monkeypatch.setattr(app, "compose", counting("compose", app.compose))
    await seed_case(event_log, "RT-MEETING3AA", opening("M-3", MONDAY_MEETING))
    parts = scheduling(settings, event_log, FixedClock(THURSDAY))
    history = await event_log.read_case("RT-MEETING3AA")

    for r in [*history, *history]:  # everything delivered twice, as JetStream would after lost acks
        await parts.on_event(r)

    assert calls == {"react": 1, "compose": 1}
    listed = await parts.queries["notifications"].handler(parts.queries["notifications"].model())
    assert listed["counts"] == {"pending": 3}  # one per invitee
