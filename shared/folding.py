"""A batch's updates of a row folded into the insert that made it (``WriteBatch``).

In a rebuild most rows are made and then changed within one batch: a case is assigned and closed,
a meeting rescheduled and held, an action completed. One at a time, each change is an UPDATE by
primary key; in a batch, while the row's INSERT has not run yet, the change can go into the values
it will insert, and the UPDATE need not run at all (a third of scheduling's writes; issue 7, the
eighth round).

That equals running them in turn only if nothing between the two could see or change that row.
So folding is offered by two statement shapes alone, built here and marked so a batch knows them:
``row_insert`` (a plain INSERT: it makes its own row and touches no other) and ``row_update``
(an UPDATE of one row by its whole primary key, setting given values: no expression reads the row).
``Folds`` keeps the rows inserted so far in a batch, and forgets those of a table, in a write's
scopes, as soon as any other write of the batch names that table (as its target or in a subquery;
a statement it cannot read, such as ``text()``, forgets every table in its scopes). A row forgotten
takes its later updates as UPDATEs again, after whatever came between.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import Table, and_, bindparam
from sqlalchemy.sql import Executable
from sqlalchemy.sql.util import find_tables

FOLDS = "rethink_folds"  # the execution option that marks the two shapes


@dataclass(frozen=True, slots=True)
class Into:
    """A ``row_insert``: the table, and its primary key's column names (the row's identity)."""

    table: str
    columns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RowUpdate:
    """A ``row_update``: the table, its primary key's column names (as ``Into``'s), and the constants its
    ``values`` set. ``params``: the parameters that name the row (``key_param`` of each column). Every
    other parameter sets the column of its name; one that sets a key column moves the row, and is
    not folded."""

    table: str
    columns: tuple[str, ...]
    constants: tuple[tuple[str, Any], ...]
    params: tuple[str, ...] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", tuple(key_param(c) for c in self.columns))


def key_param(column: str) -> str:
    """The parameter that names a ``row_update``'s row by this key column."""
    return f"k_{column}"


def row_insert(table: Table) -> Executable:
    """``table.insert()``, marked as an insert whose row a batch's later ``row_update``s may fold into."""
    columns = tuple(c.name for c in table.primary_key.columns)
    if not columns:
        raise ValueError(f"{table.name}: a row_insert needs a primary key to know its row by")
    return table.insert().execution_options(**{FOLDS: Into(table.name, columns)})


def row_update(table: Table, **constants: Any) -> Executable:
    """An UPDATE of the one row of ``table`` whose primary key the parameters ``k_<column>`` give,
    setting ``constants`` and the columns its other parameters name, and marked so a batch may fold
    it into that row's ``row_insert``. Constants only: a value computed from the row would need the
    row, and that is what folding does without."""
    columns = [c.name for c in table.primary_key.columns]
    if not columns:
        raise ValueError(f"{table.name}: a row_update needs a primary key to find its row by")
    if any(c.onupdate is not None or c.server_onupdate is not None for c in table.columns):
        # An UPDATE would set such a column, an insert folded into would not.
        raise ValueError(f"{table.name}: a row_update cannot fold into a table with ON UPDATE columns")
    if any(not _plain(v) for v in constants.values()):
        raise ValueError(f"{table.name}: a row_update sets constants only (plain values, not expressions)")
    statement = table.update().where(and_(*(table.c[c] == bindparam(key_param(c)) for c in columns)))
    if constants:
        statement = statement.values(**constants)
    marked = RowUpdate(table.name, tuple(columns), tuple(constants.items()))
    return statement.execution_options(**{FOLDS: marked})


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | bytes)


# What a batch knows of any other write: the tables it names (None: it cannot say, so all of them).
Names = frozenset[str] | None


@lru_cache(maxsize=1024)  # once per statement, not per batch: reading one's tables took ~10-20 µs
def shape_of(statement: Executable, repeatable: bool) -> Into | RowUpdate | Names:
    """How ``Folds`` treats a statement."""
    marked = statement.get_execution_options().get(FOLDS)
    if isinstance(marked, Into | RowUpdate) and not repeatable:
        return marked
    if getattr(statement, "is_dml", False):
        tables = find_tables(statement, check_columns=True, include_crud=True)  # type: ignore[arg-type]
        names = frozenset(getattr(t, "name", None) for t in tables)
        return None if None in names else names  # type: ignore[return-value]
    return None


class Folds:
    """The rows a batch has inserted through ``row_insert`` and may still fold updates into."""

    __slots__ = ("_rows", "_by_scope")

    def __init__(self) -> None:
        self._rows: dict[tuple[Any, ...], dict[str, Any]] = {}  # (table, *key values) -> the insert's parameters
        self._by_scope: dict[tuple[str, Hashable], list[tuple[Any, ...]]] = {}  # (table, scope) -> rows

    def __bool__(self) -> bool:
        return bool(self._rows)

    def inserted(self, into: Into, params: dict[str, Any], scopes: tuple[Hashable, ...]) -> None:
        """A ``row_insert`` joined the batch: its parameters (the very dict its group will send) may
        take the row's later updates. A plain insert changes no other row: nothing is forgotten."""
        try:
            row = (into.table, *(params[c] for c in into.columns))
        except KeyError:  # a key column left to its default: the row cannot be named, so not folded into
            return
        self._rows[row] = params
        for s in scopes:
            self._by_scope.setdefault((into.table, s), []).append(row)

    def fold(self, update: RowUpdate, params: dict[str, Any]) -> bool:
        """Put ``update`` into its row's pending insert, if there is one and it sends every column the
        update sets (an executemany's rows share their columns). False: run it as an UPDATE."""
        try:
            target = self._rows.get((update.table, *(params[p] for p in update.params)))
        except KeyError:
            return False
        if target is None:
            return False
        named_by = update.params
        # A parameter named like a constant's column overrides the constant, as it does in SQLAlchemy.
        changes = list(update.constants)
        changes.extend((c, v) for c, v in params.items() if c not in named_by)
        if not all(c in target and c not in update.columns for c, _ in changes):
            return False
        for c, v in changes:
            target[c] = v
        return True

    def forget(self, tables: Names, scopes: tuple[Hashable, ...]) -> None:
        """A write that may touch rows of ``tables`` (None: any) in ``scopes`` joined the batch:
        later updates of those rows must run after it, as UPDATEs."""
        by_scope, rows = self._by_scope, self._rows
        if tables is None:
            for table, s in [k for k in by_scope if k[1] in scopes]:
                for row in by_scope.pop((table, s)):
                    rows.pop(row, None)
            return
        for table in tables:
            for s in scopes:
                gone = by_scope.pop((table, s), None)
                if gone:
                    for row in gone:
                        rows.pop(row, None)
