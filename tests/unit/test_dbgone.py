"""psycopg's messages about a connection's socket invalidate the connection, through the engine as on
the DB-API cursor (``shared/dbgone.py``): the pool drops it, the next use gets a new backend, and
the error is one the delivery layer retries. Found in CI: a backend ended while psycopg was sending
gave "connection socket closed", SQLAlchemy's dialect did not call it a disconnect, its ROLLBACK
then failed with "sending query failed: another command is already in progress", and the
connection stayed in the pool."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, event, text
from sqlalchemy import exc as sa_exc

from rethink.shared.dbgone import means_gone
from rethink.shared.delivery import is_transient
from rethink.shared.projection import ProjectionStore, checkpoint_table, make_engine
from rethink.shared.sqlwriter import compiled_write, run_on_cursor

MESSAGES = ["connection socket closed", "consuming input failed: server closed the connection unexpectedly",
            "sending query failed: another command is already in progress"]


def _pid(conn) -> int:
    return conn.connection.dbapi_connection.info.backend_pid


def _stuck(conn) -> None:
    """Leave psycopg's connection with a command of libpq's in flight, unread: the next statement
    then fails with psycopg's own "sending query failed: another command is already in progress"."""
    conn.connection.dbapi_connection.pgconn.send_query(b"SELECT 1")


def test_a_stuck_connection_is_invalidated_and_the_pool_gives_a_new_one(postgres_url):
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            first = _pid(conn)
            _stuck(conn)
            with pytest.raises(sa_exc.OperationalError) as stuck:
                conn.execute(text("SELECT 2"))
        assert str(stuck.value.orig).startswith("sending query failed")
        assert is_transient(stuck.value) and stuck.value.connection_invalidated
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 3")).scalar() == 3
            assert _pid(conn) != first
    finally:
        engine.dispose()


def test_without_it_sqlalchemy_keeps_the_stuck_connection(postgres_url):
    """The control: the same error through a plain engine is not called a disconnect, and closing the
    connection fails on its ROLLBACK (what CI met), so the test above shows what ``notice_gone`` adds."""
    engine = create_engine(postgres_url)
    try:
        conn = engine.connect()
        _stuck(conn)
        with pytest.raises(sa_exc.OperationalError) as stuck:
            conn.execute(text("SELECT 2"))
        assert not stuck.value.connection_invalidated
        with pytest.raises(sa_exc.OperationalError) as closing:
            conn.close()
        assert "another command is already in progress" in str(closing.value)
    finally:
        engine.dispose()


@pytest.mark.parametrize("message", MESSAGES)
def test_each_message_about_the_socket_invalidates_through_the_engine(postgres_url, monkeypatch, message):
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            first = _pid(conn)

            def failing(*_args, **_kwargs):
                raise psycopg.OperationalError(message)

            with monkeypatch.context() as m:
                m.setattr(engine.dialect, "do_execute", failing)
                with pytest.raises(sa_exc.OperationalError) as gone:
                    conn.execute(text("SELECT 1"))
            assert gone.value.connection_invalidated and str(gone.value.orig) == message
        with engine.connect() as conn:
            assert _pid(conn) != first
    finally:
        engine.dispose()


class _Failing:
    def __init__(self, message: str) -> None:
        self.message = message

    def execute(self, *_args, **_kwargs):
        raise psycopg.OperationalError(self.message)

    executemany = execute


@pytest.mark.parametrize("message", MESSAGES)
def test_each_message_about_the_socket_invalidates_on_the_cursor(postgres_url, message):
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            t = Table("t", MetaData(), Column("k", Integer, primary_key=True))
            write = compiled_write(engine.dialect, t.insert(), {"k": 1})
            assert write is not None
            with pytest.raises(sa_exc.OperationalError) as gone:
                run_on_cursor(conn, _Failing(message), write, [{"k": 1}])
            assert gone.value.connection_invalidated and conn.invalidated
    finally:
        engine.dispose()


def test_statement_errors_and_other_databases_are_left_alone(postgres_url):
    """A server's error about a statement (a syntax error: the connection is fine) is no disconnect,
    nor is a SQLite error that happens to begin with the same words."""
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            with pytest.raises(sa_exc.ProgrammingError) as bad:
                conn.execute(text("SELEC 1"))
            assert not bad.value.connection_invalidated
            conn.rollback()
            assert conn.execute(text("SELECT 1")).scalar() == 1
        lite = create_engine("sqlite://")
        assert not means_gone(lite.dialect, sqlite3.OperationalError("connection socket closed"))
        assert means_gone(engine.dialect, psycopg.OperationalError("connection socket closed"))
        assert not means_gone(engine.dialect, psycopg.errors.SyntaxError("sending query failed"))
    finally:
        engine.dispose()


def test_the_direct_writers_still_run_with_it_but_not_beside_a_listener(postgres_url):
    """``notice_gone`` is on every PostgreSQL engine and adds no listener: the live writer and a
    batch's cursor still run on the DB-API connection (and ask the same judgement, the tests above);
    a listener on the dialect's events still sends them through the engine (it is to see every
    statement)."""
    metadata = MetaData()
    checkpoint_table(metadata)
    store = ProjectionStore(make_engine(postgres_url), metadata, "probe", plan=lambda _d, _r: [])
    try:
        assert store._writer is not None and not store._writer.hooked()
        assert store._batch_compiled() is not None
        event.listen(store.engine, "do_execute", lambda *a: None)
        assert store._writer.hooked() and store._batch_compiled() is None
    finally:
        store.engine.dispose()
