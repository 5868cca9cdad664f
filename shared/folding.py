"""A batch's later writes of a row folded into the write that made it (``WriteBatch``).

In a rebuild most rows are made and then changed within one batch: a case is assigned and closed,
a meeting rescheduled and held, an action completed. One at a time, each change is an UPDATE (or an
upsert) by primary key; in a batch, while the row's INSERT has not run yet, the change can go into
the values it will insert, and the later statement need not run at all (a third of scheduling's
writes, half of meeting's; issue 7, the eighth and ninth rounds).

That equals running them in turn only if nothing between the two could see or change that row.
So folding is offered by three statement shapes alone, built here and marked so a batch knows them:
``row_insert`` (a plain INSERT: it makes its own row and touches no other), ``row_upsert`` (an
INSERT of one row that on a conflict of its primary key sets given columns to the values it
carried: no expression reads the row) and ``row_update`` (an UPDATE of one row by its whole primary
key, setting given values). ``Folds`` keeps the rows made so far in a batch, and forgets those of a
table, in a write's scopes, as soon as any other write of the batch names that table (as its
target or in a subquery; a statement it cannot read, such as ``text()``, forgets every table in its
scopes). A row forgotten takes its later writes as statements of their own again, after whatever
came between.

A later write folds into the row's pending one thus (``Folds.fold``); its changes are the values it
sets (an update's constants and parameters, an upsert's columns to set):

- into an insert: the insert's values, changed;
- into an upsert: the upsert's values, changed, and on a conflict it sets its own columns and the
  changed ones. Had the row existed before the upsert, running both in turn would set the first's
  columns, then the second's; the one statement sets the same columns to the same values.

Where that leaves the pending write's statement and columns as they were, its parameters are
changed where they wait in their group. Otherwise (a column it did not send, an upsert setting
more) the pending write leaves its group and is added again, changed, where the later write would
have gone: an executemany's rows share their statement and columns. Moving the row's write later
is harmless for the same reason folding is: nothing between them named its table in its scopes.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from operator import itemgetter
from typing import Any

from sqlalchemy import Table, and_, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import Executable
from sqlalchemy.sql.util import find_tables

FOLDS = "rethink_folds"  # the execution option that marks the three shapes


@dataclass(frozen=True, slots=True)
class Into:
    """A ``row_insert``: the table, and its primary key's column names (the row's identity). ``key``:
    the row's key values from a write's parameters (as each shape's ``key``: one value, or a tuple)."""

    table: str
    columns: tuple[str, ...]
    key: Callable[[dict[str, Any]], Any] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", itemgetter(*self.columns))


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
    key: Callable[[dict[str, Any]], Any] = field(init=False, compare=False, repr=False)
    # The key columns, when no constant sets one (None: one does, and the update moves its row).
    key_columns: frozenset[str] | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", tuple(key_param(c) for c in self.columns))
        object.__setattr__(self, "key", itemgetter(*self.params))
        moves = any(c in self.columns for c, _ in self.constants)
        object.__setattr__(self, "key_columns", None if moves else frozenset(self.columns))


@dataclass(frozen=True, slots=True)
class Upsert:
    """A ``row_upsert``: the table, its primary key's column names (as ``Into``'s), and the columns it
    sets on a conflict (none: it does nothing). ``source`` and ``dialect`` build the same upsert setting
    more columns (``widened``), the statement a fold into this one may need."""

    table: str
    columns: tuple[str, ...]
    sets: frozenset[str]
    dialect: str
    source: Table = field(compare=False, repr=False)
    key: Callable[[dict[str, Any]], Any] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", itemgetter(*self.columns))

    def widened(self, more: Iterable[str]) -> Executable:
        return row_upsert(self.source, self.dialect, self.sets.union(more))


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


def row_upsert(table: Table, dialect: str, sets: Iterable[str] = ()) -> Executable:
    """``INSERT … ON CONFLICT (<primary key>) DO UPDATE SET c = excluded.c`` for each column of ``sets``
    (``DO NOTHING`` for none), for the dialect named (``sqlite`` or ``postgresql``), marked so a batch
    may fold it into that row's pending write and that row's later writes into it. The same
    arguments give the same statement object: a fold's widened upsert groups with the projection's
    own (``WriteBatch`` groups rows by statement)."""
    return _row_upsert(table, dialect, frozenset(sets))


@lru_cache(maxsize=256)
def _row_upsert(table: Table, dialect: str, sets: frozenset[str]) -> Executable:
    columns = tuple(c.name for c in table.primary_key.columns)
    if not columns:
        raise ValueError(f"{table.name}: a row_upsert needs a primary key to know its row by")
    if any(c.onupdate is not None or c.server_onupdate is not None for c in table.columns):
        raise ValueError(f"{table.name}: a row_upsert cannot fold into a table with ON UPDATE columns")
    unknown = sorted(sets - set(table.columns.keys()))
    if unknown:
        raise ValueError(f"{table.name}: a row_upsert cannot set {', '.join(unknown)}: no such column")
    if sets & set(columns):
        raise ValueError(f"{table.name}: a row_upsert cannot set a key column: that would move its row")
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(dialect)
    if insert is None:
        raise ValueError(f"a row_upsert is for sqlite or postgresql, not {dialect!r}")
    statement = insert(table)
    if sets:
        statement = statement.on_conflict_do_update(index_elements=list(columns),
                                                    set_={c: statement.excluded[c] for c in sorted(sets)})
    else:
        statement = statement.on_conflict_do_nothing(index_elements=list(columns))
    return statement.execution_options(**{FOLDS: Upsert(table.name, columns, sets, dialect, table)})


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | bytes)


# What a batch knows of any other write: the tables it names (None: it cannot say, so all of them).
Names = frozenset[str] | None


@lru_cache(maxsize=1024)  # once per statement, not per batch: reading one's tables took ~10-20 µs
def shape_of(statement: Executable, repeatable: bool) -> Into | RowUpdate | Upsert | Names:
    """How ``Folds`` treats a statement. A ``repeatable`` upsert is folded like any other (run again,
    it would change nothing; folded, it changes nothing either); a repeatable insert or update is not."""
    marked = statement.get_execution_options().get(FOLDS)
    if isinstance(marked, Upsert) or (isinstance(marked, Into | RowUpdate) and not repeatable):
        return marked
    if getattr(statement, "is_dml", False):
        tables = find_tables(statement, check_columns=True, include_crud=True)  # type: ignore[arg-type]
        names = frozenset(getattr(t, "name", None) for t in tables)
        return None if None in names else names  # type: ignore[return-value]
    return None


Where = tuple[int, int]  # a pending write's group in its batch, and its place in the group's rows
# A later write folded into a pending one that had to move (``Folds.fold``): where the pending one
# was, and the statement, parameters and scopes of the write that takes its place.
Moved = tuple[Where, Executable, dict[str, Any], tuple[Hashable, ...]]


class Folds:
    """The rows a batch has made through ``row_insert`` or ``row_upsert`` and may still fold later
    writes of into the write that made them."""

    __slots__ = ("_rows", "_by_scope")

    def __init__(self) -> None:
        # (table, key value or values) -> the pending write: its parameters (the very dict its group will
        # send), shape, statement, place in the batch and scopes
        self._rows: dict[tuple[Any, ...], tuple[dict[str, Any], Into | Upsert, Executable, Where,
                                                tuple[Hashable, ...]]] = {}
        self._by_scope: dict[tuple[str, Hashable], list[tuple[Any, ...]]] = {}  # (table, scope) -> rows

    def __bool__(self) -> bool:
        return bool(self._rows)

    def made(self, kind: Into | Upsert, statement: Executable, params: dict[str, Any],
             scopes: tuple[Hashable, ...], where: Where) -> None:
        """A write that makes its row joined the batch at ``where``: it may take the row's later
        writes. It changes no other row: nothing is forgotten."""
        try:
            row = (kind.table, kind.key(params))
        except KeyError:  # a key column left to its default: the row cannot be named, so not folded into
            return
        self._rows[row] = (params, kind, statement, where, scopes)
        by_scope = self._by_scope
        for s in scopes:
            found = by_scope.get((kind.table, s))
            if found is None:
                by_scope[kind.table, s] = [row]
            else:
                found.append(row)

    def fold(self, kind: RowUpdate | Upsert, params: dict[str, Any], scopes: tuple[Hashable, ...]
             ) -> bool | Moved:
        """Put a later write of a row into the row's pending write, if there is one. True: done where
        the pending write waits. ``Moved``: the pending write, changed, must leave its place and be
        added as the given one. False: run the later write as a statement of its own; it changes its
        own row alone, so only that row is forgotten, or, when it may move a row to another key (a
        key column set, or a key not given), every row of its table in its scopes."""
        try:
            row = (kind.table, kind.key(params))
        except KeyError:
            self.forget((kind.table,), scopes)
            return False
        if type(kind) is RowUpdate and (kind.key_columns is None or not kind.key_columns.isdisjoint(params)):
            self.forget((kind.table,), scopes)
            return False
        pending = self._rows.get(row)
        if pending is None:
            return False
        changes: dict[str, Any]
        if type(kind) is RowUpdate:
            named_by = kind.params
            # A parameter named like a constant's column overrides the constant, as it does in SQLAlchemy.
            changes = dict(kind.constants)
            changes.update((c, v) for c, v in params.items() if c not in named_by)
        else:
            try:
                changes = {c: params[c] for c in kind.sets}
            except KeyError:  # a column to set but not sent: set to its default, which is not known here
                del self._rows[row]
                return False
            if not changes:  # it does nothing on a conflict, and the row is the batch's
                return True
        target, made, statement, where, was = pending
        if changes.keys() <= target.keys() and (type(made) is Into or changes.keys() <= made.sets):
            target.update(changes)
            return True
        del self._rows[row]  # made again where the changed write is added (``WriteBatch.add``)
        target.update(changes)
        if type(made) is Upsert:
            statement = made.widened(changes)
        return where, statement, target, was if scopes == was else was + tuple(s for s in scopes if s not in was)

    def forget(self, tables: Names, scopes: tuple[Hashable, ...]) -> None:
        """A write that may touch rows of ``tables`` (None: any) in ``scopes`` joined the batch:
        later writes of those rows must run after it, as statements of their own."""
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
