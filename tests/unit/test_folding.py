"""A batch folds a row's later ``row_update``s and ``row_upsert``s into the ``row_insert`` or
``row_upsert`` that made it, and only where that equals running them in turn (``rethink.shared.folding``).

Each test that stops a fold is built so that a fold there would leave a different row: without
the rule it names, the batch's result and the one-at-a-time result part.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, create_engine, event, func, select, text
from sqlalchemy.dialects import sqlite

from rethink.shared.folding import Into, RowUpdate, Upsert, row_insert, row_update, row_upsert, shape_of
from rethink.shared.projection import WriteBatch, repeatable, run_writes
from rethink.shared.sqlwriter import compiled_write

metadata = MetaData()
t = Table("t", metadata, Column("k", String(8), primary_key=True), Column("v", Integer), Column("w", String(20)))
u = Table("u", metadata, Column("k", String(8), primary_key=True), Column("seen", Integer))
INSERT = row_insert(t)
SET = row_update(t)  # sets whatever columns its parameters name
MARK = row_update(t, w="marked")
IF_ONE = t.update().where(t.c.k == bindparam("key"), t.c.v == 1).values(v=10)  # reads the row: not a row_update
MIRROR = u.update().where(u.c.k == bindparam("key")).values(  # names t in a subquery only
    seen=select(t.c.v).where(t.c.k == u.c.k).scalar_subquery())
ADD_U = u.insert()
RAW = text("UPDATE t SET v = v + 100 WHERE k = :key")  # a statement the batch cannot read
UPSERT_V = row_upsert(t, "sqlite", ["v"])  # on a conflict sets v alone
UPSERT_W = row_upsert(t, "sqlite", ["w"])
TOUCH = repeatable(row_upsert(t, "sqlite"))  # on a conflict does nothing


@pytest.fixture
def engine(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'fold.db'}")
    metadata.create_all(engine)
    yield engine
    engine.dispose()


@contextlib.contextmanager
def _sent(engine) -> Iterator[list[str]]:
    """Each statement the driver receives meanwhile, as its verb and table (an executemany counts once)."""
    sent: list[str] = []

    def note(_c, _cur, sql, _p, _ctx, _many) -> None:
        sent.append(" ".join(sql.split()[:3]))

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", note)


def _rows(engine) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        return {table.name: sorted(conn.execute(select(table)).all()) for table in (t, u)}


def _reset(engine) -> None:
    with engine.begin() as conn:
        conn.execute(t.delete())
        conn.execute(u.delete())


def _both_ways(engine, events: list[list[tuple]], cuts: list[int] | None = None) -> tuple[dict, dict, list[str]]:
    """The tables after ``events`` (each a list of writes) one at a time, and after them as batches
    (one, or cut before each index of ``cuts``), with the statements the batches sent."""
    for writes in events:
        with engine.begin() as conn:
            run_writes(conn, writes)
    one_by_one = _rows(engine)
    _reset(engine)
    bounds = sorted(cuts or [])
    with _sent(engine) as sent:
        for start, end in zip([0, *bounds], [*bounds, len(events)], strict=True):
            batch = WriteBatch()
            for writes in events[start:end]:
                batch.add(writes)
            with engine.begin() as conn:
                batch.run(conn)
    return one_by_one, _rows(engine), sent


def test_an_update_of_a_row_the_batch_inserts_goes_into_the_insert(engine):
    events = [[(INSERT, {"k": k, "v": 0, "w": None}, (k,))] for k in "ab"]
    events += [[(SET, {"k_k": "a", "v": 1}, ("a",))], [(MARK, {"k_k": "b"}, ("b",))],
               [(SET, {"k_k": "a", "v": 2, "w": "two"}, ("a",))]]
    one_by_one, batched, sent = _both_ways(engine, events)
    assert batched == one_by_one == {"t": [("a", 2, "two"), ("b", 0, "marked")], "u": []}
    assert sent == ["INSERT INTO t"]  # no UPDATE ran at all


def test_a_parameter_overrides_a_constant_folded_as_it_does_in_sqlalchemy(engine):
    events = [[(INSERT, {"k": "a", "v": 0, "w": None}, ("a",))], [(MARK, {"k_k": "a", "w": "given"}, ("a",))]]
    one_by_one, batched, sent = _both_ways(engine, events)
    assert batched == one_by_one == {"t": [("a", 0, "given")], "u": []}
    assert sent == ["INSERT INTO t"]


def test_an_update_that_moves_its_row_to_another_key_is_not_folded(engine):
    # In turn: a becomes b, and the update of a finds no row. Folded, the insert would make b, and the
    # update of a, still known as a, would change it.
    events = [[(INSERT, {"k": "a", "v": 0, "w": None}, ("a", "b"))], [(SET, {"k_k": "a", "k": "b"}, ("a", "b"))],
              [(SET, {"k_k": "a", "v": 9}, ("a", "b"))]]
    one_by_one, batched, _ = _both_ways(engine, events)
    assert batched == one_by_one == {"t": [("b", 0, None)], "u": []}


def test_a_write_that_reads_the_row_between_stops_the_fold(engine):
    # In turn: v 0, IF_ONE finds v != 1, then v = 1. Folded, the insert would send v = 1 and IF_ONE make it 10.
    events = [[(INSERT, {"k": "a", "v": 0, "w": None}, ("a",))], [(IF_ONE, {"key": "a"}, ("a",))],
              [(SET, {"k_k": "a", "v": 1}, ("a",))]]
    one_by_one, batched, sent = _both_ways(engine, events)
    assert batched == one_by_one == {"t": [("a", 1, None)], "u": []}
    assert sent == ["INSERT INTO t", "UPDATE t SET", "UPDATE t SET"]


def test_a_write_naming_the_table_in_a_subquery_stops_the_fold(engine):
    # In turn the mirror reads v = 0; folded, it would read the later v = 5.
    events = [[(INSERT, {"k": "a", "v": 0, "w": None}, ("a",)), (ADD_U, {"k": "a", "seen": None}, ("a",))],
              [(MIRROR, {"key": "a"}, ("a",))], [(SET, {"k_k": "a", "v": 5}, ("a",))]]
    one_by_one, batched, sent = _both_ways(engine, events)
    assert batched == one_by_one == {"t": [("a", 5, None)], "u": [("a", 0)]}
    assert sent.count("UPDATE t SET") == 1


def test_a_statement_the_batch_cannot_read_stops_the_fold(engine):
    # In turn: 0 + 100, then 7. Folded: 7 + 100.
    events = [[(INSERT, {"k": "a", "v": 0, "w": None}, ("a",))], [(RAW, {"key": "a"}, ("a",))],
              [(SET, {"k_k": "a", "v": 7}, ("a",))]]
    one_by_one, batched, sent = _both_ways(engine, events)
    assert batched == one_by_one == {"t": [("a", 7, None)], "u": []}
    assert sent.count("UPDATE t SET") == 2


def test_a_write_of_the_table_in_another_scope_leaves_the_row_to_fold_into(engine):
    events = [[(INSERT, {"k": k, "v": 0, "w": None}, (k,))] for k in "ab"]
    events += [[(IF_ONE, {"key": "b"}, ("b",))], [(SET, {"k_k": "a", "v": 1}, ("a",))]]
    one_by_one, batched, sent = _both_ways(engine, events)
    assert batched == one_by_one == {"t": [("a", 1, None), ("b", 0, None)], "u": []}
    assert sent == ["INSERT INTO t", "UPDATE t SET"]  # IF_ONE alone: the update of a folded


def test_an_update_of_a_column_the_insert_does_not_send_moves_the_insert_to_it(engine):
    # The insert's rows go in one executemany, all sending the same columns: this one, changed to
    # send w too, leaves its group and joins the batch where the update would have.
    events = [[(INSERT, {"k": "a", "v": 0}, ("a",))], [(INSERT, {"k": "b", "v": 0}, ("b",))],
              [(MARK, {"k_k": "a"}, ("a",))], [(SET, {"k_k": "a", "v": 3}, ("a",))]]
    one_by_one, batched, sent = _both_ways(engine, events)
    assert batched == one_by_one == {"t": [("a", 3, "marked"), ("b", 0, None)], "u": []}
    assert sent == ["INSERT INTO t", "INSERT INTO t"]  # b's, then a's with v and w: no UPDATE


def test_a_moved_insert_still_runs_before_the_later_writes_of_its_row(engine):
    # In turn: v 1, marked, then IF_ONE finds v = 1 and makes it 10. b's IF_ONE opens a group before
    # the moved insert's: a's must not join it, or it would find no row.
    events = [[(INSERT, {"k": "a", "v": 1}, ("a",))], [(IF_ONE, {"key": "b"}, ("b",))],
              [(MARK, {"k_k": "a"}, ("a",))], [(IF_ONE, {"key": "a"}, ("a",))]]
    one_by_one, batched, sent = _both_ways(engine, events)
    assert batched == one_by_one == {"t": [("a", 10, "marked")], "u": []}
    assert sent == ["UPDATE t SET", "INSERT INTO t", "UPDATE t SET"]  # the first group, emptied, sends nothing


def test_later_writes_of_a_row_an_upsert_makes_go_into_it(engine):
    events = [[(TOUCH, {"k": "a", "v": 0, "w": None}, ("a",))], [(TOUCH, {"k": "a", "v": 0, "w": None}, ("a",))],
              [(UPSERT_V, {"k": "a", "v": 1, "w": "ignored: the row is there"}, ("a",))],
              [(MARK, {"k_k": "a"}, ("a",))], [(UPSERT_V, {"k": "a", "v": 2, "w": "ignored"}, ("a",))]]
    one_by_one, batched, sent = _both_ways(engine, events)
    assert batched == one_by_one == {"t": [("a", 2, "marked")], "u": []}
    assert sent == ["INSERT INTO t"]  # one upsert, setting v and w on a conflict


def test_a_folded_upsert_sets_on_a_conflict_every_column_the_writes_folded_into_it_set(engine):
    # The row is there before the batch. In turn: the touch does nothing, v becomes 1, w becomes
    # "marked"; the insert's other values never land. Folded into the touch (which sets nothing on a
    # conflict), the changes would be lost unless the upsert that goes sets v and w on a conflict.
    with engine.begin() as conn:
        conn.execute(t.insert(), {"k": "a", "v": 0, "w": "old"})
    events = [[(TOUCH, {"k": "a", "v": 50, "w": "touched"}, ("a",))], [(SET, {"k_k": "a", "v": 1}, ("a",))],
              [(UPSERT_W, {"k": "a", "v": 60, "w": "marked"}, ("a",))]]
    batch = WriteBatch()
    for writes in events:
        batch.add(writes)
    with _sent(engine) as sent, engine.begin() as conn:
        batch.run(conn)
    assert _rows(engine)["t"] == [("a", 1, "marked")]
    assert len(sent) == 1


def test_an_upsert_that_does_nothing_leaves_a_row_the_batch_makes_as_it_is(engine):
    events = [[(INSERT, {"k": "a", "v": 7, "w": None}, ("a",))], [(TOUCH, {"k": "a", "v": 0, "w": "x"}, ("a",))]]
    one_by_one, batched, sent = _both_ways(engine, events)
    assert batched == one_by_one == {"t": [("a", 7, None)], "u": []}
    assert sent == ["INSERT INTO t"]


def test_an_update_of_a_row_made_before_the_batch_runs_as_an_update(engine):
    with engine.begin() as conn:
        conn.execute(t.insert(), {"k": "a", "v": 0, "w": None})
    batch = WriteBatch()
    batch.add([(SET, {"k_k": "a", "v": 4}, ("a",))])
    with _sent(engine) as sent, engine.begin() as conn:
        batch.run(conn)
    assert sent == ["UPDATE t SET"]
    assert _rows(engine)["t"] == [("a", 4, None)]


def test_only_the_three_shapes_are_marked_and_a_repeatable_insert_is_not_folded_into():
    assert shape_of(INSERT, False) == Into("t", ("k",))
    assert shape_of(MARK, False) == RowUpdate("t", ("k",), (("w", "marked"),))
    assert shape_of(MARK, False).params == ("k_k",)  # type: ignore[union-attr]
    assert shape_of(IF_ONE, False) == frozenset({"t"})
    assert shape_of(MIRROR, False) == frozenset({"t", "u"})
    assert shape_of(RAW, False) is None  # every table
    assert shape_of(repeatable(INSERT), True) == frozenset({"t"})
    assert shape_of(sqlite.insert(t).on_conflict_do_nothing(), False) == frozenset({"t"})
    assert shape_of(UPSERT_V, False) == Upsert("t", ("k",), frozenset({"v"}), "sqlite", t)
    assert shape_of(TOUCH, True) == Upsert("t", ("k",), frozenset(), "sqlite", t)  # repeatable, and folded
    assert row_upsert(t, "sqlite", ["v"]) is UPSERT_V  # a widened upsert groups with the projection's own
    assert row_upsert(t, "postgresql", ["v"]) is not UPSERT_V


def test_the_shapes_refuse_what_they_cannot_fold():
    keyless = Table("keyless", MetaData(), Column("v", Integer))
    with pytest.raises(ValueError, match="primary key"):
        row_insert(keyless)
    with pytest.raises(ValueError, match="primary key"):
        row_update(keyless)
    stamped = Table("stamped", MetaData(), Column("k", String(8), primary_key=True), Column("at", Integer, onupdate=1))
    with pytest.raises(ValueError, match="ON UPDATE"):
        row_update(stamped)
    with pytest.raises(ValueError, match="constants only"):
        row_update(t, v=t.c.v + 1)
    with pytest.raises(ValueError, match="constants only"):
        row_update(t, w=func.lower("X"))
    with pytest.raises(ValueError, match="primary key"):
        row_upsert(keyless, "sqlite")
    with pytest.raises(ValueError, match="ON UPDATE"):
        row_upsert(stamped, "sqlite", ["at"])
    with pytest.raises(ValueError, match="key column"):
        row_upsert(t, "sqlite", ["k"])
    with pytest.raises(ValueError, match="no such column"):
        row_upsert(t, "sqlite", ["nope"])
    with pytest.raises(ValueError, match="sqlite or postgresql"):
        row_upsert(t, "mysql", ["v"])


@pytest.mark.parametrize("statement, params", [(INSERT, {"k": "a", "v": 1, "w": None}), (MARK, {"k_k": "a"}),
                                               (SET, {"k_k": "a", "v": 1}), (UPSERT_V, {"k": "a", "v": 1}),
                                               (TOUCH, {"k": "a", "v": 1})])
def test_the_marked_shapes_still_run_on_the_cursor(statement, params):
    """The mark is an execution option of ours: the live writer must not take it for one of SQLAlchemy's."""
    assert compiled_write(sqlite.dialect(), statement, params) is not None


# --- any mix of writes: a batch, cut anywhere, equals one at a time -----------------------------------

KEYS = ["a", "b", "c"]


def _write(kind: str, k: str, n: int) -> tuple:
    scope = (k,)
    return {
        "set": lambda: (SET, {"k_k": k, "v": n}, scope),
        "set_w": lambda: (SET, {"k_k": k, "v": n, "w": f"w{n}"}, scope),
        "mark": lambda: (MARK, {"k_k": k}, scope),
        "mark_given": lambda: (MARK, {"k_k": k, "w": f"given{n}"}, scope),
        "if_one": lambda: (IF_ONE, {"key": k}, scope),
        "mirror": lambda: (MIRROR, {"key": k}, scope),
        "raw": lambda: (RAW, {"key": k}, scope),
        "upsert_v": lambda: (UPSERT_V, {"k": k, "v": n, "w": f"uv{n}"}, scope),
        "upsert_w": lambda: (UPSERT_W, {"k": k, "v": n + 10, "w": f"uw{n}"}, scope),
        "touch": lambda: (TOUCH, {"k": k, "v": 20 + n, "w": None}, scope),
    }[kind]()


MAKE = ("upsert_v", "upsert_w", "touch")  # the writes that make a row when it is not there
_op = st.tuples(st.sampled_from(["set", "set_w", "mark", "mark_given", "if_one", "mirror", "raw", *MAKE]),
                st.sampled_from(KEYS), st.integers(0, 2))


@st.composite
def _histories(draw: Callable) -> tuple[list[list[tuple]], list[int]]:
    """Each key's row inserted (with all its columns, or without ``w``) at some point, unless an upsert
    made it first (then the insert is an upsert too), writes of every kind before and after it, and
    the events cut into batches anywhere."""
    ops = draw(st.lists(_op, max_size=25))
    events: list[list[tuple]] = []
    for k in KEYS:
        full = draw(st.booleans())
        at = draw(st.integers(0, len(ops)))
        params = {"k": k, "v": 1, "w": None} if full else {"k": k, "v": 1}
        ops.insert(at, ("insert", k, params))  # type: ignore[arg-type]
    made: set[str] = set()
    for kind, k, n in ops:
        if kind == "insert":
            make = (UPSERT_V if k in made else INSERT, n, (k,))
            events.append([make, (ADD_U, {"k": k, "seen": None}, (k,))])  # type: ignore[list-item]
        else:
            events.append([_write(kind, k, n)])
        if kind == "insert" or kind in MAKE:
            made.add(k)
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(events))), max_size=4))))
    return events, cuts


@hsettings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=_histories())
def test_any_batches_of_any_writes_leave_the_rows_one_at_a_time_leaves(engine, history):
    events, cuts = history
    _reset(engine)
    one_by_one, batched, _ = _both_ways(engine, events, cuts)
    assert batched == one_by_one
