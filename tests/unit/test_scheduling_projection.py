"""Scheduling's projection, on SQLite and on PostgreSQL (the ``projection_db`` fixture runs each test on both)."""

from __future__ import annotations

from datetime import timedelta

from rethink.scheduling import projection
from rethink.shared.events import CaseClosed, MeetingCancelled, MeetingRescheduled
from rethink.shared.projection import ProjectionStore
from tests.support import recorded
from tests.unit.test_scheduling_domain import (
    FAC_1,
    FAC_2,
    NEXT_WEEK,
    assigned,
    confirmed,
    held,
    scheduled,
    submitted,
)

A, B, C = "RT-AAAAAAAAAA", "RT-BBBBBBBBBB", "RT-CCCCCCCCCC"


def store_with(projection_db, *events: tuple[str, object]) -> ProjectionStore:
    store = projection_db("scheduling")
    for seq, (case_id, payload) in enumerate(events, start=1):
        store.apply(recorded(payload, case_id=case_id, seq=seq))
    return store


def test_facilitator_load_counts_each_facilitator_s_open_cases(projection_db):
    store = store_with(projection_db, *[(c, e) for c in (A, B, C) for e in (submitted(), confirmed())],
                       (A, assigned(FAC_1)), (B, assigned(FAC_2)), (C, assigned(FAC_1)))
    with store.engine.connect() as conn:
        assert projection.load_by_facilitator(conn) == {"fac-1": 2, "fac-2": 1}

    store.apply(recorded(CaseClosed(reason="resolved_at_meeting"), case_id=A, seq=100))
    with store.engine.connect() as conn:  # a closed case is nobody's work: fac-1 and fac-2 are level again
        assert projection.load_by_facilitator(conn) == {"fac-1": 1, "fac-2": 1}


def test_the_case_view_follows_the_meeting_through_its_states(projection_db):
    store = store_with(projection_db, (A, submitted()), (A, confirmed()), (A, assigned()), (A, scheduled()))
    with store.engine.connect() as conn:
        view = projection.case_view(conn, A)
    assert view["facilitator"] == {"id": "fac-1", "name": "Facilitator One", "email": "facilitator.one@example.org"}
    assert view["meeting"] == {"meeting_id": "M-00000001", "starts_at": NEXT_WEEK.isoformat(), "duration_minutes": 90,
                               "mode": "virtual", "venue": "https://meet.example.org/abc", "status": "scheduled"}
    later = NEXT_WEEK + timedelta(hours=2)
    for seq, (event, status) in enumerate([
        (MeetingRescheduled(meeting_id="M-00000001", starts_at=later, duration_minutes=60, mode="virtual"),
         "rescheduled"),
        (held(), "held"),
    ], start=10):
        store.apply(recorded(event, case_id=A, seq=seq))
        with store.engine.connect() as conn:
            assert projection.case_view(conn, A)["meeting"]["status"] == status
    with store.engine.connect() as conn:
        assert projection.case_view(conn, A)["meeting"]["starts_at"] == later.isoformat()
        assert projection.case_view(conn, B) is None


def test_only_active_meetings_block_a_facilitator(projection_db):
    store = store_with(projection_db, *[(c, e) for c in (A, B, C) for e in (submitted(), confirmed(), assigned())],
                       (A, scheduled("M-0000000a")), (B, scheduled("M-0000000b")), (C, scheduled("M-0000000c")),
                       (A, MeetingCancelled(meeting_id="M-0000000a", reason="not needed")),
                       (B, CaseClosed(reason="escalation_resolved")))
    with store.engine.connect() as conn:
        assert [b.meeting_id for b in projection.bookings(conn, "fac-1")] == ["M-0000000c"]
        assert [m["meeting_id"] for m in projection.active_meetings(conn, "fac-1", 10)] == ["M-0000000c"]
        assert projection.active_meetings(conn, "fac-2", 10) == []
        assert projection.case_view(conn, B)["closed"] is True


def test_cases_to_schedule_are_assigned_open_and_without_a_meeting_arranged_or_held(projection_db):
    D, E = "RT-DDDDDDDDDD", "RT-EEEEEEEEEE"
    store = store_with(
        projection_db,
        *[(c, e) for c in (A, B, C, D, E) for e in (submitted(), confirmed())],
        (A, assigned(FAC_1)),                                       # ready
        (B, assigned(FAC_2)), (B, scheduled("M-0000000B")),         # arranged
        (C, assigned(FAC_1)), (C, scheduled("M-0000000C")),
        (C, MeetingCancelled(meeting_id="M-0000000C", reason="room")),  # cancelled: ready again
        (D, assigned(FAC_1)), (D, CaseClosed(reason="escalation_resolved")),  # closed
        # E: confirmed but not yet assigned
    )
    with store.engine.connect() as conn:
        assert [r["case_id"] for r in projection.to_schedule(conn, None, 100)] == [A, C]
        assert [r["case_id"] for r in projection.to_schedule(conn, "fac-2", 100)] == []
        assert projection.to_schedule(conn, None, 100)[0]["facilitator"] == {"id": "fac-1", "name": "Facilitator One"}


def test_meetings_can_be_limited_to_a_window_of_time(projection_db):
    store = store_with(projection_db, (A, submitted()), (A, confirmed()), (A, assigned()), (A, scheduled()),
                       (B, submitted()), (B, confirmed()), (B, assigned()),
                       (B, scheduled("M-0000000B", starts_at=NEXT_WEEK + timedelta(days=7))))
    with store.engine.connect() as conn:
        both = projection.active_meetings(conn, None, 100)
        first = projection.active_meetings(conn, None, 100, starts_from=NEXT_WEEK - timedelta(hours=1),
                                           starts_before=NEXT_WEEK + timedelta(days=1))
        later = projection.active_meetings(conn, None, 100, starts_from=NEXT_WEEK + timedelta(minutes=1))
    assert [m["case_id"] for m in both] == [A, B]
    assert [(m["case_id"], m["case_reference"]) for m in first] == [(A, submitted().case_reference)]
    assert [m["case_id"] for m in later] == [B]


def test_an_erased_case_keeps_its_meeting_but_loses_its_people_and_its_reminders(projection_db):
    from rethink.shared.events import ERASED, PersonalDataErased

    store = store_with(projection_db, *[(c, e) for c in (A, B)
                                   for e in (submitted(), confirmed(), assigned(), scheduled(f"M-{c[-8:]}"))])
    with store.engine.connect() as conn:
        before = {item.case_id for item in projection.reminder_items(conn)}
    assert before == {A, B}

    store.apply(recorded(PersonalDataErased(kid="k1", reason="retention"), case_id=A, seq=100))

    with store.engine.connect() as conn:
        view = projection.case_view(conn, A)
        assert view["facilitator"]["name"] == ERASED and view["facilitator"]["email"] == ERASED
        assert view["meeting"]["venue"] == ERASED and view["meeting"]["status"] == "scheduled"
        assert {item.case_id for item in projection.reminder_items(conn)} == {B}
        assert projection.case_view(conn, B)["facilitator"]["name"] == "Facilitator One"
