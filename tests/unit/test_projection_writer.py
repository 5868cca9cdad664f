"""``ProjectionStore.apply`` on the store's own connection (``Writer``) does what applying through the
engine did, on SQLite and on PostgreSQL (the ``backend`` parameter): the same SQL and parameters
reach the driver, errors come out as SQLAlchemy's, a broken connection is replaced, and whatever the
direct way does not cover still goes through the engine.

(That the rows are the same is also checked by ``test_projection_batches``, against events applied one
at a time here. A batch runs its groups on the cursor too: ``test_batch_cursor``.)
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, event, exc, select, text

from rethink.shared.privacy import ERASURE
from rethink.shared.projection import ProjectionStore, checkpoint_table, retrying_parked
from rethink.shared.settings import SERVICES
from rethink.shared.sqlwriter import Writer, compiled_write
from tests.unit.test_projection_batches import events, rows


def test_every_write_of_every_projection_reaches_the_driver_as_sqlalchemy_sends_it(projection_db):
    """Statement text and parameters (after bind processors such as ``UtcDateTime``'s, and defaults)."""
    checked = 0
    sent: list[tuple[str, object]] = []
    for service in SERVICES:
        store = projection_db(service)
        dialect = store.engine.dialect

        @event.listens_for(store.engine, "before_cursor_execute")
        def capture(conn, cursor, statement, parameters, context, executemany):
            sent.append((statement, parameters))

        cp = {"c": store.consumer, "s": 5}
        with store.engine.begin() as conn:
            writes = [(store._move_cp, cp), (store._read_cp, {"c": store.consumer}),
                      (store._insert_cp, {"consumer": store.consumer, "last_seq": 5})]
            writes += [(s, p) for r in events() for s, p, _ in store._plan(dialect.name, r)]  # type: ignore[misc]
            for statement, params in writes:
                sent.clear()
                conn.execute(statement, params)
                direct = compiled_write(dialect, statement, params)
                assert direct is not None, str(statement)
                assert [direct.prepare(params)] == sent
                assert type(direct.parameters(params)) is type(sent[0][1])
                checked += 1
            conn.rollback()
        event.remove(store.engine, "before_cursor_execute", capture)
    assert checked > 90  # every write of the test log, for the four


@pytest.mark.parametrize("service", SERVICES)
def test_the_services_apply_on_the_writers_connection(projection_db, service):
    store = projection_db(service)
    assert store._writer is not None
    recs = events()
    assert [store._writer.apply(r, None) for r in recs[:3]] == [True] * 3  # not None: not handed to the engine
    assert store._writer.apply(recs[1], None) is False
    assert store.last_seq() == 3


def test_a_redelivered_event_changes_nothing_and_a_retried_parked_one_applies_once(projection_db):
    store = projection_db("meeting")
    recs = events()
    for r in recs[:10]:
        assert store.apply(r) is True
    before = rows(store)
    assert [store.apply(r) for r in recs[:10]] == [False] * 10
    assert rows(store) == before
    with retrying_parked(recs[7].seq):  # skipped once, applied now; the checkpoint stays where it was
        assert store.apply(recs[7]) is True
    assert store.last_seq() == 10


def test_errors_are_sqlalchemys_and_the_connection_is_still_good_after_one(projection_db):
    store = projection_db("meeting")
    recs = events()
    assert store.apply(recs[0]) is True
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE meeting_cases"))
    with pytest.raises(exc.ProgrammingError if store.engine.dialect.name == "postgresql" else exc.OperationalError) as direct:
        store.apply(recs[1])
    assert store.last_seq() == 1  # rolled back with the write that failed
    with pytest.raises(exc.DBAPIError) as engined:
        store._apply_on_engine(recs[1])
    assert (type(direct.value), str(direct.value)) == (type(engined.value), str(engined.value))
    with store.engine.begin() as conn:
        conn.execute(text("CREATE TABLE meeting_cases (case_id VARCHAR(16) PRIMARY KEY, closed BOOLEAN NOT NULL)"))
    assert store._writer is not None and store._writer.apply(recs[1], None) is True
    assert store.last_seq() == 2


def test_a_connection_the_database_dropped_is_replaced_and_the_event_applied(projection_db, backend):
    if backend != "postgresql":
        pytest.skip("a SQLite file has no server to drop the connection")
    store = projection_db("intake")
    recs = events()
    assert store.apply(recs[0]) is True
    pid = store._writer._conn.info.backend_pid  # type: ignore[union-attr]
    with store.engine.begin() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar() is True
    assert store.apply(recs[1]) is True  # on a new connection, at once
    assert store._writer._conn.info.backend_pid != pid  # type: ignore[union-attr]
    assert store.last_seq() == 2


def test_a_disposed_engine_gives_the_writer_a_new_connection(projection_db):
    store = projection_db("escalation")
    recs = events()
    assert store.apply(recs[0]) is True
    first = store._writer._conn  # type: ignore[union-attr]
    store.engine.dispose()
    assert store.apply(recs[1]) is True
    assert store._writer._conn is not first  # type: ignore[union-attr]


def test_another_thread_and_an_engine_with_listeners_apply_through_the_engine(projection_db):
    store = projection_db("scheduling")
    recs = events()
    assert store.apply(recs[0]) is True  # this thread now owns the writer's connection
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append((store._writer.apply(recs[1], None), store.apply(recs[1]))))
    worker.start()
    worker.join()
    assert result == [(None, True)]
    seen: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    assert store._writer.apply(recs[2], None) is None
    assert store.apply(recs[2]) is True
    assert any("checkpoint" in s for s in seen)
    assert store.last_seq() == 3


def test_writes_the_direct_way_does_not_cover_run_through_the_engine(tmp_path):
    metadata = MetaData()
    checkpoint_table(metadata)
    counter = iter(range(1, 1000))
    t = Table("t", metadata, Column("seq", Integer, primary_key=True), Column("case_id", String(16)),
              Column("n", Integer, default=lambda: next(counter)))  # a callable default: computed per execution
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    store = ProjectionStore(engine, metadata, "probe", plan=lambda _d, r: [
        (t.insert(), {"seq": r.seq, "case_id": r.envelope.case_id}, (r.envelope.case_id,))])
    store.create_schema()
    assert Writer.suits(engine) and store._writer is not None
    recs = events()[:3]
    assert store._writer.apply(recs[0], None) is None  # refused, nothing left behind
    assert [store.apply(r) for r in recs] == [True] * 3
    with engine.connect() as conn:
        assert conn.execute(select(t.c.seq, t.c.n).order_by(t.c.seq)).all() == [(1, 1), (2, 2), (3, 3)]
    assert store.last_seq() == 3
    engine.dispose()


def test_what_the_projection_or_a_bind_processor_raises_is_raised_as_through_the_engine(tmp_path):
    from datetime import datetime

    from sqlalchemy import create_engine

    from rethink.shared.projection import UtcDateTime

    metadata = MetaData()
    checkpoint_table(metadata)
    t = Table("t", metadata, Column("seq", Integer, primary_key=True), Column("at", UtcDateTime()))

    def plan(_dialect, r):
        if r.seq == 2:
            raise KeyError("a bug in the projection")
        yield t.insert(), {"seq": r.seq, "at": datetime(2026, 1, 1)}, ()  # naive: UtcDateTime refuses it

    engine = create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    store = ProjectionStore(engine, metadata, "probe", plan=plan)
    store.create_schema()
    recs = events()
    for r in recs[:2]:
        with pytest.raises(Exception) as direct:
            store._writer.apply(r, None)  # type: ignore[union-attr]
        with pytest.raises(Exception) as engined:
            store._apply_on_engine(r)
        assert (type(direct.value), str(direct.value)) == (type(engined.value), str(engined.value))
        assert type(direct.value) is (exc.StatementError if r.seq == 1 else KeyError)
    assert store.last_seq() == 0
    engine.dispose()


def test_a_locked_sqlite_database_is_a_transient_failure_and_the_next_try_applies(tmp_path):
    import sqlite3

    from sqlalchemy import create_engine

    from rethink.shared.delivery import is_transient

    metadata = MetaData()
    checkpoint_table(metadata)
    t = Table("t", metadata, Column("seq", Integer, primary_key=True))
    engine = create_engine(f"sqlite:///{tmp_path / 'p.db'}", connect_args={"timeout": 0.1})
    store = ProjectionStore(engine, metadata, "probe", plan=lambda _d, r: [(t.insert(), {"seq": r.seq}, ())])
    store.create_schema()
    recs = events()
    assert store.apply(recs[0]) is True
    other = sqlite3.connect(tmp_path / "p.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the database
    with pytest.raises(exc.OperationalError) as locked:
        store.apply(recs[1])
    assert is_transient(locked.value) and "locked" in str(locked.value)
    other.execute("ROLLBACK")
    other.close()
    assert store._writer is not None and store._writer.apply(recs[1], None) is True  # the same connection, still good
    assert store.last_seq() == 2
    engine.dispose()


def test_an_erasure_delivered_again_is_scrubbed_again(projection_db):
    """A crash between an erasure's commit and its scrub would leave the old pages in SQLite's
    write-ahead log: its redelivery, applied before, still scrubs."""
    store = projection_db("meeting")
    erasure = next(r for r in events() if r.type == ERASURE)
    scrubbed: list[bool] = []
    store.scrub = lambda: scrubbed.append(True)  # type: ignore[method-assign]
    assert (store.apply(erasure), store.apply(erasure)) == (True, False)
    assert scrubbed == [True, True]
