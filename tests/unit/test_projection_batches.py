"""A batch of events (a rebuild; later a live consumer's batch) leaves every projection exactly as
the same events applied one by one do, on SQLite and on PostgreSQL (the ``backend`` parameter).

The batch runs each event's writes grouped into ``executemany`` calls and reordered across
cases (``WriteBatch``); these logs interleave cases and touch every table of every service.
"""

from __future__ import annotations

import importlib
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, create_engine, event, select
from sqlalchemy.dialects import sqlite

from rethink.shared.envelope import Recorded
from rethink.shared.events import (
    EVENT_TYPES,
    ActionCompleted,
    ActionOverdue,
    ActionRecorded,
    CaseClosed,
    ChecksConfirmed,
    MeetingCancelled,
    MeetingHeld,
    MeetingRescheduled,
    Person,
    PersonalDataErased,
)
from rethink.shared.projection import Unread, WriteBatch, repeatable
from rethink.shared.settings import SERVICES
from tests.support import recorded
from tests.unit.test_escalation_domain import advanced, raised, resolved
from tests.unit.test_meeting_domain import held as meeting_held
from tests.unit.test_scheduling_domain import FAC_1, FAC_2, assigned, scheduled, submitted

A, B, C = "RT-AAAAAAAAAA", "RT-BBBBBBBBBB", "RT-CCCCCCCCCC"
T0 = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
OWNER = Person(name="Alex Social", agency="Children's Social Care", email="sw@council.example.org")


def held(meeting_id: str) -> MeetingHeld:
    return meeting_held().model_copy(update={"meeting_id": meeting_id})


def action(meeting_id: str, n: int) -> ActionRecorded:
    return ActionRecorded(action_id=f"{meeting_id}-A{n}", meeting_id=meeting_id, description=f"Action {n}",
                          owner=OWNER, due_date=date(2026, 12, 20 + n))


def log() -> list[tuple[str, object]]:
    """Three cases' lifecycles, interleaved: one closed, one rescheduled then cancelled and erased,
    one escalated through two stages; an event that no projection reads in the middle."""
    later = T0 + timedelta(days=9)
    return [
        (A, submitted()), (B, submitted()), (A, ChecksConfirmed(checks=submitted().checks)),
        (C, submitted()), (B, ChecksConfirmed(checks=submitted().checks)), (A, assigned(FAC_1)),
        (B, assigned(FAC_2)), (A, scheduled("M-0000000A")), (C, raised()), (B, scheduled("M-0000000B")),
        (B, MeetingRescheduled(meeting_id="M-0000000B", starts_at=later, duration_minutes=60, mode="virtual")),
        (A, held("M-0000000A")), (C, advanced(2)), (A, action("M-0000000A", 1)), (A, action("M-0000000A", 2)),
        (B, MeetingRescheduled(meeting_id="M-0000000B", starts_at=later + timedelta(hours=1), duration_minutes=90,
                               mode="in_person", venue="Civic Offices")),
        (A, ActionOverdue(action_id="M-0000000A-A1", due_date=date(2026, 12, 21), as_of=date(2026, 12, 22))),
        (A, ActionCompleted(action_id="M-0000000A-A1", completed_on=date(2026, 12, 23))),
        (B, MeetingCancelled(meeting_id="M-0000000B", reason="The family moved.")), (C, resolved(2)),
        (B, PersonalDataErased(kid="k1", reason="retention")), (C, CaseClosed(reason="escalation_resolved")),
        (A, ActionCompleted(action_id="M-0000000A-A2", completed_on=date(2026, 12, 24))),
        (A, CaseClosed(reason="resolved_at_meeting")), (B, scheduled("M-0000001B")),
        (B, CaseClosed(reason="agreed_by_network")),
    ]


def events():
    return [recorded(p, case_id=case_id, seq=seq, producer="police", at=T0 + timedelta(minutes=seq))
            for seq, (case_id, p) in enumerate(log(), start=1)]


def rows(store):
    with store.engine.connect() as conn:
        return {t.name: sorted(map(tuple, conn.execute(select(t)).all()), key=repr)
                for t in store.metadata.sorted_tables}


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("size", [1, 4, 100])
def test_a_batch_leaves_the_projection_as_one_event_at_a_time_does(projection_db, service, size):
    store = projection_db(service)
    recs = events()
    for r in recs:
        assert store.apply(r) is True
    one_by_one = rows(store)
    store.reset()
    for i in range(0, len(recs), size):
        assert store.apply_batch(recs[i:i + size]) == len(recs[i:i + size])
    assert rows(store) == one_by_one
    assert all(one_by_one.values()), one_by_one  # every table has rows: every kind of write was compared


@pytest.mark.parametrize("service", SERVICES)
def test_events_a_projection_ignores_may_be_left_out_of_a_batch_and_still_move_its_checkpoint(projection_db, service):
    store = projection_db(service)
    recs = events()
    store.apply_batch(recs)
    full = rows(store)
    store.reset()
    kept = [r for r in recs if store.handles is None or r.type in store.handles]
    # as a rebuild hands them over: the others undecoded when the projection writes for them
    batch = [r if r in kept else Unread(r.seq, r.envelope.case_id, r.type) for r in recs
             if r in kept or store.plan_unread is not None]
    assert store.apply_batch(batch, through=recs[-1].seq) == len(batch)
    assert rows(store) == full
    assert store.last_seq() == recs[-1].seq
    if store.plan_unread is not None:
        assert len(kept) < len(batch)  # some were left undecoded, and the rows are still the same


def test_a_batch_already_applied_changes_nothing(projection_db):
    store = projection_db("meeting")
    recs = events()
    assert store.apply_batch(recs[:10]) == 10
    before = rows(store)
    assert store.apply_batch(recs[:10]) == 0
    assert rows(store) == before
    assert store.apply_batch(recs) == len(recs) - 10


def test_writes_that_share_a_scope_keep_their_order_and_others_share_statements(tmp_path):
    metadata = MetaData()
    t = Table("t", metadata, Column("k", String(8), primary_key=True), Column("v", Integer))
    insert, update = t.insert(), t.update().where(t.c.k == bindparam("key"))
    engine = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    metadata.create_all(engine)
    batch = WriteBatch()
    for k in "abc":
        batch.add([(insert, {"k": k, "v": 0}, (k,))])
    for n in range(1, 4):
        for k in "abc":
            batch.add([(update, {"key": k, "v": n}, (k,))])
    with engine.begin() as conn:
        statements = batch.run(conn)
        assert sorted(conn.execute(select(t)).all()) == [("a", 3), ("b", 3), ("c", 3)]
    assert statements == 4  # one insert of three rows, then three rounds of updates, three rows each
    engine.dispose()


def test_a_repeatable_write_runs_once_per_batch_for_the_same_parameters(tmp_path):
    metadata = MetaData()
    t = Table("t", metadata, Column("k", String(8), primary_key=True), Column("v", Integer))
    touch = repeatable(sqlite.insert(t).on_conflict_do_nothing(index_elements=["k"]))
    update = t.update().where(t.c.k == bindparam("key"))
    engine = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    metadata.create_all(engine)
    ran = []
    event.listen(engine, "before_cursor_execute", lambda _c, _cur, sql, params, _ctx, many: ran.append(
        (sql.split()[0], len(params) if many else 1)))
    batch = WriteBatch()
    for n in range(3):
        for k in "ab":
            batch.add([(touch, {"k": k, "v": 0}, (k,)), (update, {"key": k, "v": n + 1}, (k,))])
    with engine.begin() as conn:
        batch.run(conn)
        assert ran == [("INSERT", 2), ("UPDATE", 2), ("UPDATE", 2), ("UPDATE", 2)]
        assert sorted(conn.execute(select(t)).all()) == [("a", 3), ("b", 3)]  # the later touches changed nothing
    engine.dispose()


def test_meeting_writes_each_case_its_row_once_per_batch(projection_db):
    """Every event of a case touches its row, and its close sets it closed; a batch of the whole log
    writes each case's row once (the touches repeated left out, the close folded into the touch)."""
    store = projection_db("meeting")
    store.folds = True  # PostgreSQL's default; SQLite's batches do not fold (``ProjectionStore.folds``)
    writes = []
    event.listen(store.engine, "before_cursor_execute", lambda _c, _cur, sql, params, _ctx, many: writes.append(
        (sql.split()[0], len(params) if many else 1)) if "meeting_cases" in sql else None)
    recs = events()
    assert any(r.type == "CaseClosed" for r in recs)
    store.apply_batch(recs)
    assert {verb for verb, _ in writes} == {"INSERT"}
    assert sum(n for _, n in writes) == len({r.envelope.case_id for r in recs}) < len(recs)


def test_batches_fold_on_postgresql_and_not_on_sqlite(projection_db, backend):
    """Folding costs the client for each write and saves the database a row: a loss where a row
    costs the database next to nothing (SQLite, in process), measured (docs/performance.md)."""
    store = projection_db("scheduling")
    assert store.folds is (backend == "postgresql")
    recs = [r for r in events() if r.type in ("RequestSubmitted", "FacilitatorAssigned")]
    sent = []
    event.listen(store.engine, "before_cursor_execute",
                 lambda _c, _cur, sql, _p, _ctx, _many: sent.append(sql.split()[0]) if "scheduling_cases" in sql else None)
    store.apply_batch(recs)
    assert ("UPDATE" in sent) is (backend == "sqlite")  # the assignments: folded into the inserts on PostgreSQL


@pytest.mark.parametrize("service", SERVICES)
def test_a_projection_writes_for_a_type_outside_handles_only_what_its_subject_says(service):
    """A rebuild does not decode the types outside ``HANDLES``: a write for one of them that needs
    the payload would be lost. Their writes must be exactly ``plan_unread``'s (none without it)."""
    module = importlib.import_module(f"rethink.{service}.projection")
    assert module.HANDLES is not None
    unread = getattr(module, "plan_unread", None)
    envelope = events()[0].envelope
    outside = [kind for kind in EVENT_TYPES if kind not in module.HANDLES]
    assert outside
    for kind in outside:
        r = Recorded(envelope.model_copy(update={"type": kind}), 7, EVENT_TYPES[kind].model_construct())
        expected = list(unread("sqlite", Unread(7, envelope.case_id, kind))) if unread else []
        assert list(module.plan("sqlite", r)) == expected, kind


def _cases(copies: int) -> list[list[tuple[str, object]]]:
    """Each case of ``copies`` copies of the log, as its own events in order (fresh case and meeting ids)."""
    out: dict[str, list[tuple[str, object]]] = {}
    for k in range(copies):
        for case_id, payload in log():
            data = payload.model_dump_json().replace("M-000000", f"M-{k:06d}")  # type: ignore[attr-defined]
            case = f"RT-{'ABCDEFGH'[k]}{case_id[4:]}"
            out.setdefault(case, []).append((case, type(payload).model_validate_json(data)))
    return list(out.values())


@st.composite
def _interleavings(draw, copies: int = 3):
    """The cases of the log's copies merged in any order (each case's own order kept), numbered in
    that order, and cut into batches anywhere."""
    pending = [list(reversed(case)) for case in _cases(copies)]
    merged = []
    while any(pending):
        case = draw(st.sampled_from([c for c in pending if c]))
        merged.append(case.pop())
    recs = [recorded(p, case_id=case_id, seq=seq, producer="police", at=T0 + timedelta(minutes=seq))
            for seq, (case_id, p) in enumerate(merged, start=1)]
    cuts = sorted(set(draw(st.lists(st.integers(1, len(recs) - 1), max_size=5))))
    return recs, cuts


@pytest.mark.parametrize("service", SERVICES)
@hsettings(max_examples=12, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=_interleavings())
def test_any_interleaving_cut_into_any_batches_leaves_what_one_at_a_time_does(projection_db, service, history):
    """Batches reorder writes across cases and fold a row's later writes into the one that made it
    (``folding``; on both databases here, though SQLite's batches do not fold by default): whatever
    the cases' interleaving and wherever the batches end, the rows are the same."""
    recs, cuts = history
    store = projection_db(service)  # one per service and database, emptied for each interleaving
    store.folds = True
    store.reset()
    for r in recs:
        assert store.apply(r) is True
    one_by_one = rows(store)
    store.reset()
    for start, end in zip([0, *cuts], [*cuts, len(recs)], strict=True):
        assert store.apply_batch(recs[start:end]) == end - start
    assert rows(store) == one_by_one
    assert all(one_by_one.values())
