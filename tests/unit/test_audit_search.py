from __future__ import annotations

from datetime import UTC, date, datetime

from rethink.shared.cli.search import Criteria, matches, summarise
from rethink.shared.events import (
    ActionOverdue,
    CaseClosed,
    EscalationRaised,
    EscalationResolved,
    EscalationStageAdvanced,
    MeetingHeld,
    RequestSubmitted,
)
from tests.support import recorded, request_payload

CASE = "RT-AAAAAAAAAA"
DAY = datetime(2026, 3, 10, 9, tzinfo=UTC)


def _request():
    data = request_payload()
    data.pop("immediate_risk")
    return RequestSubmitted.model_validate(data)


def _held(outcome: str) -> MeetingHeld:
    action = {"action_id": "M-1-A1", "description": "Share the chronology", "due_date": "2026-03-11",
              "owner": {"name": "Alex Social", "agency": "Children's Social Care", "email": "sw@council.example.org"}}
    return MeetingHeld.model_validate({
        "meeting_id": "M-1", "held_at": DAY.isoformat(), "outcome": outcome, "actions": [action],
        "attendees": [{"name": "A", "agency": "B"}],
        "stages": {"strengths": "s", "impact": "i", "ways_forward": "w", "learning": "l",
                   "perspectives": [{"professional": "A", "agency": "B", "feelings": "f", "needs": "n"}]},
    })


def _escalated_case():
    events = [_request(), _held("unresolved"),
              EscalationRaised(escalation_id="E-1", trigger="meeting_unresolved", stage=1, stage_name="One",
                               holder="h", deadline=date(2026, 3, 12), reason="r"),
              ActionOverdue(action_id="M-1-A1", due_date=date(2026, 3, 11), as_of=date(2026, 3, 12)),
              EscalationStageAdvanced(escalation_id="E-1", from_stage=1, stage=2, stage_name="Two", holder="h",
                                      deadline=date(2026, 3, 19), reason="r"),
              EscalationResolved(escalation_id="E-1", stage=2, resolution="agreed"),
              CaseClosed(reason="escalation_resolved")]
    return [recorded(e, CASE, seq=i + 1, producer="police", at=DAY) for i, e in enumerate(events)]


def test_a_case_is_summarised_by_agency_outcome_stage_and_overdue_actions():
    s = summarise(CASE, _escalated_case(), today=date(2026, 3, 20))
    assert (s.agency, s.requested_on, s.outcome, s.highest_stage, s.overdue_actions, s.closed) == (
        "police", "2026-03-10", "unresolved", 2, 1, True)


def test_criteria_select_by_each_question_an_auditor_asks():
    s = summarise(CASE, _escalated_case(), today=date(2026, 3, 20))
    assert matches(s, Criteria(agency="POLICE", since=date(2026, 3, 1), until=date(2026, 3, 31),
                               outcome="unresolved", overdue=True, stage=2))
    assert not matches(s, Criteria(agency="school"))
    assert not matches(s, Criteria(since=date(2026, 3, 11)))
    assert not matches(s, Criteria(until=date(2026, 3, 9)))
    assert not matches(s, Criteria(outcome="resolved"))
    assert not matches(s, Criteria(stage=3))


def test_a_case_waiting_on_checks_has_no_outcome_and_matches_no_outcome_filter():
    s = summarise(CASE, [recorded(_request(), CASE, producer="school", at=DAY)])
    assert s.outcome is None and s.highest_stage is None and not s.closed
    assert not matches(s, Criteria(overdue=True)) and not matches(s, Criteria(outcome="resolved"))
