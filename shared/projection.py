"""Projection plumbing shared by the services: engines, and apply-with-checkpoint.

A projection row change and the stream sequence it came from commit in one transaction,
so an event delivered twice (redelivery after a crash or a lost ack) changes nothing.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import UTC, date, datetime
from pathlib import Path

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
    create_engine,
    event,
    select,
    text,
)
from sqlalchemy.engine import make_url

from .envelope import Recorded
from .privacy import ERASURE

Apply = Callable[[Connection, Recorded], None]
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


class ProjectionStore:
    """Owns one service's tables; nobody else reads them."""

    def __init__(self, engine: Engine, metadata: MetaData, consumer: str, apply: Apply,
                 schema: str | None = None) -> None:
        self.engine = engine
        self.schema = schema  # PostgreSQL schema it lives in (None on SQLite)
        self.metadata = metadata
        self.consumer = consumer
        self._apply = apply
        self._checkpoint = metadata.tables["checkpoint"]

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

    def apply_batch(self, batch: list[Recorded]) -> int:
        """Apply many events in one transaction (rebuilds); returns how many were new."""
        cp = self._checkpoint
        applied = 0
        with self.engine.begin() as conn:
            row = conn.execute(select(cp.c.last_seq).where(cp.c.consumer == self.consumer)).first()
            last = row[0] if row else 0
            for recorded in batch:
                if recorded.seq <= last:
                    continue
                self._apply(conn, recorded)
                last = recorded.seq
                applied += 1
            if row is None:
                conn.execute(cp.insert().values(consumer=self.consumer, last_seq=last))
            else:
                conn.execute(cp.update().where(cp.c.consumer == self.consumer).values(last_seq=last))
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
        """
        cp = self._checkpoint
        with self.engine.begin() as conn:
            moved = conn.execute(cp.update().where(cp.c.consumer == self.consumer, cp.c.last_seq < recorded.seq)
                                 .values(last_seq=recorded.seq)).rowcount
            if not moved:
                row = conn.execute(select(cp.c.last_seq).where(cp.c.consumer == self.consumer)).first()
                if row is None:
                    conn.execute(cp.insert().values(consumer=self.consumer, last_seq=recorded.seq))
                elif recorded.seq != _RETRYING.get():
                    return False
            self._apply(conn, recorded)
        if recorded.type == ERASURE:
            self.scrub()
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
