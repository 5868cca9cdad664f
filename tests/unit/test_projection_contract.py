"""The projections' contract, run on SQLite and on PostgreSQL alike (the ``backend`` parameter).

Migrations make exactly the tables the code declares; intake's and escalation's projections
apply and answer the same on both; a redelivered event changes nothing; a rebuild's reset
empties without dropping. (Scheduling's and meeting's views: test_*_projection.py, same fixture.)
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select

from rethink.escalation import projection as escalation
from rethink.intake import projection as intake
from rethink.shared.events import ActionCompleted, CaseClosed, ChecksConfirmed, RequestSubmitted
from rethink.shared.migrations import DATABASES, current, head, metadata_of
from tests.support import recorded, request_payload
from tests.unit.test_escalation_domain import advanced, raised, resolved

A, B = "RT-AAAAAAAAAA", "RT-BBBBBBBBBB"
T0 = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


def submitted(**overrides) -> RequestSubmitted:
    data = request_payload(**overrides)
    data.pop("immediate_risk")
    return RequestSubmitted.model_validate(data)


def feed(store, *events):
    """Apply (case, payload) pairs as the next events of the log; each must be new."""
    out = []
    for case_id, payload in events:
        r = recorded(payload, case_id=case_id, seq=store.last_seq() + 1, producer="police", at=T0)
        assert store.apply(r) is True
        out.append(r)
    return out


def rows(store):
    with store.engine.connect() as conn:
        return {t.name: sorted(map(tuple, conn.execute(select(t)).all()), key=repr)
                for t in store.metadata.sorted_tables}


@pytest.mark.parametrize("service", DATABASES)
def test_migrations_make_exactly_the_tables_the_code_declares(projection_db, service):
    store = projection_db(service)
    with store.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata_of(service))
        tables = set(inspect(conn).get_table_names())
    assert diffs == []
    assert tables == set(metadata_of(service).tables) | {"alembic_version"}
    assert current(store.engine) == head(service)


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite has no schemas: a file per service does this
def test_each_service_s_tables_live_in_its_own_postgresql_schema(projection_db, backend):
    stores = {s: projection_db(s) for s in ("intake", "meeting")}
    with stores["intake"].engine.connect() as conn:
        assert set(inspect(conn).get_table_names(schema=stores["intake"].schema)) == {
            "alembic_version", "checkpoint", "intake_requests"}
        assert "meeting_actions" in inspect(conn).get_table_names(schema=stores["meeting"].schema)
        assert "meeting_actions" not in inspect(conn).get_table_names()  # invisible from intake's search path


def test_intake_lists_and_shows_requests_as_they_arrive_and_complete(projection_db):
    store = projection_db("intake")
    missing = submitted(checks={"raised_with_network": {"answer": True}, "conversation_had": {"answer": False},
                                "hips_policy_considered": {"answer": True}}, case_reference="CSC-2")
    feed(store, (A, submitted(request_id="r-1")), (B, missing), (A, ChecksConfirmed(checks=submitted().checks)))
    with store.engine.connect() as conn:
        a, b = intake.case_view(conn, A), intake.case_view(conn, B)
        waiting = intake.list_view(conn, "awaiting_checks", 10)
        everything = intake.list_view(conn, None, 10)
        unknown = intake.case_view(conn, "RT-CCCCCCCCCC")
    assert a == {"case_id": A, "agency": "police", "case_reference": "CSC-2026-0042", "reason": "disagreement",
                 "agencies": ["Northside School Trust", "Children's Social Care", "Community Health"],
                 "status": "checks_confirmed", "missing_checks": [], "submitted_at": T0.isoformat(),
                 "confirmed_at": T0.isoformat()}
    assert (b["status"], b["missing_checks"], b["confirmed_at"]) == ("awaiting_checks", ["conversation_had"], None)
    assert waiting == [{"case_id": B, "agency": "police", "case_reference": "CSC-2", "status": "awaiting_checks",
                        "reason": "disagreement", "missing_checks": ["conversation_had"],
                        "submitted_at": T0.isoformat()}]
    assert {r["case_id"] for r in everything} == {A, B}
    assert unknown is None


def test_escalation_follows_stages_to_resolution_and_closure(projection_db):
    store = projection_db("escalation")
    feed(store, (A, submitted()), (B, submitted()), (A, raised()), (A, advanced(2)), (B, raised("E-00000002")))
    with store.engine.connect() as conn:
        view = escalation.case_view(conn, A)
        due = escalation.list_view(conn, True, date(2026, 12, 31), 10)
    assert view["escalation"]["stage"] == 2 and view["escalation"]["status"] == "open"
    assert [(s["stage"], s["deadline"]) for s in view["escalation"]["stages"]] == [(1, "2026-12-30"), (2, "2027-01-05")]
    assert view["escalation"]["stages"][0]["entered_at"] == T0.isoformat()
    assert [e["case_id"] for e in due] == [B]  # A's deadline moved to January
    feed(store, (A, resolved(2)), (A, CaseClosed(reason="escalation_resolved")))
    with store.engine.connect() as conn:
        closed = escalation.case_view(conn, A)
        still_open = escalation.list_view(conn, True, None, 10)
    assert closed["closed"] is True and closed["closed_reason"] == "escalation_resolved"
    assert closed["closed_at"] == T0.isoformat() and closed["escalation"]["status"] == "resolved"
    assert [e["case_id"] for e in still_open] == [B]


def test_a_redelivered_event_changes_nothing_and_a_batch_skips_what_was_applied(projection_db):
    store = projection_db("escalation")
    events = feed(store, (A, submitted()), (A, raised()))
    before = rows(store)
    assert store.apply(events[1]) is False
    extra = recorded(ActionCompleted(action_id="M-1-A1", completed_on=date(2026, 12, 2)), case_id=A, seq=3)
    assert store.apply_batch([*events, extra]) == 1
    after = rows(store)
    assert after.pop("checkpoint") == [("escalation", 3)]  # escalation keeps no row of a completed action
    assert after == {k: v for k, v in before.items() if k != "checkpoint"}


def test_a_reset_empties_every_table_and_keeps_the_migrated_schema(projection_db):
    store = projection_db("intake")
    feed(store, (A, submitted()))
    store.reset()
    assert rows(store) == {"checkpoint": [], "intake_requests": []}
    assert current(store.engine) == head("intake") and store.last_seq() == 0
    feed(store, (A, submitted()))
    assert len(rows(store)["intake_requests"]) == 1
