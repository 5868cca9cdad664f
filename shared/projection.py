"""Projection plumbing shared by the services: engines, and apply-with-checkpoint.

A projection row change and the stream sequence it came from commit in one transaction,
so an event delivered twice (redelivery after a crash or a lost ack) changes nothing.
"""

from __future__ import annotations

import contextlib
import re
from bisect import bisect_left
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator
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
    String,
    Table,
    TypeDecorator,
    bindparam,
    create_engine,
    event,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.sql import Executable

from .dbgone import notice_gone
from .envelope import Recorded
from .folding import Folds, Into, Names, RowUpdate, Upsert, shape_of
from .privacy import ERASURE
from .sqlwriter import REPEATABLE, CompiledWrite, Writer, cursor_of, run_on_cursor

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
# A statement's compiled form for one set of parameter names, or None (``Writer.compiled``).
Compiled = Callable[[Executable, dict[str, Any]], CompiledWrite | None]
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
    return notice_gone(create_engine(url, pool_pre_ping=True, connect_args=connect_args))


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


def repeatable(statement: Any) -> Any:
    """``statement`` marked as a write that changes nothing when it runs again with the same
    parameters, whatever ran in between: an insert that does nothing on conflict, of a row that no
    write deletes (meeting gives a case its row at every event of the case). A batch runs it once
    for each distinct set of parameters (``WriteBatch``); one event at a time runs it every time."""
    return statement.execution_options(**{REPEATABLE: True})


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
    A ``repeatable`` write already in the batch with the same parameters is left out: running it
    again would change nothing. A later write of a row that a ``row_insert`` or ``row_upsert`` of the
    batch makes goes into that write instead, when nothing between them named the table (``folding``);
    where that changes the pending write's statement or columns, it leaves its group (its place
    there emptied) and is added again as the later write would have been.
    """

    def __init__(self, *, fold: bool = True) -> None:
        """``fold=False``: nothing folded (a benchmark's baseline)."""
        self._groups: list[tuple[Executable, list[dict[str, Any] | None]]] = []
        self._by_shape: dict[tuple[Executable, tuple[str, ...]], list[int]] = {}
        self._last: dict[Hashable, int] = {}  # scope -> the latest group holding one of its writes
        # statement -> is it ``repeatable``, and what ``Folds`` makes of it
        self._shapes: dict[Executable, tuple[bool, Into | RowUpdate | Upsert | Names]] = {}
        self._done: set[tuple[Any, ...]] = set()  # the repeatable writes in the batch, with their parameters
        self._folds = Folds() if fold else None
        self._emptied: set[int] = set()  # groups a pending write moved out of (``Folds.fold``)

    def _shape(self, statement: Executable) -> tuple[bool, Into | RowUpdate | Upsert | Names]:
        repeats = bool(statement.get_execution_options().get(REPEATABLE))
        shape = self._shapes[statement] = (repeats, shape_of(statement, repeats))
        return shape

    def add(self, writes: Iterable[Write]) -> None:
        # Every write of a rebuild passes here: locals rather than attributes, a loop rather than
        # max() of a list, and a new group opened without a search when the shape's last is too early.
        groups, by_shape, last, shapes, done, folds = (
            self._groups, self._by_shape, self._last, self._shapes, self._done, self._folds)
        for statement, params, scopes in writes:
            shape = shapes.get(statement)
            if shape is None:
                shape = self._shape(statement)
            repeats, kind = shape
            if repeats:
                key = (statement, *params.items())
                if key in done:
                    continue
                done.add(key)
            if folds and type(kind) is not Into:  # an insert changes no row but its own
                if type(kind) is RowUpdate or type(kind) is Upsert:
                    folded = folds.fold(kind, params, scopes)  # type: ignore[arg-type]
                    if folded is True:
                        continue
                    if folded is not False:  # the row's pending write, changed, leaves its place and is added here
                        (g, i), statement, params, scopes = folded  # type: ignore[misc]
                        groups[g][1][i] = None
                        self._emptied.add(g)
                        repeats, kind = shapes.get(statement) or self._shape(statement)
                else:
                    folds.forget(kind, scopes)  # type: ignore[arg-type]
            after = 0  # the first group this write may join: after every group holding one of its scopes
            for s in scopes:
                g = last.get(s, -1)
                if g >= after:
                    after = g + 1
            columns = (statement, tuple(params))  # executemany needs the same columns in every row
            slots = by_shape.get(columns)
            if slots is None:
                slots = by_shape[columns] = []
            if slots and slots[-1] >= after:
                group = slots[bisect_left(slots, after)]
            else:
                group = len(groups)
                groups.append((statement, []))
                slots.append(group)
            rows = groups[group][1]
            rows.append(params)
            for s in scopes:
                last[s] = group
            if folds is not None and (type(kind) is Into or type(kind) is Upsert):
                folds.made(kind, statement, params, scopes, (group, len(rows) - 1))  # type: ignore[arg-type]

    def run(self, conn: Connection, compiled: Compiled | None = None) -> int:
        """Execute every group in order; returns how many statements that took.

        ``compiled``: a statement's compiled form for a set of parameter names (``Writer.compiled``),
        or None for one it does not cover. A group it covers runs on the DB-API cursor of ``conn``'s
        transaction (``run_on_cursor``): SQLAlchemy's processing of each row's parameters was half of
        what a batch's writes cost (fifth round). The others run through ``conn`` as before.
        """
        cursor = None
        made: set[str] = set()  # the COPY stages made in this transaction (``pgcopy``)
        ran = 0
        try:
            for n, (statement, held) in enumerate(self._groups):
                rows: list[dict[str, Any]] = (
                    [r for r in held if r is not None] if n in self._emptied else held)  # type: ignore[misc]
                if not rows:
                    continue
                ran += 1
                write = compiled(statement, rows[0]) if compiled is not None else None
                if write is None:
                    conn.execute(statement, rows if len(rows) > 1 else rows[0])
                    continue
                if cursor is None:
                    cursor = cursor_of(conn)
                run_on_cursor(conn, cursor, write, rows, made)
        finally:
            if cursor is not None:
                with contextlib.suppress(Exception):
                    cursor.close()
        return ran


class ProjectionStore:
    """Owns one service's tables; nobody else reads them.

    ``plan``: the projection's writes per event (see ``Plan``): one event runs them in order, a
    batch as grouped statements. A projection without one (ad-hoc ones in tests) gives ``apply``,
    and a batch runs it event by event. ``handles``: the event types the
    projection needs decoded (None: every type); a rebuild need not decode the others, and hands
    them to ``plan_unread`` (as ``Unread``) when the projection writes anything for them.
    ``unopened``: the types whose writes read none of their personal fields; a rebuild decodes
    them without opening any (``EventLog.decode_unopened``: each reads as an erased case's).
    """

    def __init__(self, engine: Engine, metadata: MetaData, consumer: str, apply: Apply | None = None,
                 schema: str | None = None, *, plan: Plan | None = None,
                 handles: Collection[str] | None = None, plan_unread: PlanUnread | None = None,
                 unopened: Collection[str] = ()) -> None:
        if (apply is None) == (plan is None):
            raise ValueError("a projection store needs its projection's plan, or else an apply function")
        if ERASURE in unopened:  # reading one must make the key cache forget its case
            raise ValueError(f"{ERASURE} is always decoded with its personal data opened")
        self.engine = engine
        self.schema = schema  # PostgreSQL schema it lives in (None on SQLite)
        self.metadata = metadata
        self.consumer = consumer
        self._apply = apply if apply is not None else _applier(plan)  # type: ignore[arg-type]
        self._plan = plan
        self.handles = frozenset(handles) if handles is not None else None
        self.plan_unread = plan_unread
        self.unopened = frozenset(unopened)
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
        # Whether a batch folds a row's later writes into the one that made it (``folding``). That
        # costs the client ~1-2 µs per write (a row looked up, a pending one kept) and saves a row
        # of a statement: worth it where a row costs the database something. Measured (replays
        # alternated, docs/performance.md, ninth round): on SQLite, in process, every projection was
        # 1-5 % slower folded; on PostgreSQL scheduling 15 % and meeting 9 % faster, the others even.
        self.folds = engine.dialect.name != "sqlite"

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

    def apply_batch(self, batch: Iterable[Recorded | Unread], through: int = 0) -> int:
        """Apply many events, in log order, in one transaction; returns how many were new.

        ``through``: the last stream sequence this batch stands for, when events the projection
        ignores were left out of it (a rebuild does not decode them): the checkpoint moves there
        as it would have, had they been applied. Those are not counted. ``Unread`` events (outside
        ``handles``, not decoded) are applied through ``plan_unread``, and counted. ``batch`` is
        taken once, each event dropped once its writes are had: a rebuild decodes each as it is taken.
        """
        applied = 0
        with self.engine.begin() as conn:
            row = conn.execute(self._claim_cp, {"c": self.consumer}).first()
            last = start = row[0] if row else 0
            plan, dialect = self._plan, conn.dialect.name
            writes = WriteBatch(fold=self.folds)
            erasure = False  # noted on the way: the batch is read once
            for recorded in batch:
                erasure = erasure or recorded.type == ERASURE
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
            writes.run(conn, self._batch_compiled())
            last = max(last, through)
            if row is None:
                conn.execute(self._insert_cp, {"consumer": self.consumer, "last_seq": last})
            elif last != start:
                conn.execute(self._set_cp, {"c": self.consumer, "s": last})
        if erasure:
            self.scrub()
        return applied

    def _batch_compiled(self) -> Compiled | None:
        """How a batch's groups may run on the cursor (``WriteBatch.run``): wherever the live writer
        runs (SQLite; PostgreSQL with psycopg), with nothing listening to the engine.

        On PostgreSQL too the cursor sends what SQLAlchemy sends (tested): an INSERT's rows go as
        psycopg's ``executemany`` (one pipeline: one round trip), as UPDATEs and DELETEs do, because
        SQLAlchemy 2.1 builds multi-row statements ("insertmanyvalues") for psycopg only for RETURNING.
        Should a later SQLAlchemy build them without (``use_insertmanyvalues_wo_returning``, as it
        does for psycopg2), the engine runs the batch. What the cursor saves is SQLAlchemy's work on
        each row: an execution context, the parameters processed row by row.
        """
        writer = self._writer
        if writer is None or writer.hooked() or self.engine.dialect.use_insertmanyvalues_wo_returning:
            return None
        return writer.compiled

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
        applied = self._writer.apply(recorded, _RETRYING.get()) if self._writer is not None else None
        if applied is None:
            applied = self._apply_on_engine(recorded)
        if recorded.type == ERASURE:  # a redelivered one too: a crash may have come between commit and scrub
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
