"""Meeting's projection through ProjectionStore, on SQLite and on PostgreSQL: views, and redelivery as a no-op."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from rethink.meeting import projection
from rethink.shared.events import (
    ActionCompleted,
    ActionOverdue,
    ActionRecorded,
    CaseClosed,
    MeetingCancelled,
    MeetingScheduled,
    Person,
)
from rethink.shared.projection import ProjectionStore
from tests.support import recorded
from tests.unit.test_meeting_domain import CASE, OWNER, held, scheduled, submitted


@pytest.fixture
def store(projection_db) -> ProjectionStore:
    return projection_db("meeting")


def action(n: int, due: date, email: str = OWNER["email"]) -> ActionRecorded:
    return ActionRecorded(action_id=f"MTG-1-A{n}", meeting_id="MTG-1", description=f"Action {n}",
                          owner=Person.model_validate({**OWNER, "email": email}), due_date=due)


def feed(store: ProjectionStore, *payloads, case_id: str = CASE) -> list:
    """Apply payloads as the next events of the log; each must be applied (not a repeat)."""
    events = []
    for p in payloads:
        r = recorded(p, case_id=case_id, seq=store.last_seq() + 1)
        assert store.apply(r) is True
        events.append(r)
    return events


def view(store: ProjectionStore, case_id: str = CASE):
    with store.engine.connect() as conn:
        return projection.case_view(conn, case_id)


def rows(store: ProjectionStore) -> list:
    with store.engine.connect() as conn:
        return [conn.execute(select(t)).all() for t in (projection.cases, projection.meetings, projection.actions)]


def test_a_held_meeting_and_its_actions_appear_in_the_case_view(store):
    feed(store, submitted(), scheduled(), held(), action(1, date(2026, 3, 23)), action(2, date(2026, 3, 30)))
    v = view(store)
    assert v["meeting"] == {"meeting_id": "MTG-1", "status": "held", "starts_at": "2026-03-16T10:00:00+00:00",
                            "held_at": "2026-03-16T10:00:00+00:00", "outcome": "partly_resolved", "attendees": 2}
    assert [(a["action_id"], a["status"], a["due_date"], a["overdue"]) for a in v["actions"]] == [
        ("MTG-1-A1", "open", "2026-03-23", False), ("MTG-1-A2", "open", "2026-03-30", False)]
    assert v["actions"][0]["owner"] == OWNER
    assert v["closed"] is False


def test_a_case_known_before_its_meeting_has_no_meeting_yet(store):
    feed(store, submitted())
    assert view(store) == {"case_id": CASE, "closed": False, "meeting": None, "actions": []}
    assert view(store, "RT-BBBBBBBBBB") is None


def test_the_latest_arranged_meeting_is_the_one_shown(store):
    feed(store, submitted(), scheduled("MTG-1"), MeetingCancelled(meeting_id="MTG-1", reason="Moved"))
    assert view(store)["meeting"]["status"] == "cancelled"
    feed(store, scheduled("MTG-2"))
    assert view(store)["meeting"]["meeting_id"] == "MTG-2"
    assert view(store)["meeting"]["status"] == "scheduled"


def test_completion_overdue_and_closure_update_the_rows(store):
    feed(store, submitted(), scheduled(), held(), action(1, date(2026, 3, 23)), action(2, date(2026, 3, 30)),
         ActionCompleted(action_id="MTG-1-A1", completed_on=date(2026, 3, 20)),
         ActionOverdue(action_id="MTG-1-A2", due_date=date(2026, 3, 30), as_of=date(2026, 4, 1)),
         CaseClosed(reason="resolved_at_meeting"))
    v = view(store)
    assert [(a["status"], a["completed_on"], a["overdue"]) for a in v["actions"]] == [
        ("completed", "2026-03-20", False), ("open", None, True)]
    assert v["closed"] is True


def test_a_redelivered_event_changes_nothing_and_apply_says_so(store):
    events = feed(store, submitted(), scheduled(), held(), action(1, date(2026, 3, 23)))
    before, seq = rows(store), store.last_seq()
    assert store.apply(events[-1]) is False
    assert store.apply(events[2]) is False
    assert rows(store) == before
    assert store.last_seq() == seq


def test_overdue_candidates_are_open_unreported_and_past_due(store):
    feed(store, submitted(), scheduled(), held(), action(1, date(2026, 3, 23)), action(2, date(2026, 3, 30)),
         action(3, date(2026, 3, 20)), ActionCompleted(action_id="MTG-1-A3", completed_on=date(2026, 3, 19)))
    with store.engine.connect() as conn:
        assert projection.overdue_candidates(conn, date(2026, 3, 23)) == []
        assert projection.overdue_candidates(conn, date(2026, 3, 31)) == [
            (CASE, "MTG-1-A1", date(2026, 3, 23)), (CASE, "MTG-1-A2", date(2026, 3, 30))]
    feed(store, ActionOverdue(action_id="MTG-1-A1", due_date=date(2026, 3, 23), as_of=date(2026, 3, 31)))
    with store.engine.connect() as conn:
        assert [c[1] for c in projection.overdue_candidates(conn, date(2026, 3, 31))] == ["MTG-1-A2"]


def test_the_action_list_filters_by_overdue_and_owner_email(store):
    feed(store, submitted(), scheduled(), held(), action(1, date(2026, 3, 23)),
         action(2, date(2026, 3, 30), email="hv@health.example.org"),
         ActionOverdue(action_id="MTG-1-A2", due_date=date(2026, 3, 30), as_of=date(2026, 4, 1)))
    with store.engine.connect() as conn:
        assert [a["action_id"] for a in projection.list_view(conn, False, None, 100)] == ["MTG-1-A1", "MTG-1-A2"]
        overdue = projection.list_view(conn, True, None, 100)
        assert [(a["case_id"], a["action_id"], a["overdue"]) for a in overdue] == [(CASE, "MTG-1-A2", True)]
        assert [a["action_id"] for a in projection.list_view(conn, False, "HV@health.example.org", 100)] == [
            "MTG-1-A2"]
        assert projection.list_view(conn, True, OWNER["email"], 100) == []


def test_a_meeting_time_with_an_offset_is_shown_in_utc(store):
    scheduled_at = datetime(2026, 3, 3, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    feed(store, submitted(), MeetingScheduled(meeting_id="MTG-1", facilitator_id="fac-1", starts_at=scheduled_at,
                                              duration_minutes=60, mode="virtual", invitees=[]))
    assert view(store)["meeting"]["starts_at"] == "2026-03-03T09:00:00+00:00"


def test_overdue_actions_of_closed_cases_can_be_left_out_of_the_list(store):
    other = "RT-BBBBBBBBBB"
    feed(store, submitted(), scheduled(), held(), action(1, date(2026, 3, 23)),
         ActionOverdue(action_id="MTG-1-A1", due_date=date(2026, 3, 23), as_of=date(2026, 3, 31)))
    feed(store, submitted(), scheduled(), held(), action(1, date(2026, 3, 23)),
         ActionOverdue(action_id="MTG-1-A1", due_date=date(2026, 3, 23), as_of=date(2026, 3, 31)),
         CaseClosed(reason="escalation_resolved"), case_id=other)
    with store.engine.connect() as conn:
        everyone = projection.list_view(conn, True, None, 100)
        open_only = projection.list_view(conn, True, None, 100, open_cases_only=True)
    assert {r["case_id"] for r in everyone} == {CASE, other}
    assert [r["case_id"] for r in open_only] == [CASE]
