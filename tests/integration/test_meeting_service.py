"""The meeting service against a real nats-server: recording, actions, overdue reporting, refusals."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from rethink.meeting.app import build as meeting
from rethink.shared.clock import FixedClock
from rethink.shared.envelope import new_case_id
from rethink.shared.events import (
    ChecksConfirmed,
    FacilitatorAssigned,
    MeetingScheduled,
    Person,
    RequestSubmitted,
)
from tests.support import ask, request_payload, seed_case, wait_for

pytestmark = pytest.mark.nats

OWNER = {"name": "Alex Social", "agency": "Children's Social Care", "email": "sw@council.example.org"}
OTHER = {"name": "Jo Health", "agency": "Community Health", "email": "hv@health.example.org"}


async def arrange_case(event_log) -> str:
    """A case as intake and scheduling leave it: requested, checks confirmed, facilitator, meeting arranged."""
    request = request_payload()
    del request["immediate_risk"]
    submitted = RequestSubmitted.model_validate(request)
    case_id = new_case_id()
    await seed_case(event_log, case_id, [
        submitted,
        ChecksConfirmed(checks=submitted.checks),
        FacilitatorAssigned(facilitator_id="fac-1", facilitator_name="Facilitator One",
                            facilitator_email="facilitator.one@example.org"),
        MeetingScheduled(meeting_id="MTG-1", facilitator_id="fac-1", starts_at=datetime.now(UTC) + timedelta(days=7),
                         duration_minutes=90, mode="virtual", invitees=[Person.model_validate(OWNER)]),
    ])
    return case_id


def record_body(case_id: str, held_at: datetime, actions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "case_id": case_id,
        "actor": "facilitator.one@example.org",
        "held_at": held_at.isoformat(),
        "attendees": [{"name": "Alex Social", "agency": "Children's Social Care"},
                      {"name": "Jo Health", "agency": "Community Health"}],
        "stages": {
            "strengths": "The family engage well with school.",
            "perspectives": [{"professional": "Jo Health", "agency": "Community Health",
                              "feelings": "Frustrated", "needs": "A shared view of neglect"}],
            "impact": "Attendance has fallen for a term.",
            "ways_forward": "A joint visit and a revised plan.",
            "learning": "Agree thresholds early.",
        },
        "outcome": "partly_resolved",
        "actions": actions,
    }


def two_actions(today: date) -> list[dict[str, Any]]:
    return [{"description": "Joint home visit", "owner": OWNER, "due_date": (today + timedelta(days=7)).isoformat()},
            {"description": "Revise the plan", "owner": OTHER, "due_date": (today + timedelta(days=14)).isoformat()}]


def types(history) -> list[str]:
    return [r.type for r in history]


async def record_with_two_actions(nc, subjects, event_log, case_id: str, held_at: datetime) -> dict[str, Any]:
    reply = await ask(nc, subjects.command("meeting", "record"),
                      record_body(case_id, held_at, two_actions(held_at.date())))
    assert reply["status"] == "accepted", reply
    await wait_for(lambda: event_log.read_case(case_id), lambda h: types(h).count("ActionRecorded") == 2,
                   what="two ActionRecorded")
    return reply


async def case_view(nc, subjects, case_id: str) -> dict[str, Any]:
    return await ask(nc, subjects.query("meeting", "case"), {"case_id": case_id})


async def test_a_recorded_meeting_writes_meeting_held_then_one_action_recorded_per_action(
        run_services, nc, subjects, event_log):
    await run_services(meeting)
    case_id = await arrange_case(event_log)
    held_at = datetime.now(UTC)
    reply = await record_with_two_actions(nc, subjects, event_log, case_id, held_at)
    assert reply["events"] == ["MeetingHeld"]
    assert reply["meeting_id"] == "MTG-1" and reply["action_ids"] == ["MTG-1-A1", "MTG-1-A2"]

    history = await event_log.read_case(case_id)
    assert types(history)[4:] == ["MeetingHeld", "ActionRecorded", "ActionRecorded"]
    assert [r.payload.action_id for r in history[5:]] == ["MTG-1-A1", "MTG-1-A2"]
    assert history[5].envelope.causation_id == history[4].envelope.event_id
    assert history[5].envelope.producer == "meeting"

    view = await wait_for(lambda: case_view(nc, subjects, case_id),
                          lambda v: len(v.get("result", {}).get("actions", [])) == 2, what="actions projected")
    result = view["result"]
    assert result["meeting"]["meeting_id"] == "MTG-1" and result["meeting"]["status"] == "held"
    assert result["meeting"]["outcome"] == "partly_resolved"
    assert datetime.fromisoformat(result["meeting"]["held_at"]) == held_at
    assert [(a["action_id"], a["owner"]["email"], a["status"], a["overdue"]) for a in result["actions"]] == [
        ("MTG-1-A1", OWNER["email"], "open", False), ("MTG-1-A2", OTHER["email"], "open", False)]


async def test_a_completed_action_is_never_overdue_and_the_other_is_reported_overdue_once(
        run_services, nc, subjects, event_log):
    await run_services(meeting)
    case_id = await arrange_case(event_log)
    today = datetime.now(UTC).date()
    await record_with_two_actions(nc, subjects, event_log, case_id, datetime.now(UTC))

    done = await ask(nc, subjects.command("meeting", "complete_action"),
                     {"case_id": case_id, "action_id": "MTG-1-A1", "note": "Visit done"})
    assert done["status"] == "accepted", done
    assert done["events"] == ["ActionCompleted"]
    history = await event_log.read_case(case_id)
    assert history[-1].payload.completed_on == today

    as_of = (today + timedelta(days=30)).isoformat()
    first = await ask(nc, subjects.command("meeting", "check_overdue"), {"as_of": as_of})
    again = await ask(nc, subjects.command("meeting", "check_overdue"), {"as_of": as_of})
    assert first["status"] == "accepted", first
    assert first["overdue"] == [{"case_id": case_id, "action_id": "MTG-1-A2",
                                 "due_date": (today + timedelta(days=14)).isoformat()}]
    assert len(first["event_ids"]) == 1
    assert again["status"] == "accepted" and again["overdue"] == [] and again["event_ids"] == []

    history = await event_log.read_case(case_id)
    overdue = [r for r in history if r.type == "ActionOverdue"]
    assert [(r.payload.action_id, r.payload.as_of.isoformat()) for r in overdue] == [("MTG-1-A2", as_of)]
    assert str(overdue[0].envelope.event_id) == first["event_ids"][0]

    listed = await wait_for(lambda: ask(nc, subjects.query("meeting", "actions"), {"overdue_only": True}),
                            lambda v: len(v.get("result", [])) == 1, what="overdue action listed")
    assert listed["result"][0]["action_id"] == "MTG-1-A2" and listed["result"][0]["case_id"] == case_id
    view = (await case_view(nc, subjects, case_id))["result"]
    assert [(a["status"], a["completed_on"], a["overdue"]) for a in view["actions"]] == [
        ("completed", today.isoformat(), False), ("open", None, True)]


async def test_the_periodic_check_reports_overdue_actions_by_the_clock_without_a_command(
        run_services, nc, subjects, event_log):
    def fast_meeting(settings, log, clock):
        return meeting(settings.model_copy(update={"overdue_check_interval_seconds": 0.1}), log, clock)

    case_id = await arrange_case(event_log)
    clock = FixedClock(datetime.now(UTC))
    await run_services(fast_meeting, clock=clock)
    await record_with_two_actions(nc, subjects, event_log, case_id, clock.now())
    await wait_for(lambda: case_view(nc, subjects, case_id),
                   lambda v: len(v.get("result", {}).get("actions", [])) == 2, what="actions projected")
    assert "ActionOverdue" not in types(await event_log.read_case(case_id))

    clock.advance(timedelta(days=30))
    history = await wait_for(lambda: event_log.read_case(case_id),
                             lambda h: types(h).count("ActionOverdue") == 2, what="two ActionOverdue")
    overdue = [r.payload for r in history if r.type == "ActionOverdue"]
    assert sorted(o.action_id for o in overdue) == ["MTG-1-A1", "MTG-1-A2"]
    assert {o.as_of for o in overdue} == {clock.now().date()}
    assert all(r.envelope.actor == "service:meeting" for r in history if r.type == "ActionOverdue")
    view = await wait_for(lambda: case_view(nc, subjects, case_id),
                          lambda v: all(a["overdue"] for a in v["result"]["actions"]), what="overdue projected")
    assert [a["status"] for a in view["result"]["actions"]] == ["open", "open"]


async def test_two_replicas_running_the_periodic_check_report_each_overdue_action_once(
        run_services, nc, subjects, event_log):
    runs = []  # (replica, as_of) of each finished periodic check

    def counted_meeting(replica):
        def build(settings, log, clock):
            parts = meeting(settings.model_copy(update={"overdue_check_interval_seconds": 0.05}), log, clock)
            [(interval, job)] = parts.periodic

            async def check():
                reply = await job()
                runs.append((replica, reply["as_of"]))
                return reply

            parts.periodic = [(interval, check)]
            return parts
        return build

    case_id = await arrange_case(event_log)
    clock = FixedClock(datetime.now(UTC))
    await run_services(counted_meeting("a"), counted_meeting("b"), clock=clock)
    await record_with_two_actions(nc, subjects, event_log, case_id, clock.now())
    await wait_for(lambda: case_view(nc, subjects, case_id),
                   lambda v: len(v.get("result", {}).get("actions", [])) == 2, what="actions projected")

    clock.advance(timedelta(days=30))
    late = clock.now().date().isoformat()
    await wait_for(lambda: event_log.read_case(case_id), lambda h: types(h).count("ActionOverdue") == 2,
                   what="two ActionOverdue")
    # Both replicas keep checking, racing each other, many times over...
    await wait_for(lambda: asyncio.sleep(0, [r for r, as_of in runs if as_of == late]),
                   lambda done: done.count("a") >= 5 and done.count("b") >= 5, what="both replicas to check again")
    # ...and each action is still reported once.
    overdue = [r.payload.action_id for r in await event_log.read_case(case_id) if r.type == "ActionOverdue"]
    assert sorted(overdue) == ["MTG-1-A1", "MTG-1-A2"]


async def test_a_redelivered_meeting_held_writes_nothing_more_and_leaves_the_projection_unchanged(
        run_services, nc, subjects, event_log):
    [svc] = await run_services(meeting)
    case_id = await arrange_case(event_log)
    await record_with_two_actions(nc, subjects, event_log, case_id, datetime.now(UTC))
    before = await wait_for(lambda: case_view(nc, subjects, case_id),
                            lambda v: len(v.get("result", {}).get("actions", [])) == 2, what="actions projected")
    history = await event_log.read_case(case_id)

    held = next(r for r in history if r.type == "MeetingHeld")
    await svc.parts.on_event(held)
    await svc.parts.on_event(history[-1])

    assert [r.envelope.event_id for r in await event_log.read_case(case_id)] == [r.envelope.event_id for r in history]
    assert await case_view(nc, subjects, case_id) == before


async def test_a_meeting_held_in_the_future_is_rejected_and_nothing_is_written(run_services, nc, subjects, event_log):
    await run_services(meeting)
    case_id = await arrange_case(event_log)
    future = datetime.now(UTC) + timedelta(days=1)
    reply = await ask(nc, subjects.command("meeting", "record"), record_body(case_id, future, two_actions(future.date())))
    assert reply["status"] == "rejected"
    assert [r["field"] for r in reply["reasons"]] == ["held_at"]
    assert "future" in reply["reasons"][0]["message"]
    assert types(await event_log.read_case(case_id)) == [
        "RequestSubmitted", "ChecksConfirmed", "FacilitatorAssigned", "MeetingScheduled"]


async def test_commands_that_cannot_be_carried_out_say_why(run_services, nc, subjects, event_log):
    await run_services(meeting)
    now = datetime.now(UTC)

    unknown = await ask(nc, subjects.command("meeting", "bogus"), {})
    assert unknown["status"] == "rejected"
    assert unknown["reasons"][0]["field"] == "(subject)"
    assert "check_overdue, complete_action, record" in unknown["reasons"][0]["message"]

    case_id = new_case_id()
    bad_date = record_body(case_id, now, [{"description": "Visit", "owner": OWNER, "due_date": "tomorrow"}])
    wrong = await ask(nc, subjects.command("meeting", "record"), bad_date)
    assert wrong["status"] == "rejected"
    assert [r["field"] for r in wrong["reasons"]] == ["actions.0.due_date"]

    missing = await ask(nc, subjects.command("meeting", "record"), record_body(case_id, now, []))
    assert missing["status"] == "not_found" and missing["reasons"][0]["field"] == "case_id"
    assert (await case_view(nc, subjects, case_id))["status"] == "not_found"

    await seed_case(event_log, case_id, [RequestSubmitted.model_validate(
        {k: v for k, v in request_payload().items() if k != "immediate_risk"})])
    unscheduled = await ask(nc, subjects.command("meeting", "record"), record_body(case_id, datetime.now(UTC), []))
    assert unscheduled["status"] == "rejected"
    assert "schedule the meeting first" in unscheduled["reasons"][0]["message"]

    no_action = await ask(nc, subjects.command("meeting", "complete_action"),
                          {"case_id": case_id, "action_id": "MTG-1-A1"})
    assert no_action["status"] == "rejected" and no_action["reasons"][0]["field"] == "action_id"
    assert types(await event_log.read_case(case_id)) == ["RequestSubmitted"]


async def test_a_record_sent_again_with_its_command_id_gets_the_same_reply_and_writes_nothing(
        run_services, nc, subjects, event_log):
    """The caller whose first reply was lost (a killed service) sends the same command again.
    Its events are in the log with their personal fields sealed; the reply is built from them opened."""
    await run_services(meeting)
    case_id = await arrange_case(event_log)
    held_at = datetime.now(UTC)
    body = {**record_body(case_id, held_at, two_actions(held_at.date())),
            "command_id": "0b9a6c1e-6f1d-4a52-9d2e-2f1c7d1e5a10"}
    first = await ask(nc, subjects.command("meeting", "record"), body)
    assert first["status"] == "accepted", first
    settled = await wait_for(lambda: event_log.read_case(case_id), lambda h: types(h).count("ActionRecorded") == 2,
                             what="two ActionRecorded")
    before = len(settled)
    again = await ask(nc, subjects.command("meeting", "record"), body)
    assert again["status"] == "accepted" and again["duplicate"] is True, again
    assert (again["meeting_id"], again["action_ids"]) == (first["meeting_id"], first["action_ids"])
    assert len(await event_log.read_case(case_id)) == before
