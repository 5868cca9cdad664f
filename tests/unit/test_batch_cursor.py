"""A batch's groups of writes on the DB-API cursor of its own transaction (``WriteBatch.run`` with
``ProjectionStore._batch_compiled``, ``sqlwriter.run_on_cursor``) do what running them through
``Connection.execute`` did, on SQLite and on PostgreSQL (the ``backend`` parameter): the driver
receives the same calls with the same SQL and parameters, the tables end with the same rows,
errors come out as the same SQLAlchemy exceptions, and nothing of a failed batch stays.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sqlite3
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import (
    Boolean,
    Column,
    Date,
    Integer,
    MetaData,
    Table,
    Text,
    create_engine,
    event,
    exc,
    func,
    select,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from rethink.shared import projection
from rethink.shared.delivery import is_transient
from rethink.shared.pgcopy import COPY_FROM_ROWS, STAGED_FROM_ROWS
from rethink.shared.projection import ProjectionStore, UtcDateTime, WriteBatch, checkpoint_table, make_engine
from rethink.shared.settings import SERVICES
from rethink.shared.sqlwriter import cursor_of
from tests.support import recorded
from tests.unit.test_projection_batches import T0, events, log

CASE_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def copies(n: int) -> list:
    """``n`` copies of the test log, each with cases, meetings and actions of its own, numbered on:
    a rebuild's batch, whose groups hold many rows (the log alone gives groups of one to three)."""
    out = []
    for k in range(n):
        for case_id, payload in log():
            data = payload.model_dump_json().replace("M-000000", f"M-{k:06d}")  # type: ignore[attr-defined]
            seq = len(out) + 1
            out.append(recorded(type(payload).model_validate_json(data),
                                case_id=f"RT-{CASE_LETTERS[k % 32]}{CASE_LETTERS[k // 32]}{case_id[5:]}",
                                seq=seq, producer="police", at=T0 + timedelta(minutes=seq)))
    return out


class _Recording(sqlite3.Connection):
    """A SQLite connection that notes every statement its cursors run, as the driver receives it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[str, str, object]] = []

    def cursor(self, factory=None):  # type: ignore[override]
        return super().cursor(_RecordingCursor)


class _RecordingCursor(sqlite3.Cursor):
    def execute(self, sql, parameters=(), /):  # type: ignore[override]
        self.connection.sent.append(("execute", sql, parameters))  # type: ignore[attr-defined]
        return super().execute(sql, parameters)

    def executemany(self, sql, seq_of_parameters, /):  # type: ignore[override]
        rows = list(seq_of_parameters)
        self.connection.sent.append(("executemany", sql, rows))  # type: ignore[attr-defined]
        return super().executemany(sql, rows)


class _PgRecordingCursor(psycopg.Cursor):
    """A psycopg cursor that notes what it runs on a connection given a ``sent`` list (the pool's
    pre-ping runs before one is given): a COPY with the rows written to it."""

    @contextlib.contextmanager
    def copy(self, statement, params=None, **kwargs):  # type: ignore[override]
        rows: list[tuple[object, ...]] = []
        with super().copy(statement, params, **kwargs) as copying:
            write_row = copying.write_row
            copying.write_row = lambda row: (rows.append(tuple(row)), write_row(row))[1]  # type: ignore[method-assign]
            yield copying
        if (sent := getattr(self.connection, "sent", None)) is not None:
            sent.append(("copy", statement, rows))

    def execute(self, query, params=None, **kwargs):  # type: ignore[override]
        if (sent := getattr(self.connection, "sent", None)) is not None:
            sent.append(("execute", query, params))
        return super().execute(query, params, **kwargs)

    def executemany(self, query, params_seq, **kwargs):  # type: ignore[override]
        rows = list(params_seq)
        if (sent := getattr(self.connection, "sent", None)) is not None:
            sent.append(("executemany", query, rows))
        return super().executemany(query, rows, **kwargs)


def _recording_store(projection_db, backend: str, tmp_path, service: str) -> ProjectionStore:
    module = importlib.import_module(f"rethink.{service}.projection")
    schema = None
    if backend == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / f'{service}.db'}", connect_args={"factory": _Recording})
    else:
        migrated = projection_db(service)  # a schema of this test's, migrated to head
        schema = migrated.schema
        engine = create_engine(migrated.engine.url, pool_pre_ping=True, connect_args={
            "options": f"-csearch_path={migrated.schema}", "cursor_factory": _PgRecordingCursor})
    store = ProjectionStore(engine, module.metadata, service, plan=module.plan, handles=module.HANDLES,
                            plan_unread=getattr(module, "plan_unread", None), schema=schema)
    if backend == "sqlite":
        store.create_schema()
    return store


def _batch_sent(store: ProjectionStore, batch: WriteBatch, compiled) -> list[tuple[str, str, object]]:
    with store.engine.begin() as conn:
        sent = conn.connection.dbapi_connection.sent = []  # type: ignore[union-attr]
        batch.run(conn, compiled)
        del conn.connection.dbapi_connection.sent  # type: ignore[union-attr]
        conn.rollback()
    return sent


_ENGINE_INSERT = re.compile(r"INSERT INTO (\w+) \(([\w, ]+)\) VALUES \((%\(\w+\)s[^()]*(?:, %\(\w+\)s[^()]*)*)\)(.*)")
_STAGED = re.compile(r"WITH staged AS \(DELETE FROM pg_temp\.(\w+) RETURNING ([\w, ]+)\) "
                     r"INSERT INTO (\w+) \(([\w, ]+)\) SELECT ([\w, ]+) FROM staged(.*)")


def _engine_rows(calls: list) -> list:
    """The engine's calls on PostgreSQL as what they write: an INSERT's ``executemany`` of as many rows
    as the cursor sends as COPY (``COPY_FROM_ROWS``; an upsert, ``STAGED_FROM_ROWS``, unless its ON
    CONFLICT takes parameters) as ("rows", table, columns, each row's values in column order, its
    ON CONFLICT clause); anything else as it is."""
    out = []
    for how, sql, rows in calls:
        insert = _ENGINE_INSERT.fullmatch(sql)
        if how == "executemany" and insert is not None and "%(" not in insert.group(4):
            table, columns, values, tail = insert.groups()
            if len(rows) >= (STAGED_FROM_ROWS if tail else COPY_FROM_ROWS):
                names = re.findall(r"%\((\w+)\)s", values)
                out.append(("rows", table, columns, [tuple(row[n] for n in names) for row in rows], tail))
                continue
        out.append((how, sql, rows))
    return out


def _cursor_rows(calls: list) -> list:
    """The cursor's calls as what they write: a COPY into a table as ("rows", …) as above; a COPY into
    a stage and the statement that moves the stage's rows into their table (the same columns, all of
    them, none changed on the way), together as one; the stage's making (as and when it is made) and
    the question whether the session may make one dropped: they write nothing."""
    out: list = []
    for how, sql, rows in calls:
        if how == "execute" and (sql.startswith("CREATE TEMPORARY TABLE IF NOT EXISTS rethink_stage_")
                                 or sql == "SELECT has_database_privilege(current_database(), 'TEMPORARY')"):
            continue
        staged = _STAGED.fullmatch(sql) if how == "execute" else None
        if staged is not None:
            stage, returned, table, columns, selected, tail = staged.groups()
            assert out[-1][:2] == ("stage", stage) and out[-1][2] == returned == columns == selected
            out[-1] = ("rows", table, columns, out[-1][3], tail)
            continue
        copy = re.fullmatch(r"COPY (pg_temp\.)?(\w+) \(([\w, ]+)\) FROM STDIN", sql) if how == "copy" else None
        if copy is not None:
            staging, table, columns = copy.groups()
            out.append(("stage" if staging else "rows", table, columns, rows, ""))
            continue
        out.append((how, sql, rows))
    return out


@pytest.mark.parametrize("service", SERVICES)
def test_a_batch_runs_on_the_cursor_what_the_engine_sends_the_driver(projection_db, backend, tmp_path, service):
    """Each group of a batch as the driver receives it: the same calls (``execute`` for one row,
    ``executemany`` for more: on PostgreSQL SQLAlchemy sends psycopg's too, no multi-row INSERT),
    SQL and parameters as through ``Connection.execute``; except that on PostgreSQL an INSERT of
    many rows goes as a COPY of the very values the engine would have sent."""
    store = _recording_store(projection_db, backend, tmp_path, service)
    compiled = store._batch_compiled()
    assert compiled is not None  # a SQLAlchemy that batched INSERTs otherwise would turn the cursor off
    covered: list[object] = []

    def compiling(statement, params):
        write = compiled(statement, params)
        covered.append(write)
        return write

    calls = set()
    # A rebuild's batch; one event (groups of one row); and a batch of changes to rows an earlier batch
    # made (the updates a batch cannot fold into its own inserts run as ``executemany``).
    later = [r for r in copies(20) if r.type not in ("RequestSubmitted", "MeetingScheduled", "ActionRecorded",
                                                       "EscalationRaised")]
    for recs in (copies(20), events()[:1], later):
        batch = WriteBatch()
        for r in recs:
            batch.add(store._plan(backend, r))  # type: ignore[misc]
        engined = _batch_sent(store, batch, None)
        direct = _batch_sent(store, batch, compiling)
        if backend == "postgresql":
            assert _cursor_rows(direct) == _engine_rows(engined)
        else:
            assert direct == engined
        calls |= {call for call, _, _ in direct}
    assert covered and None not in covered  # every group ran on the cursor, none through the engine
    assert calls == ({"execute", "executemany", "copy"} if backend == "postgresql" else {"execute", "executemany"})
    store.engine.dispose()


def _stored(store: ProjectionStore) -> dict[str, list[tuple[str, ...]]]:
    """Every table's rows as the driver reads them back, each value's ``repr`` (its type with it), with
    no SQLAlchemy result processing (``UtcDateTime`` would put a zone back); on PostgreSQL each row as
    the server prints it too (time zones, JSON, booleans and NULLs in its own words)."""
    pg = store.engine.dialect.name == "postgresql"
    found = {}
    with store.engine.connect() as conn:
        for t in store.metadata.sorted_tables:
            sql = f"SELECT {t.name}::text, * FROM {t.name}" if pg else f"SELECT * FROM {t.name}"
            found[t.name] = sorted(tuple(map(repr, row)) for row in conn.exec_driver_sql(sql))
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_a_batch_on_the_cursor_leaves_exactly_the_rows_the_engine_leaves(projection_db, service, monkeypatch):
    store = projection_db(service)
    on_cursor: list[object] = []
    run = projection.run_on_cursor
    monkeypatch.setattr(projection, "run_on_cursor", lambda *a: on_cursor.append(a[2]) or run(*a))
    copied: list[str] = []
    copy = psycopg.Cursor.copy
    monkeypatch.setattr(psycopg.Cursor, "copy", lambda self, sql, *a, **k: copied.append(sql) or copy(self, sql, *a, **k))
    recs = copies(20)
    for size in (len(recs), 7):  # one rebuild's batch; and many, groups of one row among them
        store.reset()
        assert sum(store.apply_batch(recs[i:i + size]) for i in range(0, len(recs), size)) == len(recs)
        direct = _stored(store)
        assert on_cursor
        store.reset()
        with monkeypatch.context() as m:
            m.setattr(store, "_batch_compiled", lambda: None)  # every group through ``Connection.execute``
            on_cursor.clear()
            assert sum(store.apply_batch(recs[i:i + size]) for i in range(0, len(recs), size)) == len(recs)
            assert on_cursor == []
        assert _stored(store) == direct
    assert all(direct.values()), direct  # every table has rows: every kind of write was compared
    # on PostgreSQL the many rows of an INSERT went as COPY: straight into the table, or (meeting's
    # upserts, and some of the others') into a stage first
    if store.engine.dialect.name == "postgresql":
        assert any(sql.startswith("COPY pg_temp.") for sql in copied) == (service != "intake")
        assert any(not sql.startswith("COPY pg_temp.") for sql in copied) == (service != "meeting")
    else:
        assert copied == []


def test_a_batch_runs_on_the_cursor_unless_listened_to_or_sqlalchemy_would_send_multi_row_inserts(
        projection_db, monkeypatch):
    on_cursor = []
    run = projection.run_on_cursor
    monkeypatch.setattr(projection, "run_on_cursor", lambda *a: on_cursor.append(a[2]) or run(*a))
    store = projection_db("meeting")
    recs = events()
    store.apply_batch(recs[:10])
    assert on_cursor
    with monkeypatch.context() as m:  # a SQLAlchemy whose executemany of an INSERT is no executemany
        m.setattr(store.engine.dialect, "use_insertmanyvalues_wo_returning", True)
        assert store._batch_compiled() is None
    assert store._batch_compiled() is not None
    on_cursor.clear()
    event.listen(store.engine, "before_cursor_execute", lambda *a: None)
    store.apply_batch(recs)  # a listener is to see every statement: the engine runs them
    assert on_cursor == []


def _new_schema(url: str, prefix: str) -> str:
    """A schema of its own for a test, in the session's database (dropped with it)."""
    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, poolclass=NullPool)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    admin.dispose()
    return schema


def _probe(backend: str, tmp_path, request) -> tuple[ProjectionStore, Table]:
    """A store of one table (a key, an aware time) beside its checkpoint: in a SQLite file, or in a
    PostgreSQL schema of its own. Its plan writes key ``seq % 3``: the fourth event repeats the first's."""
    if backend == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'p.db'}", connect_args={"timeout": 0.1})
    else:
        url = request.getfixturevalue("postgres_url")
        engine = make_engine(url, _new_schema(url, "probe"))
    metadata = MetaData()
    checkpoint_table(metadata)
    t = Table("t", metadata, Column("k", Integer, primary_key=True), Column("at", UtcDateTime()))
    at = datetime(2026, 1, 1, tzinfo=UTC)
    store = ProjectionStore(engine, metadata, "probe", plan=lambda _d, r: [(t.insert(), {"k": r.seq % 3, "at": at}, ())])
    store.create_schema()
    return store, t


def test_a_batchs_errors_on_the_cursor_are_the_engines_and_leave_nothing_behind(backend, tmp_path, request):
    store, t = _probe(backend, tmp_path, request)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    groups = {  # rows of one group: a key twice (the database refuses), a naive time (the bind processor does)
        "integrity, many": [{"k": 1, "at": at}, {"k": 1, "at": at}],
        "naive, one": [{"k": 1, "at": datetime(2026, 1, 1)}],
        "naive, many": [{"k": 1, "at": at}, {"k": 2, "at": datetime(2026, 1, 1)}],
        # as many as PostgreSQL copies: the key twice; a naive time last (refused before any row is sent)
        "integrity, copied": [{"k": k % (COPY_FROM_ROWS - 1), "at": at} for k in range(COPY_FROM_ROWS)],
        "naive, copied": [{"k": k, "at": at} for k in range(COPY_FROM_ROWS - 1)] + [
            {"k": COPY_FROM_ROWS, "at": datetime(2026, 1, 1)}],
    }
    for name, group in groups.items():
        batch, insert = WriteBatch(), t.insert()  # one statement: the group's rows in one call
        for n, row in enumerate(group):
            batch.add([(insert, row, (n,))])
        assert len(batch._groups) == 1, name
        raised = []
        for compiled in (None, store._batch_compiled()):
            with pytest.raises(Exception) as caught, store.engine.begin() as conn:
                batch.run(conn, compiled)
            orig = getattr(caught.value, "orig", None)
            raised.append((type(caught.value), type(orig), getattr(orig, "sqlstate", None), str(caught.value)))
        if name == "integrity, copied" and backend == "postgresql":  # the COPY's message names the COPY
            assert raised[0][:3] == raised[1][:3] and "COPY t" in raised[1][3], name
        else:
            assert raised[0] == raised[1], name
        assert raised[0][0] is (exc.IntegrityError if name.startswith("integrity") else exc.StatementError)
        with store.engine.connect() as conn:
            assert conn.execute(select(t)).all() == []
    with pytest.raises(exc.IntegrityError):
        store.apply_batch(events()[:4])  # seq 1 and 4 write the same key: nothing of the batch stays
    assert store.last_seq() == 0
    with store.engine.connect() as conn:
        assert conn.execute(select(t)).all() == []
    assert store.apply_batch(events()[:3]) == 3  # the pool's connection is still good
    store.engine.dispose()


def test_a_locked_sqlite_database_fails_a_batch_transiently(tmp_path, request):
    store, _ = _probe("sqlite", tmp_path, request)
    other = sqlite3.connect(tmp_path / "p.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the database
    with pytest.raises(exc.OperationalError) as locked:
        store.apply_batch(events()[:3])
    assert is_transient(locked.value) and "locked" in str(locked.value)
    other.execute("ROLLBACK")
    other.close()
    assert store.apply_batch(events()[:3]) == 3
    store.engine.dispose()


def _terminate(url: str, pid: int) -> None:
    """End the backend ``pid`` from another connection, and wait until it is gone (each look in a
    transaction of its own: one sees the same snapshot of ``pg_stat_activity`` throughout)."""
    admin = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as other:
            assert other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar() is True
            for _ in range(500):
                if other.execute(text("SELECT 1 FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}).first() is None:
                    return
                time.sleep(0.02)
            raise AssertionError(f"backend {pid} still there")
    finally:
        admin.dispose()


def _noticed(dbapi_conn) -> None:
    """Let psycopg read what the server sent its terminated backend's connection: it then knows the
    connection is closed, and refuses a cursor (what a batch met now and then, unprompted)."""
    for _ in range(1500):  # the server's message, then the end of the stream: not always at once
        try:
            dbapi_conn.pgconn.consume_input()
        except psycopg.OperationalError:
            if dbapi_conn.closed:
                return
        time.sleep(0.02)
    raise AssertionError("psycopg did not notice the connection closed")


@pytest.mark.parametrize("noticed", [False, True], ids=["unnoticed", "noticed"])
@pytest.mark.parametrize("way", ["engine", "cursor"])
def test_a_batch_whose_connection_the_database_ends_fails_transiently_and_leaves_nothing(request, tmp_path,
                                                                                         monkeypatch, way, noticed):
    """The backend terminated after the batch claimed its checkpoint, before its writes (and psycopg
    told of it or not): the error the delivery layer retries, through the engine as on the cursor;
    the connection invalidated, nothing written, the next batch applies on a new one."""
    store, t = _probe("postgresql", tmp_path, request)
    url = store.engine.url.render_as_string(hide_password=False)
    run = WriteBatch.run

    def run_on_an_ended_connection(self, conn, compiled=None):
        try:
            _terminate(url, conn.connection.dbapi_connection.info.backend_pid)
            if noticed:
                _noticed(conn.connection.dbapi_connection)
        except Exception as e:  # the rollback's error would hide it
            failed.append(e)
            raise
        handed.append(compiled)
        return run(self, conn, compiled)

    handed: list[object] = []
    failed: list[Exception] = []
    with monkeypatch.context() as m:
        m.setattr(WriteBatch, "run", run_on_an_ended_connection)
        if way == "engine":
            m.setattr(store, "_batch_compiled", lambda: None)
        with pytest.raises(exc.OperationalError) as ended:
            store.apply_batch(events()[:3])
    assert failed == []
    assert is_transient(ended.value) and ended.value.connection_invalidated, ended.value
    assert len(handed) == 1 and (handed[0] is not None) == (way == "cursor")
    assert store.last_seq() == 0
    with store.engine.connect() as conn:
        assert conn.execute(select(t)).all() == []
    assert store.apply_batch(events()[:3]) == 3  # on a new connection
    assert store.last_seq() == 3
    store.engine.dispose()


def test_a_cursor_refused_on_a_connection_psycopg_knows_closed_is_sqlalchemys_transient_error(request, tmp_path):
    store, _ = _probe("postgresql", tmp_path, request)
    with store.engine.connect() as conn:
        _terminate(store.engine.url.render_as_string(hide_password=False),
                   conn.connection.dbapi_connection.info.backend_pid)
        _noticed(conn.connection.dbapi_connection)
        with pytest.raises(exc.OperationalError) as refused:
            cursor_of(conn)
        assert is_transient(refused.value) and refused.value.connection_invalidated and conn.invalidated
    assert store.apply_batch(events()[:3]) == 3
    store.engine.dispose()


HOSTILE = ["", None, "\t", "a\tb", "line\nbreak", "cr\rlf\r\n", "\\", "\\N", "\\.", "back\\slash\\t", "'; DROP TABLE t; --",
           "émoji 🎉 ∑", "\u2028", "x" * 70_000, "NULL", "%(k)s", "{\"json\": [1, 2]}"]


@pytest.mark.parametrize("upsert", [False, True], ids=["insert", "upsert"])
def test_a_copied_insert_writes_hostile_values_exactly_as_the_engine_does(postgres_url, monkeypatch, upsert):
    """COPY's text format has escapes of its own (tab, newline, backslash, ``\\N`` for NULL): values
    that look like them arrive as they were sent, as through the engine's INSERT (or upsert, through
    its stage); a NUL, which no PostgreSQL text may hold, is refused both ways, with the same error,
    and leaves nothing."""
    schema = _new_schema(postgres_url, "hostile")
    engine = make_engine(postgres_url, schema)
    metadata = MetaData()
    checkpoint_table(metadata)
    t = Table("t", metadata, Column("k", Integer, primary_key=True),
              Column("v", Text), Column("at", UtcDateTime()), Column("flag", Boolean), Column("d", Date))
    metadata.create_all(engine)
    store = ProjectionStore(engine, metadata, "probe", plan=lambda _d, _r: [])
    at = datetime(2026, 1, 1, 12, 30, 15, 123456, tzinfo=UTC)
    try:
        def rows(base: int, values: list) -> list[dict]:
            return [{"k": base + i, "v": v, "at": at if i % 2 else None, "flag": [True, False, None][i % 3],
                     "d": date(2026, 2, 28) if i % 2 else None} for i, v in enumerate(values)]

        def run(group: list[dict], compiled) -> None:
            batch, insert = WriteBatch(), t.insert()
            if upsert:
                insert = postgresql.insert(t)
                insert = insert.on_conflict_do_update(index_elements=["k"], set_={"v": insert.excluded.v})
            for row in group:
                batch.add([(insert, row, (row["k"],))])
            with engine.begin() as conn:
                batch.run(conn, compiled)

        copied: list[str] = []
        copy = psycopg.Cursor.copy
        monkeypatch.setattr(psycopg.Cursor, "copy", lambda self, sql, *a, **k: copied.append(sql) or copy(self, sql, *a, **k))
        assert len(HOSTILE) >= STAGED_FROM_ROWS
        run(rows(0, HOSTILE), None)
        assert copied == []
        run(rows(1000, HOSTILE), store._batch_compiled())
        assert len(copied) == 1 and copied[0].startswith("COPY pg_temp." if upsert else "COPY t (k, v, at, flag, d)")
        with engine.connect() as conn:
            got = {k: (v, a, f, d) for k, v, a, f, d in conn.execute(select(t))}
        assert [got[1000 + i] for i in range(len(HOSTILE))] == [got[i] for i in range(len(HOSTILE))]
        assert [got[1000 + i][0] for i in range(len(HOSTILE))] == HOSTILE
        refused = []
        for base, compiled in ((2000, None), (3000, store._batch_compiled())):
            with pytest.raises(exc.DataError) as nul:
                run(rows(base, [*HOSTILE[:STAGED_FROM_ROWS], "a\x00b"]), compiled)
            refused.append((type(nul.value.orig), str(nul.value.orig)))
        assert refused[0] == refused[1]
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(t).where(t.c.k >= 2000)).scalar() == 0
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


def test_an_upserts_stage_is_made_once_per_batch_and_emptied_by_each_group(request, tmp_path, monkeypatch):
    """An upsert's rows are copied into a stage of the session's, made (if not there) once per batch's
    transaction: one undone takes its stage with it, and behind a pooler the next transaction may
    be another session's. Two groups of one upsert in a batch share the stage; the first leaves it
    empty, so the second writes its own rows alone, over the first's."""
    store, t = _probe("postgresql", tmp_path, request)
    n = STAGED_FROM_ROWS
    upsert = postgresql.insert(t)
    upsert = upsert.on_conflict_do_update(index_elements=["k"], set_={"at": upsert.excluded.at})
    at = datetime(2026, 1, 1, tzinfo=UTC)
    store._plan = lambda _d, r: [(upsert, {"k": r.seq % n, "at": at + timedelta(days=r.seq)}, (r.seq % n,))]
    made: list[str] = []
    execute = psycopg.Cursor.execute
    monkeypatch.setattr(psycopg.Cursor, "execute", lambda self, sql, *a, **k: (
        made.append(sql) if str(sql).startswith("CREATE TEMPORARY TABLE") else None) or execute(self, sql, *a, **k))
    recs = copies(3)
    assert len(recs) >= 4 * n
    batch = WriteBatch()
    for r in recs[:2 * n]:
        batch.add(store._plan("postgresql", r))
    assert [len(rows) for _, rows in batch._groups] == [n, n]  # the key repeats: a second group
    assert store.apply_batch(recs[:2 * n]) == 2 * n and len(made) == 1
    with store.engine.connect() as conn:
        assert sorted(conn.execute(select(t.c.k, t.c.at))) == [
            (r.seq % n, at + timedelta(days=r.seq)) for r in sorted(recs[n:2 * n], key=lambda r: r.seq % n)]
    run = WriteBatch.run

    def run_then_fail(self, conn, compiled=None):
        run(self, conn, compiled)
        raise RuntimeError("after the writes")

    store.engine.dispose()  # a new session: no stage
    with monkeypatch.context() as m:
        m.setattr(WriteBatch, "run", run_then_fail)
        with pytest.raises(RuntimeError):
            store.apply_batch(recs[2 * n:3 * n])
    assert len(made) == 2 and store.last_seq() == recs[2 * n - 1].seq
    assert store.apply_batch(recs[2 * n:3 * n]) == n and len(made) == 3  # the undone stage made again
    assert store.apply_batch(recs[3 * n:4 * n]) == n and len(made) == 4  # and once in each batch
    with store.engine.connect() as conn:
        assert sorted(conn.execute(select(t.c.k, t.c.at))) == [
            (r.seq % n, at + timedelta(days=r.seq)) for r in sorted(recs[3 * n:4 * n], key=lambda r: r.seq % n)]
    store.engine.dispose()


def test_an_upsert_is_not_staged_where_the_database_refuses_temporary_tables(request, tmp_path, postgres_url):
    """A database that does not let the projection's user make temporary tables: its upserts run as
    ``executemany``, as before, and write the same rows (a plain INSERT's COPY needs no such right)."""
    store, t = _probe("postgresql", tmp_path, request)
    role, database = f"rethink_notemp_{uuid.uuid4().hex[:8]}", make_url(postgres_url).database
    with store.engine.connect() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar()
    admin = create_engine(postgres_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for sql in (f"CREATE ROLE {role} LOGIN", f"REVOKE TEMPORARY ON DATABASE {database} FROM PUBLIC",
                    f"GRANT USAGE ON SCHEMA {schema} TO {role}",
                    f"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA {schema} TO {role}"):
            conn.execute(text(sql))
    limited = make_engine(make_url(postgres_url).set(username=role).render_as_string(hide_password=False), schema)
    try:
        refused = ProjectionStore(limited, store.metadata, "probe", plan=lambda _d, _r: [])
        upsert = postgresql.insert(t)
        upsert = upsert.on_conflict_do_update(index_elements=["k"], set_={"at": upsert.excluded.at})
        at = datetime(2026, 1, 1, tzinfo=UTC)
        refused._plan = lambda _d, r: [(upsert, {"k": r.seq, "at": at}, (r.seq,))]
        assert refused._batch_compiled() is not None
        recs = copies(1)[:STAGED_FROM_ROWS]
        assert refused.apply_batch(recs) == len(recs)
        with limited.connect() as conn:
            assert sorted(k for (k,) in conn.execute(select(t.c.k))) == [r.seq for r in recs]
            assert conn.execute(text("SELECT count(*) FROM pg_class WHERE relname LIKE 'rethink_stage_%' "
                                     "AND relpersistence = 't'")).scalar() == 0
    finally:
        limited.dispose()
        store.engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"GRANT TEMPORARY ON DATABASE {database} TO PUBLIC"))
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
        admin.dispose()
