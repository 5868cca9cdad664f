"""The escalation service against a real nats-server: reactions, commands, queries, concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

import pytest

from rethink.escalation.app import build
from rethink.shared.clock import FixedClock
from rethink.shared.eventlog import ConcurrencyConflict
from rethink.shared.events import (
    ActionCompleted,
    ActionItem,
    ActionRecorded,
    Attendee,
    ChecksConfirmed,
    FacilitatorAssigned,
    MeetingHeld,
    MeetingScheduled,
    Person,
    Perspective,
    RequestSubmitted,
    Stages,
)
from tests.support import ask, request_payload, seed_case, wait_for

pytestmark = pytest.mark.nats

CASE = "RT-ESCALATE2A"
# Thursday 24 December 2026, noon in London: stage deadlines cross Christmas and New Year.
CHRISTMAS_EVE = datetime(2026, 12, 24, 12, tzinfo=UTC)
SOCIAL_WORKER = Person(name="Alex Social", agency="Children's Social Care", email="sw@council.example.org")


def submitted() -> RequestSubmitted:
    return RequestSubmitted.model_validate({k: v for k, v in request_payload().items() if k != "immediate_risk"})


def held(outcome: str, *actions: ActionItem) -> MeetingHeld:
    return MeetingHeld(
        meeting_id="M-1", held_at=datetime(2026, 12, 22, 10, tzinfo=UTC),
        attendees=[Attendee(name="Alex Social", agency="Children's Social Care")],
        stages=Stages(strengths="Engaged parent.", impact="Missed school.", ways_forward="Joint visit.",
                      learning="Talk earlier.",
                      perspectives=[Perspective(professional="Alex Social", agency="Children's Social Care",
                                                feelings="Frustrated.", needs="A shared plan.")]),
        outcome=outcome, actions=list(actions),
    )


def up_to_the_meeting(outcome: str, *actions: ActionItem) -> list:
    request = submitted()
    return [
        request,
        ChecksConfirmed(checks=request.checks),
        FacilitatorAssigned(facilitator_id="fac-1", facilitator_name="Facilitator One",
                            facilitator_email="facilitator.one@example.org"),
        MeetingScheduled(meeting_id="M-1", facilitator_id="fac-1", starts_at=datetime(2026, 12, 22, 10, tzinfo=UTC),
                         duration_minutes=90, mode="virtual", invitees=request.invitees),
        held(outcome, *actions),
    ]


def of_type(history, name: str) -> list:
    return [r for r in history if r.type == name]


async def processed_all(nc, settings, event_log) -> None:
    """Wait until the escalation service has applied (and acked) everything in the case so far."""
    last = (await event_log.read_case(CASE))[-1].seq
    js = nc.jetstream()
    await wait_for(lambda: js.consumer_info(settings.stream, "escalation"),
                   lambda info: info.ack_floor.stream_seq >= last, what=f"escalation to apply seq {last}")


async def case_view(nc, subjects) -> dict:
    return await ask(nc, subjects.query("escalation", "case"), {"case_id": CASE})


async def test_an_unresolved_meeting_raises_one_escalation_due_in_two_working_days(
        run_services, nc, subjects, event_log, settings):
    await run_services(build, clock=FixedClock(CHRISTMAS_EVE))
    seeded = await seed_case(event_log, CASE, up_to_the_meeting("unresolved"))

    history = await wait_for(lambda: event_log.read_case(CASE), lambda h: of_type(h, "EscalationRaised"),
                             what="EscalationRaised")
    await processed_all(nc, settings, event_log)
    history = await event_log.read_case(CASE)
    (raised,) = of_type(history, "EscalationRaised")
    assert raised.payload.trigger == "meeting_unresolved"
    assert (raised.payload.stage, raised.payload.holder) == (1, "The practitioners involved")
    assert raised.payload.deadline == date(2026, 12, 30)  # 25 and 28 Dec are bank holidays
    assert raised.envelope.producer == "escalation"
    assert raised.envelope.causation_id == seeded[-1].event_id

    view = await case_view(nc, subjects)
    assert view["status"] == "ok"
    escalation = view["result"]["escalation"]
    assert escalation["escalation_id"] == raised.payload.escalation_id
    assert (escalation["stage"], escalation["status"], escalation["deadline"]) == (1, "open", "2026-12-30")
    assert [s["stage"] for s in escalation["stages"]] == [1]
    assert view["result"]["closed"] is False

    due = subjects.query("escalation", "escalations")
    assert (await ask(nc, due, {"due_within_working_days": 1}))["result"] == []
    (listed,) = (await ask(nc, due, {"due_within_working_days": 2}))["result"]
    assert (listed["case_id"], listed["deadline"]) == (CASE, "2026-12-30")


async def test_an_escalation_advances_then_resolves_and_the_case_closes(
        run_services, nc, subjects, event_log, settings):
    await run_services(build, clock=FixedClock(CHRISTMAS_EVE))
    await seed_case(event_log, CASE, up_to_the_meeting("unresolved"))
    await wait_for(lambda: event_log.read_case(CASE), lambda h: of_type(h, "EscalationRaised"), what="EscalationRaised")

    reply = await ask(nc, subjects.command("escalation", "advance"),
                      {"case_id": CASE, "reason": "No agreement between practitioners.",
                       "actor": "dsl@school.example.org"})
    assert reply["status"] == "accepted", reply
    assert reply["events"] == ["EscalationStageAdvanced"]
    assert (reply["stage"], reply["stage_name"], reply["deadline"]) == (2, "Manager to manager", "2027-01-05")

    reply = await ask(nc, subjects.command("escalation", "resolve"),
                      {"case_id": CASE, "resolution": "Managers agreed a joint plan."})
    assert reply["status"] == "accepted", reply
    assert (reply["events"], reply["stage"]) == (["EscalationResolved"], 2)

    history = await wait_for(lambda: event_log.read_case(CASE), lambda h: of_type(h, "CaseClosed"), what="CaseClosed")
    assert [r.type for r in history[-4:]] == [
        "EscalationRaised", "EscalationStageAdvanced", "EscalationResolved", "CaseClosed"]
    assert history[-1].payload.reason == "escalation_resolved"

    await processed_all(nc, settings, event_log)
    view = (await case_view(nc, subjects))["result"]
    assert (view["closed"], view["closed_reason"]) == (True, "escalation_resolved")
    assert view["escalation"]["status"] == "resolved"
    assert [(s["stage"], s["deadline"]) for s in view["escalation"]["stages"]] == [(1, "2026-12-30"), (2, "2027-01-05")]
    listing = subjects.query("escalation", "escalations")
    assert (await ask(nc, listing, {}))["result"] == []
    assert [e["status"] for e in (await ask(nc, listing, {"open_only": False}))["result"]] == ["resolved"]


async def test_a_resolved_meeting_closes_the_case_only_once_its_action_is_completed(
        run_services, nc, subjects, event_log, settings):
    await run_services(build, clock=FixedClock(CHRISTMAS_EVE))
    item = ActionItem(action_id="A-1", description="Share the attendance plan.", owner=SOCIAL_WORKER,
                      due_date=date(2027, 1, 15))
    await seed_case(event_log, CASE, [
        *up_to_the_meeting("resolved", item),
        ActionRecorded(action_id="A-1", meeting_id="M-1", description=item.description, owner=item.owner,
                       due_date=item.due_date),
    ])
    await processed_all(nc, settings, event_log)
    assert of_type(await event_log.read_case(CASE), "CaseClosed") == []
    assert (await case_view(nc, subjects))["result"]["closed"] is False

    await seed_case(event_log, CASE, [ActionCompleted(action_id="A-1", completed_on=date(2026, 12, 24))])
    history = await wait_for(lambda: event_log.read_case(CASE), lambda h: of_type(h, "CaseClosed"), what="CaseClosed")
    (closed,) = of_type(history, "CaseClosed")
    assert closed.payload.reason == "resolved_at_meeting"
    assert of_type(history, "EscalationRaised") == []
    await processed_all(nc, settings, event_log)
    view = (await case_view(nc, subjects))["result"]
    assert (view["closed"], view["closed_reason"], view["escalation"]) == (True, "resolved_at_meeting", None)


async def test_a_partly_resolved_case_closes_when_the_facilitator_records_the_network_agrees(
        run_services, nc, subjects, event_log, settings):
    await run_services(build, clock=FixedClock(CHRISTMAS_EVE))
    item = ActionItem(action_id="A-1", description="Share the attendance plan.", owner=SOCIAL_WORKER,
                      due_date=date(2027, 1, 15))
    await seed_case(event_log, CASE, up_to_the_meeting("partly_resolved", item))
    close = subjects.command("escalation", "close")
    note = "School and health agreed the revised plan; nothing more is needed."
    early = await ask(nc, close, {"case_id": CASE, "note": note})
    assert early["status"] == "rejected" and "A-1" in early["reasons"][0]["message"]
    before = len(await event_log.read_case(CASE))

    await seed_case(event_log, CASE, [ActionCompleted(action_id="A-1", completed_on=date(2026, 12, 24))])
    await processed_all(nc, settings, event_log)
    assert len(await event_log.read_case(CASE)) == before + 1  # a partly resolved case does not close itself

    reply = await ask(nc, close, {"case_id": CASE, "note": note, "actor": "facilitator@pscp.example.org"})
    assert reply["status"] == "accepted", reply
    (closed,) = of_type(await event_log.read_case(CASE), "CaseClosed")
    assert (closed.payload.reason, closed.payload.note) == ("agreed_by_network", note)
    assert closed.shown.actor == "facilitator@pscp.example.org"  # stored sealed (docs/privacy.md)
    await processed_all(nc, settings, event_log)
    view = (await case_view(nc, subjects))["result"]
    assert (view["closed"], view["closed_reason"]) == (True, "agreed_by_network")


async def test_two_concurrent_raises_on_one_case_write_exactly_one_escalation(run_services, nc, subjects, event_log):
    await run_services(build, build)  # two instances share the command queue group
    await seed_case(event_log, CASE, up_to_the_meeting("partly_resolved"))
    subject = subjects.command("escalation", "raise")
    replies = await asyncio.gather(
        ask(nc, subject, {"case_id": CASE, "reason": "School: the plan ignores attendance."}),
        ask(nc, subject, {"case_id": CASE, "reason": "Health: the plan ignores neglect."}),
    )
    assert sorted(r["status"] for r in replies) == ["accepted", "rejected"], replies
    refusal = next(r for r in replies if r["status"] == "rejected")
    assert "is already open at stage 1" in refusal["reasons"][0]["message"]
    assert len(of_type(await event_log.read_case(CASE), "EscalationRaised")) == 1


class ReadsTogether:
    """An event log whose first two case reads wait for each other, so two decisions race on one history."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self._barrier = asyncio.Barrier(2)
        self._held = 0
        self.conflicts = 0

    def __getattr__(self, name):
        return getattr(self._inner, name)

    async def read_case(self, case_id):
        history = await self._inner.read_case(case_id)
        if self._held < 2:
            self._held += 1
            await self._barrier.wait()
        return history

    async def current_history(self, case_id):  # what a command reads first: the racing read too
        return await self.read_case(case_id)

    async def append(self, case_id, events, expected_last_seq, after=None):
        try:
            return await self._inner.append(case_id, events, expected_last_seq, after=after)
        except ConcurrencyConflict:
            self.conflicts += 1
            raise


async def test_the_raise_that_loses_the_race_rereads_the_case_and_is_refused(settings, event_log):
    await seed_case(event_log, CASE, up_to_the_meeting("partly_resolved"))
    racing = ReadsTogether(event_log)
    parts = build(settings, racing, FixedClock(CHRISTMAS_EVE))
    raise_ = parts.commands["raise"]
    outcomes = await asyncio.gather(
        raise_.handler(raise_.model(case_id=CASE, reason="School: the plan ignores attendance.")),
        raise_.handler(raise_.model(case_id=CASE, reason="Health: the plan ignores neglect.")),
        return_exceptions=True,
    )
    assert racing.conflicts == 1  # both decided on the same history; the case-wide check stopped one
    accepted = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert [a["events"] for a in accepted] == [["EscalationRaised"]]
    assert len(refused) == 1 and "is already open" in str(refused[0])
    assert len(of_type(await event_log.read_case(CASE), "EscalationRaised")) == 1


async def test_a_redelivered_meeting_outcome_raises_no_second_escalation(settings, event_log):
    await seed_case(event_log, CASE, up_to_the_meeting("unresolved"))
    parts = build(settings, event_log, FixedClock(CHRISTMAS_EVE))
    meeting = (await event_log.read_case(CASE))[-1]
    await parts.on_event(meeting)
    await parts.on_event(meeting)  # as JetStream would after a lost ack
    assert len(of_type(await event_log.read_case(CASE), "EscalationRaised")) == 1


async def test_advancing_past_the_last_stage_is_refused_and_writes_nothing(run_services, nc, subjects, event_log):
    await run_services(build, clock=FixedClock(CHRISTMAS_EVE))
    await seed_case(event_log, CASE, up_to_the_meeting("partly_resolved"))
    reply = await ask(nc, subjects.command("escalation", "raise"),
                      {"case_id": CASE, "reason": "Plan has drifted.", "faster_deadline": "2026-12-29"})
    assert (reply["status"], reply["stage"], reply["deadline"]) == ("accepted", 1, "2026-12-29"), reply
    advance = subjects.command("escalation", "advance")
    for stage in (2, 3, 4):
        reply = await ask(nc, advance, {"case_id": CASE, "reason": f"Not resolved; to stage {stage}."})
        assert (reply["status"], reply["stage"]) == ("accepted", stage), reply
    before = await event_log.read_case(CASE)

    reply = await ask(nc, advance, {"case_id": CASE, "reason": "Still not resolved."})
    assert reply["status"] == "rejected"
    assert reply["reasons"][0]["message"].startswith("stage 4 is the last stage of the policy")
    assert len(await event_log.read_case(CASE)) == len(before)


async def test_commands_and_queries_on_an_unknown_case_are_not_found(run_services, nc, subjects, stream):
    await run_services(build)
    reply = await ask(nc, subjects.command("escalation", "raise"), {"case_id": CASE, "reason": "Stuck."})
    assert reply["status"] == "not_found"
    assert reply["reasons"] == [{"field": "case_id", "code": "case_not_found", "message": f"no case {CASE}"}]
    view = await case_view(nc, subjects)
    assert view["status"] == "not_found"
