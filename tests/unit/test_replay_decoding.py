"""A replay's batch is decoded for the store as the store takes it (``rebuild._Decoding``): in log
order, the opened events first (an await each, in log order), the others one at a time, each let go
of before the next is made; unreadable events counted and left out. And the store takes a batch once
(``ProjectionStore.apply_batch`` of an iterator)."""

from __future__ import annotations

import asyncio
import gc
import weakref

from rethink.shared.envelope import InvalidEvent
from rethink.shared.privacy import ERASURE
from rethink.shared.projection import Unread
from rethink.shared.rebuild import _Decoding
from tests.unit.test_projection_batches import events, rows


class _Event:
    def __init__(self, seq: int, how: str) -> None:
        self.seq, self.how = seq, how


class _Log:
    """Decodes b"ok" and refuses anything else; notes each decoding as it happens."""

    def __init__(self, done: list[object]) -> None:
        self.done = done

    async def decode_for_projection(self, data: bytes, seq: int, kind: str) -> _Event:
        self.done.append(("opened", seq, kind))
        if data != b"ok":
            raise InvalidEvent("not ours")
        return _Event(seq, "opened")

    def decode_unopened(self, data: bytes, seq: int, kind: str) -> _Event:
        self.done.append(("unopened", seq, kind))
        if data != b"ok":
            raise InvalidEvent("not ours")
        return _Event(seq, "unopened")


def test_a_batch_is_decoded_in_log_order_the_opened_first_the_others_as_taken():
    done: list[object] = []
    wanted = [(b"ok", 1, False, "T1"), Unread(2, "RT-AAAAAAAAAA", "X"), (b"ok", 3, True, "T3"),
              (b"bad", 4, False, "T4"), (b"bad", 5, True, "T5"), (b"ok", 6, True, "T6"), (b"ok", 7, False, "T7")]
    decoding = _Decoding(_Log(done), wanted)  # type: ignore[arg-type]
    asyncio.run(decoding.open())
    assert done == [("opened", 3, "T3"), ("opened", 5, "T5"), ("opened", 6, "T6")]
    assert decoding.unreadable == 1
    taken = []
    alive = []
    for e in decoding:
        taken.append((e.seq, getattr(e, "how", "unread")))
        done.append(("taken", e.seq))
        if isinstance(e, _Event):  # (an ``Unread`` has no weak references)
            alive.append(weakref.ref(e))
        del e
        gc.collect()
        # Nothing but the taker holds an event: each is freed when the taker is done with it.
        assert [r() for r in alive] == [None] * len(alive)
    assert taken == [(1, "unopened"), (2, "unread"), (3, "opened"), (6, "opened"), (7, "unopened")]
    # Each decoded as the type its subject named (the one-pass decoding is typed by it).
    assert done[3:] == [("unopened", 1, "T1"), ("taken", 1), ("taken", 2), ("taken", 3), ("unopened", 4, "T4"),
                        ("taken", 6), ("unopened", 7, "T7"), ("taken", 7)]
    assert decoding.unreadable == 2


def test_a_batch_taken_once_is_applied_as_a_list_is_with_its_erasure_scrubbed(projection_db):
    store = projection_db("meeting")
    recs = events()
    assert any(r.type == ERASURE for r in recs)
    store.apply_batch(recs)
    as_list = rows(store)
    store.reset()
    scrubbed = []
    store.scrub = lambda: scrubbed.append(True)  # type: ignore[method-assign]
    assert store.apply_batch(iter(recs)) == len(recs)
    assert rows(store) == as_list
    assert scrubbed == [True]
