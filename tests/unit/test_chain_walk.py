"""``ChainWalk`` (one pass over the log, one event kept per case) agrees with ``verify_chain``.

The walk reports a case only while its chain is whole; anything else is left to ``verify_chain``
on the case's full history. So for every history, whatever was done to it: the walk gives a
report exactly when ``verify_chain`` finds the case intact (with its anchor), and then the same one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from rethink.shared.audit import Anchor, ChainWalk, Link, verify_chain, verify_stored
from rethink.shared.envelope import Envelope, Recorded, digest
from rethink.shared.events import ActionCompleted

CASE = "RT-AAAAAAAAAA"
AT = "2026-11-27T10:00:00+00:00"
Stored = list[tuple[int, bytes]]  # a case's messages in stream order: (sequence, bytes)


def _envelope(n: int, prev: Envelope | None, prev_bytes: bytes | None, **data: str) -> Envelope:
    now = datetime(2026, 11, 20, 9, n, tzinfo=UTC)
    return Envelope(event_id=uuid.uuid4(), type="ActionCompleted", schema_version=1, case_id=CASE,
                    occurred_at=now, recorded_at=now, producer="test", actor="test", correlation_id=uuid.uuid4(),
                    prev_event_id=prev.event_id if prev else None,
                    prev_hash=digest(prev_bytes) if prev_bytes else None,
                    data=ActionCompleted(action_id=f"A{n}", completed_on="2026-11-20", **data).model_dump(mode="json"))


def _chain(n: int) -> Stored:
    out: Stored = []
    prev = None
    for i in range(n):
        env = _envelope(i, prev, out[-1][1] if out else None)
        out.append((10 * (i + 1), env.to_bytes()))
        prev = env
    return out


def _history(stored: Stored) -> list[Recorded]:
    return [Recorded.sealed(b, seq) for seq, b in stored]


def _republished(stored: Stored, k: int, data: bytes | None = None) -> Stored:
    """Event ``k`` deleted and published again (``data``: changed) at the end of the log."""
    rest = stored[:k] + stored[k + 1:]
    return rest + [(stored[-1][0] + 5, data if data is not None else stored[k][1])]


def _altered_bytes(b: bytes) -> bytes:
    env = Envelope.from_bytes(b)
    return env.model_copy(update={"data": {**env.data, "completed_on": "2026-11-01"}}).to_bytes()


def _forged(stored: Stored, k: int, points_at: int | None) -> Stored:
    """A forged event put after ``k``, pointing at event ``points_at`` (None: claiming to be the first)."""
    target = Envelope.from_bytes(stored[points_at][1]) if points_at is not None else None
    env = _envelope(50, target, stored[points_at][1] if points_at is not None else None)
    return stored[:k + 1] + [(stored[k][0] + 1, env.to_bytes())] + stored[k + 1:]


TAMPERINGS: dict[str, Callable[[Stored, int], Stored]] = {
    "untouched": lambda s, k: s,
    "removed": lambda s, k: s[:k] + s[k + 1:],
    "altered in place": lambda s, k: s[:k] + [(s[k][0], _altered_bytes(s[k][1]))] + s[k + 1:],
    "republished unchanged": lambda s, k: _republished(s, k),
    "republished altered": lambda s, k: _republished(s, k, _altered_bytes(s[k][1])),
    "forged, pointing back": lambda s, k: _forged(s, k, 0 if k else None),
    "forged first": lambda s, k: _forged(s, k, None),
    "duplicated": lambda s, k: s + [(s[-1][0] + 5, s[k][1])],
    "two removed": lambda s, k: s[:k] + s[k + 2:],
}


def _walk(history: list[Recorded], anchor: Anchor | None) -> ChainWalk:
    walk = ChainWalk(anchor)
    for r in history:
        walk.add(Link.of(r))
    return walk


@pytest.mark.parametrize("how", TAMPERINGS)
@pytest.mark.parametrize("k", range(5))
@pytest.mark.parametrize("anchored", ["none", "head", "earlier", "missing", "changed", "in capitals", "not an id"])
def test_the_walk_reports_a_case_exactly_when_verify_chain_finds_it_intact(how, k, anchored):
    original = _chain(6)
    head = _history(original)[-1]
    anchor = {
        "none": None,
        "head": Anchor.of(head, AT),
        "earlier": Anchor.of(_history(original)[2], AT),
        "missing": Anchor(str(uuid.uuid4()), head.digest, head.seq, AT),
        "changed": Anchor(str(head.envelope.event_id), "0" * 64, head.seq, AT),
        "in capitals": Anchor(str(head.envelope.event_id).upper(), head.digest, head.seq, AT),
        "not an id": Anchor("head", head.digest, head.seq, AT),
    }[anchored]
    history = _history(TAMPERINGS[how](original, k))

    expected = verify_chain(CASE, history, anchor)
    walk = _walk(history, anchor)
    got = walk.report(CASE, anchor)

    assert (got is not None) == expected.intact
    if got is not None:
        assert got == expected
    assert walk.events == len(history) and walk.last == Link.of(history[-1])


def test_the_cases_of_the_table_do_break_the_chain():
    # Guards the table above: each tampering is one verify_chain sees (so the walk is tried on breaks).
    original = _chain(6)
    for how, tamper in TAMPERINGS.items():
        if how == "untouched":
            continue
        intact = [verify_chain(CASE, _history(tamper(original, k))).intact for k in range(1, 4)]
        assert not any(intact), how


def test_an_unreadable_event_leaves_the_case_to_its_own_read():
    walk = _walk(_history(_chain(3)), None)
    assert walk.report(CASE) is not None
    walk.unreadable()
    assert walk.report(CASE) is None and not walk.readable and walk.events == 4


def test_a_walk_of_no_readable_event_reports_nothing():
    walk = ChainWalk()
    walk.unreadable()
    assert walk.report(CASE) is None and walk.last is None


def test_an_anchor_made_from_a_link_is_the_one_made_from_the_event():
    [r] = _history(_chain(1))
    assert Anchor.of(Link.of(r), AT) == Anchor.of(r, AT) == Anchor(str(r.envelope.event_id), r.digest, r.seq, AT)


def _as_read(stored: Stored) -> list[tuple[bytes, int]]:
    """As the log hands a case's messages out: (bytes, stream sequence)."""
    return [(data, seq) for seq, data in stored]


def test_verify_stored_is_verify_chain_where_every_message_can_be_read():
    stored = _chain(4)
    tampered = stored[:1] + stored[2:]
    for messages in (stored, tampered):
        assert verify_stored(CASE, _as_read(messages)) == verify_chain(CASE, _history(messages))


def test_a_message_that_is_not_an_event_is_reported_where_it_stands_and_the_chain_checked_without_it():
    stored = _chain(4)
    slipped_in = stored[:2] + [(stored[1][0] + 1, b"{not json")] + stored[2:]
    report = verify_stored(CASE, _as_read(slipped_in))
    assert [(b.kind, b.seq) for b in report.breaks] == [("unreadable", stored[1][0] + 1)]
    assert "cannot be read as an event (not an event envelope" in report.breaks[0].detail
    assert report.events == 5 and not report.intact

    garbled = stored[:2] + [(stored[2][0], b'{"event_id": "x"}')] + stored[3:]
    report = verify_stored(CASE, _as_read(garbled))
    assert [(b.kind, b.seq) for b in report.breaks] == [("unreadable", stored[2][0]), ("removed", stored[3][0])]
