"""Projection plumbing shared by the services: engines, and apply-with-checkpoint.

A projection row change and the stream sequence it came from commit in one transaction,
so an event delivered twice (redelivery after a crash or a lost ack) changes nothing.
"""

from __future__ import annotations

import contextlib
import re
import threading
from bisect import bisect_left
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Dialect,
    Engine,
    MetaData,
    Select,
    String,
    Table,
    TypeDecorator,
    bindparam,
    create_engine,
    event,
    select,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool
from sqlalchemy.sql import Executable

from .envelope import Recorded
from .privacy import ERASURE

Apply = Callable[[Connection, Recorded], None]
# One row change: a prebuilt statement, its parameters, and its scopes: names for every row it may
# touch (a case id, a meeting id). Two writes with no scope in common touch no row in common, so
# they may run in either order; that is what lets a batch group them (``WriteBatch``).
Write = tuple[Executable, dict[str, Any], tuple[Hashable, ...]]
# What an event changes, as writes and nothing read first: the same writes serve one live event
# (``run_writes``) and a batch of them (``WriteBatch``), so a rebuild can only equal the live path.
Plan = Callable[[str, Recorded], Iterable[Write]]  # (dialect name, event)


@dataclass(frozen=True, slots=True)
class Unread:
    """An event a rebuild did not decode: what its subject and sequence say of it."""

    seq: int
    case_id: str
    type: str


# The writes for an event of a type outside a projection's ``HANDLES``, from the subject alone:
# a projection that needs only the case id (or nothing) from some types saves a rebuild decoding
# them. Its ``plan`` gives the same writes for those types (one definition serves both).
PlanUnread = Callable[[str, Unread], Iterable[Write]]
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on every database.

    SQLite keeps no offset and hands values back naive; everything is stored in UTC, so the
    zone is put back on the way out rather than by each projection.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("projections store aware datetimes only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso(value: datetime | date | None) -> str | None:
    return value.isoformat() if value is not None else None


def make_engine(url: str, schema: str | None = None) -> Engine:
    """An engine for one service's projection.

    On PostgreSQL every service lives in its own schema: the connection's ``search_path`` is
    that schema alone, so the projections' unqualified table names (and Alembic's version
    table) land there and nowhere else. SQLite has no schemas: one file per service does the
    same job, and ``schema`` is ignored.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # WAL lets readers (queries) run beside the writer
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            # Erased personal data must not linger in free pages of the file (docs/privacy.md).
            cur.execute("PRAGMA secure_delete=ON")
            cur.close()

        return engine
    connect_args: dict[str, object] = {}
    if parsed.get_backend_name() == "postgresql":
        # A bounded connect: readiness probes and retries must not hang on a dead database.
        connect_args["connect_timeout"] = 5
        if schema:
            connect_args["options"] = f"-csearch_path={check_schema_name(schema)}"
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def check_schema_name(schema: str) -> str:
    """Schema names go into SQL and connection options unquoted: allow plain identifiers only."""
    if not SCHEMA_NAME.fullmatch(schema):
        raise ValueError(f"database schema {schema!r}: use lower-case letters, digits and _ (at most 63)")
    return schema


def is_sqlite(engine_or_url: Engine | str) -> bool:
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else make_url(engine_or_url)
    return url.get_backend_name() == "sqlite"


def checkpoint_table(metadata: MetaData) -> Table:
    return Table(
        "checkpoint",
        metadata,
        Column("consumer", String(64), primary_key=True),
        Column("last_seq", BigInteger, nullable=False),  # a stream sequence is a uint64
    )


def run_writes(conn: Connection, writes: Iterable[Write]) -> None:
    """One event's writes, in order (the live path)."""
    for statement, params, _ in writes:
        conn.execute(statement, params)


def _applier(plan: Plan) -> Apply:
    """The one-event ``apply`` of a projection written as a ``Plan``."""

    def apply(conn: Connection, r: Recorded) -> None:
        run_writes(conn, plan(conn.dialect.name, r))

    return apply


class WriteBatch:
    """The writes of many events, run as a few ``executemany`` calls instead of one call each.

    Each write joins the earliest group of the same statement (and columns) that comes *after*
    every group holding an earlier write of one of its scopes; otherwise it opens a new group.
    Groups run in the order they were opened, their rows in the order they were added. So two
    writes that share a scope keep their order, in different groups; writes that share none may
    change places, which the scopes say is harmless. A group never holds two writes of one scope:
    a multi-row ``INSERT … ON CONFLICT DO UPDATE`` may not touch one row twice (PostgreSQL).
    """

    def __init__(self) -> None:
        self._groups: list[tuple[Executable, list[dict[str, Any]]]] = []
        self._by_shape: dict[tuple[Executable, tuple[str, ...]], list[int]] = {}
        self._last: dict[Hashable, int] = {}  # scope -> the latest group holding one of its writes

    def add(self, writes: Iterable[Write]) -> None:
        for statement, params, scopes in writes:
            after = max([self._last.get(s, -1) for s in scopes], default=-1) + 1
            shape = (statement, tuple(params))  # executemany needs the same columns in every row
            slots = self._by_shape.get(shape)
            k = bisect_left(slots, after) if slots else 0
            if slots and k < len(slots):
                group = slots[k]
            else:
                group = len(self._groups)
                self._groups.append((statement, []))
                self._by_shape.setdefault(shape, []).append(group)
            self._groups[group][1].append(params)
            for s in scopes:
                self._last[s] = group

    def run(self, conn: Connection) -> int:
        """Execute every group in order; returns how many statements that took."""
        for statement, rows in self._groups:
            conn.execute(statement, rows if len(rows) > 1 else rows[0])
        return len(self._groups)


class ProjectionStore:
    """Owns one service's tables; nobody else reads them.

    ``plan``: the projection's writes per event (see ``Plan``): one event runs them in order, a
    batch as grouped statements. A projection without one (ad-hoc ones in tests) gives ``apply``,
    and a batch runs it event by event. ``handles``: the event types the
    projection needs decoded (None: every type); a rebuild need not decode the others, and hands
    them to ``plan_unread`` (as ``Unread``) when the projection writes anything for them.
    """

    def __init__(self, engine: Engine, metadata: MetaData, consumer: str, apply: Apply | None = None,
                 schema: str | None = None, *, plan: Plan | None = None,
                 handles: Collection[str] | None = None, plan_unread: PlanUnread | None = None) -> None:
        if (apply is None) == (plan is None):
            raise ValueError("a projection store needs its projection's plan, or else an apply function")
        self.engine = engine
        self.schema = schema  # PostgreSQL schema it lives in (None on SQLite)
        self.metadata = metadata
        self.consumer = consumer
        self._apply = apply if apply is not None else _applier(plan)  # type: ignore[arg-type]
        self._plan = plan
        self.handles = frozenset(handles) if handles is not None else None
        self.plan_unread = plan_unread
        self._checkpoint = cp = metadata.tables["checkpoint"]
        # Built once: constructing a statement costs more than running it on SQLite.
        self._read_cp = select(cp.c.last_seq).where(cp.c.consumer == bindparam("c"))
        # A batch claims the checkpoint row before it applies anything: on PostgreSQL a second
        # writer of the same projection waits here, then sees what the first applied.
        self._claim_cp = self._read_cp.with_for_update()
        self._insert_cp = cp.insert()
        self._set_cp = cp.update().where(cp.c.consumer == bindparam("c")).values(last_seq=bindparam("s"))
        self._move_cp = (cp.update().where(cp.c.consumer == bindparam("c"), cp.c.last_seq < bindparam("s"))
                         .values(last_seq=bindparam("s")))
        self._writer = Writer(self) if plan is not None and Writer.suits(engine) else None

    def create_schema(self) -> None:
        """Create the tables straight from the metadata: for ad-hoc test projections only.

        A service's own projection is created and upgraded by its migrations
        (``rethink.shared.migrations``), never by ``create_all``.
        """
        self.metadata.create_all(self.engine)

    def ping(self) -> None:
        """Does the database answer? (readiness)"""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def last_seq(self) -> int:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(self._checkpoint.c.last_seq).where(self._checkpoint.c.consumer == self.consumer)
            ).first()
            return row[0] if row else 0

    def reset(self) -> None:
        """Empty this service's tables in one transaction (a rebuild starts from nothing).

        The tables themselves (and their migration revision) stay: they were made by migrations.
        """
        with self.engine.begin() as conn:
            for table in reversed(self.metadata.sorted_tables):
                conn.execute(table.delete())

    def apply_batch(self, batch: Sequence[Recorded | Unread], through: int = 0) -> int:
        """Apply many events, in log order, in one transaction; returns how many were new.

        ``through``: the last stream sequence this batch stands for, when events the projection
        ignores were left out of it (a rebuild does not decode them): the checkpoint moves there
        as it would have, had they been applied. Those are not counted. ``Unread`` events (outside
        ``handles``, not decoded) are applied through ``plan_unread``, and counted.
        """
        applied = 0
        with self.engine.begin() as conn:
            row = conn.execute(self._claim_cp, {"c": self.consumer}).first()
            last = start = row[0] if row else 0
            plan, dialect = self._plan, conn.dialect.name
            writes = WriteBatch()
            for recorded in batch:
                if recorded.seq <= last:
                    continue
                if isinstance(recorded, Unread):
                    if self.plan_unread is not None:
                        writes.add(self.plan_unread(dialect, recorded))
                elif plan is not None:
                    writes.add(plan(dialect, recorded))
                else:
                    self._apply(conn, recorded)
                last = recorded.seq
                applied += 1
            writes.run(conn)
            last = max(last, through)
            if row is None:
                conn.execute(self._insert_cp, {"consumer": self.consumer, "last_seq": last})
            elif last != start:
                conn.execute(self._set_cp, {"c": self.consumer, "s": last})
        if any(r.type == ERASURE for r in batch):
            self.scrub()
        return applied

    def apply(self, recorded: Recorded) -> bool:
        """Apply once. Returns False when the event was already applied.

        The checkpoint is moved first, by a conditional UPDATE (``last_seq < seq``): one statement
        both claims the event and says whether it was applied before, and on PostgreSQL its row
        lock makes a second writer of the same projection wait for this transaction's outcome.

        The one exception to "at or below the checkpoint means applied" is a parked event that an
        operator retries (``retrying_parked``): it was skipped, never applied, and the checkpoint
        has moved past it. It is applied now, and the checkpoint never moves back.

        A projection written as a ``plan`` is applied on the store's own connection (``Writer``):
        the same SQL and parameters SQLAlchemy would send, without a pool checkout and an execution
        context per statement. Whatever that way does not cover runs through the engine, as before.
        """
        applied = self._writer.apply(recorded) if self._writer is not None else None
        if applied is None:
            applied = self._apply_on_engine(recorded)
        if applied and recorded.type == ERASURE:
            self.scrub()
        return applied

    def _apply_on_engine(self, recorded: Recorded) -> bool:
        with self.engine.begin() as conn:
            moved = conn.execute(self._move_cp, {"c": self.consumer, "s": recorded.seq}).rowcount
            if not moved:
                row = conn.execute(self._read_cp, {"c": self.consumer}).first()
                if row is None:
                    conn.execute(self._insert_cp, {"consumer": self.consumer, "last_seq": recorded.seq})
                elif recorded.seq != _RETRYING.get():
                    return False
            self._apply(conn, recorded)
        return True

    def scrub(self) -> None:
        """After an erasure: SQLite's write-ahead log still holds the pages as they were before it;
        fold it into the file (whose freed space ``secure_delete`` zeroes) and truncate it."""
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


_RETRYING: ContextVar[int | None] = ContextVar("retrying_parked_seq", default=None)


@contextlib.contextmanager
def retrying_parked(seq: int) -> Iterator[None]:
    """While handling a parked event again, let the projection apply that one sequence."""
    token = _RETRYING.set(seq)
    try:
        yield
    finally:
        _RETRYING.reset(token)


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

    def parameters(self, params: dict[str, Any]) -> Any:
        values = [(params[key] if key is not None else const) if proc is None
                  else proc(params[key] if key is not None else const) for key, const, proc in self.slots]
        return self.sequence(values) if self.positional else dict(zip(self.names, values, strict=True))

    def prepare(self, params: dict[str, Any]) -> tuple[str, Any]:
        return self.sql, self.parameters(params)


def compiled_write(dialect: Dialect, statement: Executable, params: dict[str, Any]) -> CompiledWrite | None:
    """``statement`` compiled as ``Connection.execute(statement, params)`` compiles it (one row), or None
    when running it directly would not be exactly what SQLAlchemy does."""
    if getattr(statement, "_execution_options", None) or not hasattr(statement, "compile"):
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
    return CompiledWrite(compiled.string, compiled.positional, slots, names, dialect.execute_sequence_format)


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

    def _hooked(self) -> bool:
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

    def apply(self, recorded: Recorded) -> bool | None:
        """True or False as ``ProjectionStore.apply``; None: not done here, run it through the engine."""
        if self._move is None or self._read is None or self._insert is None or self._busy:
            return None
        thread = threading.get_ident()
        if self._thread is None:
            self._thread = thread
        elif self._thread != thread:
            return None
        if self._hooked():
            return None
        self._busy = True
        try:
            try:
                return self._transaction(recorded, kept=self._conn is not None)
            except _Stale:
                return self._transaction(recorded, kept=False)
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

    def _transaction(self, recorded: Recorded, kept: bool) -> bool:
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
                elif recorded.seq != _RETRYING.get():
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
            raise sa_exc.DBAPIError.instance(sql, params, e, self._dbapi_error,
                                             hide_parameters=self.engine.hide_parameters,
                                             connection_invalidated=disconnect, dialect=self.dialect) from e
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
