"""Escalation's rules, decided against recorded case histories (no server)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from pydantic import ValidationError

from rethink.escalation import domain
from rethink.escalation.policy import Policy, default_policy
from rethink.escalation.workdays import england_and_wales
from rethink.shared.errors import NotFound, Rejected
from rethink.shared.events import (
    ActionCompleted,
    ActionItem,
    ActionOverdue,
    ActionRecorded,
    Attendee,
    CaseClosed,
    ChecksConfirmed,
    EscalationRaised,
    EscalationResolved,
    EscalationStageAdvanced,
    EscalationTrigger,
    MeetingHeld,
    Person,
    Perspective,
    RequestSubmitted,
    Stages,
)
from tests.support import recorded, request_payload

CASE = "RT-ABCDEFGHJK"
RULES = domain.Rules(policy=default_policy(), holidays=england_and_wales())
TODAY = date(2026, 12, 24)  # a Thursday before Christmas: deadlines cross four bank holidays
OWNER = Person(name="Alex Social", agency="Children's Social Care", email="sw@council.example.org")


def history(*payloads):
    return [recorded(p, case_id=CASE, seq=i + 1) for i, p in enumerate(payloads)]


def submitted() -> RequestSubmitted:
    fields = {k: v for k, v in request_payload().items() if k != "immediate_risk"}
    return RequestSubmitted.model_validate(fields)


def action(action_id: str) -> ActionItem:
    return ActionItem(action_id=action_id, description="Share the attendance plan.", owner=OWNER,
                      due_date=date(2027, 1, 15))


def held(outcome: str, *actions: ActionItem, meeting_id: str = "M-1") -> MeetingHeld:
    return MeetingHeld(
        meeting_id=meeting_id, held_at=datetime(2026, 12, 22, 10, tzinfo=UTC),
        attendees=[Attendee(name="Jo Health", agency="Community Health")],
        stages=Stages(strengths="Engaged parent.", impact="Missed school.", ways_forward="Joint visit.",
                      learning="Talk earlier.",
                      perspectives=[Perspective(professional="Jo Health", agency="Community Health",
                                                feelings="Worried.", needs="A shared plan.")]),
        outcome=outcome, actions=list(actions),
    )


def raised(escalation_id: str = "E-00000001") -> EscalationRaised:
    s = RULES.policy.stage(1)
    return EscalationRaised(escalation_id=escalation_id, trigger=EscalationTrigger.PROFESSIONAL, stage=1,
                            stage_name=s.name, holder=s.holder, deadline=date(2026, 12, 30), reason="Stuck.")


def advanced(to: int, escalation_id: str = "E-00000001") -> EscalationStageAdvanced:
    s = RULES.policy.stage(to)
    return EscalationStageAdvanced(escalation_id=escalation_id, from_stage=to - 1, stage=to, stage_name=s.name,
                                   holder=s.holder, deadline=date(2027, 1, 5), reason="Still stuck.")


def resolved(stage: int = 1) -> EscalationResolved:
    return EscalationResolved(escalation_id="E-00000001", stage=stage, resolution="Agreed a joint plan.")


def raise_cmd(**extra) -> domain.RaiseEscalation:
    return domain.RaiseEscalation(case_id=CASE, reason="Social care will not review the plan.", **extra)


def advance_cmd(**extra) -> domain.AdvanceEscalation:
    return domain.AdvanceEscalation(case_id=CASE, reason="No reply from the practitioner.", **extra)


def react(h, cause=None):
    return domain.react(h, cause or h[-1], RULES, TODAY)


# --- raise -----------------------------------------------------------------------------------

def test_raising_starts_stage_one_with_its_holder_and_a_working_day_deadline():
    events = domain.decide_raise(history(submitted()), raise_cmd(), RULES, TODAY, "E-1234abcd")
    assert events == [EscalationRaised(
        escalation_id="E-1234abcd", trigger=EscalationTrigger.PROFESSIONAL, stage=1,
        stage_name="Practitioner to practitioner", holder="The practitioners involved",
        # Thu 24 Dec 2026 + 2 working days: 25 and 28 Dec are bank holidays, so Wed 30 Dec.
        deadline=date(2026, 12, 30), reason="Social care will not review the plan.",
    )]


def test_raising_may_set_a_deadline_faster_than_the_policy():
    events = domain.decide_raise(history(submitted()), raise_cmd(faster_deadline=date(2026, 12, 29)),
                                 RULES, TODAY, "E-1234abcd")
    assert events[0].deadline == date(2026, 12, 29)


def test_a_faster_deadline_of_today_is_accepted():
    events = domain.decide_raise(history(submitted()), raise_cmd(faster_deadline=TODAY), RULES, TODAY, "E-1")
    assert events[0].deadline == TODAY


@pytest.mark.parametrize(
    ("faster", "message"),
    [
        (date(2026, 12, 23), "must be today (2026-12-24) or later"),
        (date(2026, 12, 30), "must be earlier than the policy deadline 2026-12-30 for stage 1"),
        (date(2027, 1, 8), "must be earlier than the policy deadline 2026-12-30"),
    ],
)
def test_a_faster_deadline_must_be_from_today_and_before_the_policy_deadline(faster, message):
    with pytest.raises(Rejected) as caught:
        domain.decide_raise(history(submitted()), raise_cmd(faster_deadline=faster), RULES, TODAY, "E-1")
    assert caught.value.reasons[0].field == "faster_deadline"
    assert message in caught.value.reasons[0].message


def test_raising_on_an_unknown_case_is_not_found():
    with pytest.raises(NotFound) as caught:
        domain.decide_raise([], raise_cmd(), RULES, TODAY, "E-1")
    assert caught.value.reasons[0].message == f"no case {CASE}"


def test_raising_on_a_case_without_a_request_is_refused():
    with pytest.raises(Rejected, match="has no Re-think request"):
        domain.decide_raise(history(ChecksConfirmed(checks=submitted().checks)), raise_cmd(), RULES, TODAY, "E-1")


def test_raising_while_an_escalation_is_open_is_refused():
    with pytest.raises(Rejected, match="escalation E-00000001 is already open at stage 2"):
        domain.decide_raise(history(submitted(), raised(), advanced(2)), raise_cmd(), RULES, TODAY, "E-2")


def test_raising_on_a_closed_case_is_refused():
    h = history(submitted(), held("resolved"), CaseClosed(reason="resolved_at_meeting"))
    with pytest.raises(Rejected, match="is closed \\(resolved_at_meeting\\)"):
        domain.decide_raise(h, raise_cmd(), RULES, TODAY, "E-2")


def test_escalation_ids_are_short_and_derived_from_their_cause():
    assert domain.escalation_id_for("abc") == domain.escalation_id_for("abc")
    assert domain.escalation_id_for("abc") != domain.escalation_id_for("abd")
    assert len(domain.escalation_id_for("abc")) == 10 and domain.escalation_id_for("abc").startswith("E-")


def test_commands_refuse_unknown_fields_and_blank_reasons():
    with pytest.raises(ValidationError):
        domain.RaiseEscalation(case_id=CASE, reason="x", stage=2)
    with pytest.raises(ValidationError):
        domain.RaiseEscalation(case_id=CASE, reason="   ")
    with pytest.raises(ValidationError):
        domain.ResolveEscalation(case_id=CASE)


# --- advance ---------------------------------------------------------------------------------

def test_advancing_moves_to_the_next_stage_with_a_deadline_from_today():
    events = domain.decide_advance(history(submitted(), raised()), advance_cmd(), RULES, TODAY)
    assert events == [EscalationStageAdvanced(
        escalation_id="E-00000001", from_stage=1, stage=2, stage_name="Manager to manager",
        holder="Line managers of each practitioner",
        # 5 working days from Thu 24 Dec 2026: 29, 30, 31 Dec, 4, 5 Jan (1 Jan is a bank holiday).
        deadline=date(2027, 1, 5), reason="No reply from the practitioner.",
    )]


def test_advancing_may_go_faster_than_the_policy():
    events = domain.decide_advance(history(submitted(), raised()), advance_cmd(faster_deadline=date(2026, 12, 29)),
                                   RULES, TODAY)
    assert events[0].deadline == date(2026, 12, 29)


def test_advancing_without_an_open_escalation_is_refused():
    with pytest.raises(Rejected, match="has no open escalation"):
        domain.decide_advance(history(submitted()), advance_cmd(), RULES, TODAY)
    with pytest.raises(Rejected, match="has no open escalation; the case is closed"):
        domain.decide_advance(history(submitted(), raised(), resolved(), CaseClosed(reason="escalation_resolved")),
                              advance_cmd(), RULES, TODAY)


def test_advancing_on_an_unknown_case_is_not_found():
    with pytest.raises(NotFound):
        domain.decide_advance([], advance_cmd(), RULES, TODAY)


def test_advancing_past_the_last_stage_is_refused():
    h = history(submitted(), raised(), advanced(2), advanced(3), advanced(4))
    with pytest.raises(Rejected) as caught:
        domain.decide_advance(h, advance_cmd(), RULES, TODAY)
    assert caught.value.reasons[0].field == "case_id"
    assert caught.value.reasons[0].message.startswith("stage 4 is the last stage of the policy")


def test_the_last_stage_is_the_policy_s_own():
    two = Policy.model_validate({"stages": [
        {"stage": 1, "name": "Worker to worker", "holder": "Workers", "working_days": 1},
        {"stage": 2, "name": "Heads of service", "holder": "Heads of service", "working_days": 0}]})
    rules = domain.Rules(policy=two, holidays=frozenset())
    h = history(submitted(), raised())
    (event,) = domain.decide_advance(h, advance_cmd(), rules, TODAY)
    assert (event.stage, event.stage_name, event.deadline) == (2, "Heads of service", TODAY)
    with pytest.raises(Rejected, match="stage 2 is the last stage of the policy"):
        domain.decide_advance(h + [recorded(event, case_id=CASE, seq=3)], advance_cmd(), rules, TODAY)


# --- resolve ---------------------------------------------------------------------------------

def test_resolving_records_the_stage_it_was_resolved_at():
    cmd = domain.ResolveEscalation(case_id=CASE, resolution="Agreed a joint plan.")
    events = domain.decide_resolve(history(submitted(), raised(), advanced(2)), cmd)
    assert events == [EscalationResolved(escalation_id="E-00000001", stage=2, resolution="Agreed a joint plan.")]


def test_resolving_without_an_open_escalation_is_refused():
    cmd = domain.ResolveEscalation(case_id=CASE, resolution="Agreed.")
    with pytest.raises(Rejected, match="has no open escalation"):
        domain.decide_resolve(history(submitted(), raised(), resolved()), cmd)
    with pytest.raises(NotFound):
        domain.decide_resolve([], cmd)


# --- reactions -------------------------------------------------------------------------------

def test_an_unresolved_meeting_raises_an_escalation_named_after_the_meeting_event():
    h = history(submitted(), held("unresolved"))
    events = react(h)
    assert events == [EscalationRaised(
        escalation_id=domain.escalation_id_for(h[-1].envelope.event_id),
        trigger=EscalationTrigger.MEETING_UNRESOLVED, stage=1, stage_name="Practitioner to practitioner",
        holder="The practitioners involved", deadline=date(2026, 12, 30),
        reason="The Re-think meeting M-1 did not resolve the disagreement.",
    )]


def test_an_unresolved_meeting_raises_nothing_while_an_escalation_is_open():
    h = history(submitted(), raised(), held("unresolved"))
    assert react(h) == []


def test_an_unresolved_meeting_raises_nothing_on_a_closed_case():
    h = history(submitted(), raised(), resolved(), CaseClosed(reason="escalation_resolved"))
    cause = recorded(held("unresolved"), case_id=CASE, seq=5)
    assert react(h + [cause]) == []


def test_a_partly_resolved_meeting_neither_escalates_nor_closes():
    assert react(history(submitted(), held("partly_resolved"))) == []


def test_only_the_latest_meeting_s_outcome_counts():
    h = history(submitted(), held("unresolved", meeting_id="M-1"), held("resolved", action("A-1"), meeting_id="M-2"))
    assert react(h, cause=h[1]) == []


def test_a_meeting_resolved_without_actions_closes_the_case_at_once():
    assert react(history(submitted(), held("resolved"))) == [CaseClosed(reason="resolved_at_meeting")]


def test_a_meeting_resolved_with_open_actions_does_not_close_the_case():
    assert react(history(submitted(), held("resolved", action("A-1")))) == []


def test_the_case_closes_when_the_last_action_of_a_resolved_meeting_is_completed():
    h = history(
        submitted(), held("resolved", action("A-1"), action("A-2")),
        ActionRecorded(action_id="A-1", meeting_id="M-1", description="x", owner=OWNER, due_date=date(2027, 1, 15)),
        ActionCompleted(action_id="A-1", completed_on=date(2027, 1, 4)),
    )
    assert react(h) == []
    done = h + [recorded(ActionCompleted(action_id="A-2", completed_on=date(2027, 1, 5)), case_id=CASE, seq=5)]
    assert react(done) == [CaseClosed(reason="resolved_at_meeting")]


def test_completing_actions_does_not_close_a_case_with_an_open_escalation():
    h = history(submitted(), held("resolved", action("A-1")),
                ActionOverdue(action_id="A-1", due_date=date(2027, 1, 15), as_of=date(2027, 1, 18)),
                raised(), ActionCompleted(action_id="A-1", completed_on=date(2027, 1, 19)))
    assert react(h) == []


def test_completing_an_action_of_an_unresolved_meeting_does_not_close_the_case():
    h = history(submitted(), held("unresolved", action("A-1")), raised(), resolved(),
                ActionCompleted(action_id="A-1", completed_on=date(2027, 1, 4)))
    assert react(h) == []


def test_completing_an_action_on_a_closed_case_writes_nothing():
    h = history(submitted(), held("resolved", action("A-1")), ActionCompleted(action_id="A-1", completed_on=TODAY),
                CaseClosed(reason="resolved_at_meeting"))
    assert react(h, cause=h[2]) == []


def test_an_overdue_action_raises_an_escalation():
    h = history(submitted(), held("partly_resolved", action("A-1")),
                ActionOverdue(action_id="A-1", due_date=date(2026, 12, 18), as_of=TODAY))
    (event,) = react(h)
    assert event.trigger == EscalationTrigger.ACTION_OVERDUE
    assert (event.stage, event.deadline) == (1, date(2026, 12, 30))
    assert event.escalation_id == domain.escalation_id_for(h[-1].envelope.event_id)
    assert event.reason == "Action A-1 was due on 2026-12-18 and is not complete."


def test_an_overdue_action_raises_nothing_while_an_escalation_is_open_or_the_case_is_closed():
    overdue = ActionOverdue(action_id="A-1", due_date=date(2026, 12, 18), as_of=TODAY)
    assert react(history(submitted(), held("unresolved", action("A-1")), raised(), overdue)) == []
    assert react(history(submitted(), raised(), resolved(), CaseClosed(reason="escalation_resolved"), overdue)) == []


def test_an_overdue_action_completed_since_raises_nothing():
    h = history(submitted(), held("partly_resolved", action("A-1")),
                ActionOverdue(action_id="A-1", due_date=date(2026, 12, 18), as_of=TODAY),
                ActionCompleted(action_id="A-1", completed_on=TODAY))
    assert react(h, cause=h[2]) == []


def test_a_resolved_escalation_closes_the_case():
    h = history(submitted(), raised(), resolved())
    assert react(h) == [CaseClosed(reason="escalation_resolved")]


def test_a_resolved_escalation_does_not_close_a_case_twice():
    h = history(submitted(), raised(), resolved(), CaseClosed(reason="escalation_resolved"))
    assert react(h, cause=h[2]) == []


def test_other_events_need_no_reaction():
    h = history(submitted(), ChecksConfirmed(checks=submitted().checks))
    assert react(h) == []
    assert ChecksConfirmed.type not in domain.REACTS_TO


# --- closing a partly resolved case by the network's agreement --------------------------------

def close(note: str = "The school and health agreed the plan works; nothing more is needed."):
    return domain.CloseCase(case_id=CASE, note=note, actor="facilitator@pscp.example.org")


def test_a_partly_resolved_case_closes_by_agreement_once_its_actions_are_done():
    h = history(submitted(), held("partly_resolved", action("A-1")),
                ActionCompleted(action_id="A-1", completed_on=TODAY))
    assert domain.decide_close(h, close()) == [CaseClosed(reason="agreed_by_network", note=close().note)]


def test_a_partly_resolved_case_with_an_action_outstanding_cannot_be_closed():
    h = history(submitted(), held("partly_resolved", action("A-1"), action("A-2")),
                ActionCompleted(action_id="A-1", completed_on=TODAY))
    with pytest.raises(Rejected, match="actions not yet complete: A-2"):
        domain.decide_close(h, close())


@pytest.mark.parametrize("outcome, says", [("resolved", "closes itself"), ("unresolved", "escalates")])
def test_only_a_partly_resolved_meeting_is_closed_by_agreement(outcome, says):
    with pytest.raises(Rejected, match=says):
        domain.decide_close(history(submitted(), held(outcome)), close())


def test_closing_is_refused_before_any_meeting_while_escalated_or_when_closed():
    with pytest.raises(Rejected, match="no Re-think meeting yet"):
        domain.decide_close(history(submitted()), close())
    with pytest.raises(Rejected, match="resolve it instead"):
        domain.decide_close(history(submitted(), held("partly_resolved"), raised()), close())
    with pytest.raises(Rejected, match="already closed"):
        domain.decide_close(history(submitted(), raised(), resolved(), CaseClosed(reason="escalation_resolved")),
                            close())
    with pytest.raises(NotFound):
        domain.decide_close([], close())


def test_a_close_needs_a_note_of_what_was_agreed():
    with pytest.raises(ValidationError):
        domain.CloseCase(case_id=CASE, note="", actor="facilitator@pscp.example.org")
