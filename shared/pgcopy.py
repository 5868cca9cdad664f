"""A batch's many rows of one INSERT sent to PostgreSQL as ``COPY … FROM STDIN`` (psycopg).

psycopg's pipelined ``executemany`` spends some 22 µs of the client's CPU on each row of a
rebuild's INSERT; COPY takes 10 (issue 7, seventh round). A plain INSERT's rows go straight into
their table. An upsert's (``INSERT … ON CONFLICT``, which COPY cannot do) go into a temporary table
of the session's first, then into theirs by one ``INSERT … SELECT`` with the same ON CONFLICT,
which empties the stage as it reads it (``DELETE … RETURNING``): 5 µs a row where ``executemany``
took 15. A multi-row upsert may not touch one row twice, which a batch's groups never ask of it
(``WriteBatch``: a group never holds two writes of one scope). The stage is made if missing
(``CREATE TEMPORARY TABLE IF NOT EXISTS``) once in each batch's transaction, and kept empty for the
session's next: no catalogue churn, and nothing assumed of a session a pooler may have swapped. A
database that refuses its user temporary tables gets the upserts as ``executemany``, as before.

Only what SQLAlchemy compiles to ``INSERT INTO t (cols) VALUES (%(a)s::TYPE, …)``, each value a
parameter cast to its column's type, with at most an ON CONFLICT clause that takes no parameters of
its own, is copied; COPY parses each value as its column's type, which is what that cast did.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect

# From how many rows a group goes as COPY. Below, COPY's own round trip (two for an upsert) cost more
# than ``executemany`` saved: measured, COPY was behind at 4 rows and ahead from 8.
COPY_FROM_ROWS = 8
STAGED_FROM_ROWS = 16

_PLACEHOLDER = r"%\((\w+)\)s(?:::[A-Z][A-Z ]*(?:\(\d+(?:, \d+)?\))?)?"  # a name, then its cast (VARCHAR(16))
_INSERT = re.compile(rf"INSERT INTO (?P<table>(?:\w+\.)?\w+) \((?P<columns>[\w, ]+)\) "
                     rf"VALUES \((?P<values>{_PLACEHOLDER}(?:, {_PLACEHOLDER})*)\)"
                     r"(?P<tail> ON CONFLICT \([\w, ]+\) DO (?:NOTHING|UPDATE SET .*))?", re.DOTALL)
TEMPORARY = "rethink_may_make_temporary"  # in the DB-API connection's ``info``: may its session make temporary tables?


@dataclass(frozen=True, slots=True)
class Copy:
    """How a group of one INSERT's rows goes as COPY: ``order`` says which of a row's values (in the
    order of ``CompiledWrite.slots``) goes to each column of the COPY."""

    copy: str
    order: tuple[int, ...]
    stage: str | None = None  # an upsert's temporary table, and how it is made and emptied into the table
    create: str | None = None
    insert: str | None = None

    def suits(self, conn: Connection, cursor: Any, rows: int) -> bool:
        """Whether a group of ``rows`` rows goes as this COPY: enough of them, and for an upsert a
        session that may make temporary tables (a database may refuse them to its users: asked once
        per connection, on ``cursor``, in the transaction; then ``executemany`` does as before)."""
        if self.stage is None:
            return rows >= COPY_FROM_ROWS
        if rows < STAGED_FROM_ROWS:
            return False
        info = conn.connection.info
        allowed = info.get(TEMPORARY)
        if allowed is None:
            cursor.execute("SELECT has_database_privilege(current_database(), 'TEMPORARY')")
            allowed = info[TEMPORARY] = bool(cursor.fetchone()[0])
        return bool(allowed)

    def run(self, cursor: Any, rows: list[Any], made: set[str]) -> None:
        """Send ``rows`` (each its values in ``order``) on ``cursor``. ``made``: the stages made in
        this transaction so far. Each transaction makes sure of its stage itself, once: a stage made
        in one that was undone is gone, and behind a pooler (PgBouncer) the next transaction may be
        another session's, without it."""
        if self.stage is not None and self.stage not in made:
            cursor.execute(self.create)
            made.add(self.stage)
        with cursor.copy(self.copy) as copy:
            for row in rows:
                copy.write_row(row)
        if self.insert is not None:
            cursor.execute(self.insert)


def as_copy(dialect: Dialect, compiled: Any, names: tuple[str, ...]) -> Copy | None:
    """The COPY that writes the rows ``compiled`` (an INSERT, its parameters ``names``) writes, or
    None for anything but PostgreSQL with psycopg and an INSERT of that shape."""
    if (dialect.name, dialect.driver) != ("postgresql", "psycopg") or not compiled.isinsert or compiled.positional:
        return None
    found = _INSERT.fullmatch(compiled.string)
    if found is None or (found["tail"] and "%(" in found["tail"]):
        return None
    table, columns, values = found["table"], [c.strip() for c in found["columns"].split(",")], found["values"]
    given = [m.group(1) for m in re.finditer(_PLACEHOLDER, values)]
    if len(given) != len(columns) or sorted(given) != sorted(names) or len(set(given)) != len(given):
        return None
    order, cols = tuple(names.index(n) for n in given), ", ".join(columns)
    if not found["tail"]:
        return Copy(f"COPY {table} ({cols}) FROM STDIN", order)
    # One stage per table and columns, in the session's own schema for temporary tables (pg_temp).
    stage = f"rethink_stage_{hashlib.sha1(f'{table} {cols}'.encode()).hexdigest()[:12]}"
    return Copy(f"COPY pg_temp.{stage} ({cols}) FROM STDIN", order, stage,
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} AS SELECT {cols} FROM {table} WITH NO DATA",
                f"WITH staged AS (DELETE FROM pg_temp.{stage} RETURNING {cols}) "
                f"INSERT INTO {table} ({cols}) SELECT {cols} FROM staged{found['tail']}")
