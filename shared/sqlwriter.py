"""A projection's live writes on a connection of its own, as the compiled SQL of its prebuilt statements.

``ProjectionStore.apply`` through the engine cost several times what the database spends on the
transaction (issue 7, fifth round): a pool checkout and return, an execution context per
statement. ``Writer`` keeps one DB-API connection and runs each statement's compiled SQL with the
parameters SQLAlchemy would send (``compiled_write``); whatever that does not cover exactly goes
through the engine, as before.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Dialect, Engine, Select
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import QueuePool
from sqlalchemy.sql import Executable

from .envelope import Recorded
from .folding import FOLDS
from .pgcopy import Copy, as_copy

REPEATABLE = "rethink_repeatable"  # the execution option ``projection.repeatable`` sets

if TYPE_CHECKING:
    from .projection import ProjectionStore

_Processor = Callable[[Any], Any] | None
_Slot = tuple[str | None, Any, _Processor]  # the value's key in the parameters (or None: a constant), constant, processor


@dataclass(frozen=True, slots=True)
class CompiledWrite:
    """One prebuilt statement compiled for one dialect and one set of parameter names, to be run on
    the DB-API cursor: the SQL string SQLAlchemy would send, and how to make the parameters it would
    send from the ones a ``Plan`` gives (a value by name, or a constant of the statement such as
    ``.values(status="completed")`` or a column's scalar default; then the type's bind processor, e.g.
    ``UtcDateTime``'s, exactly as ``DefaultExecutionContext._init_compiled`` applies them).

    ``compiled_write`` makes one, or says None for what it does not cover (RETURNING, expanding or
    literal-execute parameters, callable defaults or values, a required parameter not given...):
    those run through ``Connection.execute``.
    """

    sql: str
    positional: bool
    slots: tuple[_Slot, ...]  # positional: in order; named: one per name
    names: tuple[str, ...]  # named: the (escaped) parameter names, in the order of ``slots``
    sequence: Callable[[list[Any]], Any]  # the dialect's execute_sequence_format
    copy: Copy | None = None  # a group of many rows as COPY (PostgreSQL): ``pgcopy``
    _values: Callable[[dict[str, Any]], Any] = field(init=False, repr=False, compare=False)
    _copy_row: Callable[[dict[str, Any]], Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        values = _values_of(self.slots)
        object.__setattr__(self, "_values", values)
        order = self.copy.order if self.copy is not None else ()
        if order == tuple(range(len(self.slots))):
            object.__setattr__(self, "_copy_row", values)
        elif order:
            reorder = itemgetter(*order) if len(order) > 1 else lambda v: (v[order[0]],)
            object.__setattr__(self, "_copy_row", lambda params: reorder(values(params)))

    def copy_row(self, params: dict[str, Any]) -> Any:
        """A row's values as its COPY sends them: what ``parameters`` gives, in the COPY's column order."""
        return self._copy_row(params)

    def parameters(self, params: dict[str, Any]) -> Any:
        values = self._values(params)
        if self.positional:
            return values if type(values) is self.sequence else self.sequence(values)
        return dict(zip(self.names, values, strict=True))

    def prepare(self, params: dict[str, Any]) -> tuple[str, Any]:
        return self.sql, self.parameters(params)


def _values_of(slots: tuple[_Slot, ...]) -> Callable[[dict[str, Any]], Any]:
    """How a row's values are made, in ``slots`` order. Every row of a rebuild's batch passes here:
    where each is a value by name, one ``itemgetter`` call takes them all (then the processors run
    on theirs), about half the CPU of a loop over the slots."""
    if len(slots) < 2 or any(key is None for key, _, _ in slots):
        return lambda params: [(params[key] if key is not None else const) if proc is None
                               else proc(params[key] if key is not None else const) for key, const, proc in slots]
    take = itemgetter(*(key for key, _, _ in slots))  # a tuple of two or more
    processed = tuple((i, proc) for i, (_, _, proc) in enumerate(slots) if proc is not None)
    if not processed:
        return take

    def values(params: dict[str, Any]) -> list[Any]:
        row = list(take(params))
        for i, proc in processed:
            row[i] = proc(row[i])
        return row

    return values


def compiled_write(dialect: Dialect, statement: Executable, params: dict[str, Any]) -> CompiledWrite | None:
    """``statement`` compiled as ``Connection.execute(statement, params)`` compiles it (one row), or None
    when running it directly would not be exactly what SQLAlchemy does."""
    options = dict(getattr(statement, "_execution_options", None) or {})
    options.pop(REPEATABLE, None)  # ours, for a batch (``repeatable``, ``folding``): nothing SQLAlchemy acts on
    options.pop(FOLDS, None)
    if options or not hasattr(statement, "compile"):
        return None
    compiled: Any = statement.compile(dialect=dialect, column_keys=sorted(params), for_executemany=False)
    dml = compiled.isinsert or compiled.isupdate or compiled.isdelete
    if not (dml or isinstance(statement, Select)):
        return None
    if (compiled.effective_returning or compiled.literal_execute_params or compiled.post_compile_params
            or compiled.schema_translate_map or getattr(compiled, "_collected_params", None)
            or (compiled.positional and not compiled.positiontup)):
        return None
    defaults: dict[str, Any] = {}
    if compiled.insert_prefetch or compiled.update_prefetch:
        columns, described = ((compiled.insert_prefetch, "_default_description_tuple") if compiled.insert_prefetch
                              else (compiled.update_prefetch, "_onupdate_description_tuple"))
        for column in columns:
            arg, is_scalar, _is_callable, is_sentinel = getattr(column, described)
            if not is_scalar or is_sentinel:
                return None  # computed per execution: leave it to SQLAlchemy
            defaults[compiled._within_exec_param_key_getter(column)] = arg
    sources: dict[str, tuple[str | None, Any]] = {}
    for bind, name in compiled.bind_names.items():
        if bind.key in params:
            sources[name] = (bind.key, None)
        elif name in params:
            sources[name] = (name, None)
        elif bind.required or bind.callable or bind.expanding:
            return None
        else:
            sources[name] = (None, bind.value)
    for name, value in defaults.items():
        sources[name] = (None, value)
    processors = compiled._bind_processors
    if compiled.positional:
        order: Sequence[str] = compiled.positiontup
        names: tuple[str, ...] = ()
    else:
        order = list(sources)
        escaped = compiled.escaped_bind_names or {}
        names = tuple(escaped.get(n, n) for n in order)
    slots = tuple((*sources[n], processors.get(n)) for n in order)
    return CompiledWrite(compiled.string, compiled.positional, slots, names, dialect.execute_sequence_format,
                         as_copy(dialect, compiled, names))


def cursor_of(conn: Connection) -> Any:
    """A DB-API cursor of ``conn``'s connection, in its transaction. A driver that already knows its
    connection is closed (psycopg, once it has read the server's goodbye) refuses one: raised as
    ``Connection.execute`` raises that (the same class, the connection invalidated), not as the
    driver's own error, which the delivery layer would not know for transient."""
    dbapi_conn = conn.connection.dbapi_connection
    try:
        return dbapi_conn.cursor()  # type: ignore[union-attr]
    except conn.dialect.loaded_dbapi.Error as e:
        raise _driver_error(conn, None, e, None, None, False) from e


def run_on_cursor(conn: Connection, cursor: Any, write: CompiledWrite, rows: list[dict[str, Any]],
                  made: set[str] | None = None) -> None:
    """A batch's group of rows of one statement, run on ``cursor`` (of ``conn``'s DB-API connection,
    in its transaction) as SQLAlchemy runs it: ``execute`` for one row, ``executemany`` for more, the
    parameters as ``compiled_write`` makes them (the same as SQLAlchemy's, tested). Errors are raised
    as ``Connection.execute`` raises them (the same class and message, tested): what a bind processor
    raises as a ``StatementError`` naming the rows as given, a driver's error as its ``DBAPIError``
    naming the rows as sent (a connection it finds broken invalidated). The one departure: on
    PostgreSQL an INSERT's group of many rows goes as ``COPY … FROM STDIN`` (``pgcopy``), which
    writes the same rows (tested) for half the client's CPU or less; a driver's error is then of the
    same class, naming the COPY and the rows in its column order. ``made``: the COPY stages made in
    this transaction (``WriteBatch.run`` keeps it for its groups)."""
    sql, many, copy = write.sql, len(rows) > 1, write.copy
    dialect = conn.dialect
    params: Any = None
    try:
        copying = copy is not None and copy.suits(conn, cursor, len(rows))
    except dialect.loaded_dbapi.Error as e:
        raise _driver_error(conn, cursor, e, sql, None, False) from e
    try:
        if copying:
            params = [write.copy_row(p) for p in rows]
        else:
            params = [write.parameters(p) for p in rows] if many else write.parameters(rows[0])
    except Exception as e:
        raise as_sqlalchemy_error(conn.engine, sql, rows, e) from e
    try:
        if copying:
            assert copy is not None
            sql = copy.copy if copy.insert is None else f"{copy.copy}; {copy.insert}"  # what an error names
            copy.run(cursor, params, made if made is not None else set())
        elif many:
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params)
    except dialect.loaded_dbapi.Error as e:
        raise _driver_error(conn, cursor, e, sql, params, many) from e


def _driver_error(conn: Connection, cursor: Any, e: Exception, sql: str | None, params: Any, many: bool) -> Exception:
    """A driver's error as ``Connection.execute`` raises it, the connection invalidated if it is gone."""
    disconnect = conn.dialect.is_disconnect(e, conn.connection.dbapi_connection, cursor)
    if disconnect:
        conn.invalidate(e)
    return as_sqlalchemy_error(conn.engine, sql, params, e, disconnect, many)


def as_sqlalchemy_error(engine: Engine, sql: str | None, params: Any, error: Exception,
                        invalidated: bool = False, many: bool = False) -> Exception:
    """``error`` as ``Connection.execute`` raises it: a driver's error as its ``DBAPIError`` (an
    ``OperationalError``, an ``IntegrityError``...), anything else as a ``StatementError``; the
    same class and message (tested), so what the delivery layer retries stays retried. ``many``: the
    driver was running ``params``, a list of rows, in one call (SQLAlchemy then shows them all,
    where it would shorten one long set of parameters)."""
    dialect = engine.dialect
    return sa_exc.DBAPIError.instance(sql, params, error, dialect.loaded_dbapi.Error,
                                      hide_parameters=engine.hide_parameters, connection_invalidated=invalidated,
                                      dialect=dialect, ismulti=many)


class _Fallback(Exception):
    """A write ``compiled_write`` does not cover: the event goes through the engine instead."""


class Writer:
    """The single writer's own connection to the projection, and the prebuilt statements' compiled SQL.

    ``ProjectionStore.apply`` through the engine costs a pool checkout (a ping on PostgreSQL), an
    execution context per statement and a pool return: several times what the database spends on
    the transaction. Here one DB-API connection, taken from the engine's pool when first needed
    (with the pool's connect events and pre-ping) and detached from it, so the pool keeps its size
    for queries, runs the same statements with the same parameters (``compiled_write``, cached per
    statement and parameter names), then commits. After ``engine.dispose()`` (a new pool) the next
    event closes it and takes another.

    - Errors are raised as SQLAlchemy raises them (``DBAPIError.instance``: ``OperationalError``,
      ``IntegrityError``...), so the delivery layer's transient ones stay transient.
    - A connection found broken is closed and replaced. When that happens before the commit on a
      connection kept from an earlier event (a database restarted while idle: what the pool's
      ``pre_ping`` caught before), nothing was committed, and the event is retried at once on a
      new connection; otherwise the error is raised and the delivery layer retries.
    - It serves the thread that first used it (the service's event loop), one event at a time;
      another thread, a re-entrant call, an engine with statement listeners or echo, or a pool that
      is not a ``QueuePool`` (SQLite in memory) go through the engine.
    """

    CACHE_LIMIT = 512  # compiled forms kept; beyond this (statements built per event?) the engine does it

    def __init__(self, store: ProjectionStore) -> None:
        self.store = store
        self.engine = engine = store.engine
        self.dialect = engine.dialect
        self._dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error
        self._conn: Any = None  # the DB-API connection
        self._thread: int | None = None
        self._busy = False
        self._cache: dict[tuple[Executable, tuple[str, ...]], CompiledWrite | None] = {}
        cp = {"c": store.consumer, "s": 0}
        self._move = compiled_write(self.dialect, store._move_cp, cp)
        self._read = compiled_write(self.dialect, store._read_cp, {"c": store.consumer})
        self._insert = compiled_write(self.dialect, store._insert_cp, {"consumer": store.consumer, "last_seq": 0})
        self._pool: Any = None  # the pool the connection came from: ``engine.dispose()`` replaces it

    @staticmethod
    def suits(engine: Engine) -> bool:
        return (isinstance(engine.pool, QueuePool)
                and (engine.dialect.name, engine.dialect.driver) in {("sqlite", "pysqlite"), ("postgresql", "psycopg")})

    def hooked(self) -> bool:
        # a listener on the engine's or the dialect's events (a test counting statements, say), or echo
        engine = self.engine
        return bool(engine._has_events or getattr(engine.dialect, "_has_events", False) or engine.echo)

    def compiled(self, statement: Executable, params: dict[str, Any]) -> CompiledWrite | None:
        key = (statement, tuple(params))
        try:
            return self._cache[key]
        except KeyError:
            pass
        if len(self._cache) >= self.CACHE_LIMIT:
            return None  # statements made per event? The engine's cache, keyed by their structure, suits them
        found = self._cache[key] = compiled_write(self.dialect, statement, params)
        return found

    def apply(self, recorded: Recorded, retrying: int | None) -> bool | None:
        """True or False as ``ProjectionStore.apply``; None: not done here, run it through the engine."""
        if self._move is None or self._read is None or self._insert is None or self._busy:
            return None
        thread = threading.get_ident()
        if self._thread is None:
            self._thread = thread
        elif self._thread != thread:
            return None
        if self.hooked():
            return None
        self._busy = True
        try:
            try:
                return self._transaction(recorded, retrying, kept=self._conn is not None)
            except _Stale:
                return self._transaction(recorded, retrying, kept=False)
            except _Fallback:
                return None
        finally:
            self._busy = False

    def _connection(self) -> Any:
        if self._conn is not None and self.engine.pool is not self._pool:
            self._discard()  # the engine was disposed of: its connections are not to be used any more
        if self._conn is None:
            self._pool = self.engine.pool
            fairy = self.engine.raw_connection()  # the pool's connect events (SQLite's pragmas), pre-ping
            fairy.detach()
            self._conn = fairy.dbapi_connection
        return self._conn

    def _transaction(self, recorded: Recorded, retrying: int | None, kept: bool) -> bool:
        store = self.store
        conn = self._connection()  # raises as the engine does when the database is away
        cursor: Any = None
        sql: str | None = self._move.sql
        params: Any = None
        committing = planning = False
        try:
            cursor = conn.cursor()
            sql, params = self._move.prepare({"c": store.consumer, "s": recorded.seq})
            cursor.execute(sql, params)
            if not cursor.rowcount:
                sql, params = self._read.prepare({"c": store.consumer})
                cursor.execute(sql, params)
                rows = cursor.fetchall()
                if not rows:
                    sql, params = self._insert.prepare({"consumer": store.consumer, "last_seq": recorded.seq})
                    cursor.execute(sql, params)
                elif recorded.seq != retrying:
                    sql, params, committing = None, None, True  # SQLAlchemy names no statement for a commit
                    conn.commit()
                    return False
            writes = iter(store._plan(self.dialect.name, recorded))  # type: ignore[misc]
            while True:
                planning = True  # the projection's own code: what it raises is raised as it is
                try:
                    statement, values, _ = next(writes)
                except StopIteration:
                    break
                planning = False
                try:
                    write = self.compiled(statement, values)
                except Exception:  # let the engine say what is wrong with it, as it always did
                    raise _Fallback from None
                if write is None:
                    raise _Fallback
                sql, params = write.sql, [values]  # what an error names, as SQLAlchemy names it
                sql, params = write.prepare(values)
                cursor.execute(sql, params)
            sql, params, committing = None, None, True
            conn.commit()
            return True
        except _Fallback:
            self._rollback(conn)
            raise
        except BaseException as e:
            disconnect = isinstance(e, self._dbapi_error) and self.dialect.is_disconnect(e, conn, cursor)
            if disconnect or not isinstance(e, Exception):
                self._discard()
            else:
                self._rollback(conn)
            if disconnect and kept and not committing:
                raise _Stale from e
            if planning or not isinstance(e, Exception) or isinstance(e, sa_exc.StatementError):
                raise
            raise as_sqlalchemy_error(self.engine, sql, params, e, disconnect) from e
        finally:
            if cursor is not None:
                with contextlib.suppress(Exception):
                    cursor.close()

    def _rollback(self, conn: Any) -> None:
        try:
            conn.rollback()
        except Exception:
            self._discard()

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        """Close the writer's connection (a later event opens another)."""
        self._discard()


class _Stale(Exception):
    """A kept connection turned out broken before anything was committed: retry on a new one."""
