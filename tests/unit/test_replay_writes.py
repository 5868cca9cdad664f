"""Where a replay writes its batches: in turn on SQLite and on a nearby PostgreSQL, in a thread
beside the next batch's fetch on a distant one (``rebuild._writes_beside``)."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from rethink.shared import rebuild


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_is_written_in_turn_without_asking_the_database(projection_db, monkeypatch, backend):
    store = projection_db("meeting")
    assert store.engine.dialect.name == "sqlite"
    monkeypatch.setattr(rebuild, "_round_trip", lambda _store: pytest.fail("SQLite has no round trip to time"))
    assert rebuild._writes_beside(store) is False


@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize(("round_trip", "beside"), [(0.0001, False), (0.00029, False), (0.0003, True), (0.002, True)])
def test_postgresql_is_written_beside_when_its_round_trip_is_long(projection_db, monkeypatch, round_trip, beside,
                                                                  backend):
    store = projection_db("meeting")
    assert store.engine.dialect.name == "postgresql"
    monkeypatch.setattr(rebuild, "_round_trip", lambda _store: round_trip)
    assert rebuild._writes_beside(store) is beside


def test_a_round_trip_is_timed_on_the_store_s_own_database(projection_db):
    store = projection_db("meeting")
    statements = []
    event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    took = rebuild._round_trip(store)
    assert took > 0 and statements == ["SELECT 1"] * 5
