"""The retention sweep's fold (one pass over the log) decides as the sweep did on each case's history.

Until the thirteenth round of the performance work the sweep read each case in turn and asked three
functions of its history; they are kept here, as they were, as the oracle. Every history of up to
five events drawn from the kinds that matter (closings on different days, erasures, events with
and without personal data, a sealed actor) is folded event by event and compared.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, date, datetime

import pytest

from rethink.shared.envelope import Envelope, Recorded
from rethink.shared.erasure import CLOSED, RetentionFold, add_years
from rethink.shared.privacy import ERASURE, envelope_kids

CASE = "RT-AAAAAAAAAA"
SEALED = {"enc": "v1", "kid": "k1", "nonce": "bm9uY2U=", "ct": "Y3Q="}


def already_erased(history: list[Recorded]) -> bool:
    last = max((i for i, r in enumerate(history) if r.type == ERASURE), default=None)
    return last is not None and not any(envelope_kids(r.envelope) for r in history[last + 1:])


def closed_on(history: list[Recorded]) -> date | None:
    closed = [r for r in history if r.type == CLOSED]
    return closed[-1].envelope.occurred_at.date() if closed else None


def retention_due(history: list[Recorded], years: int) -> date | None:
    closed = closed_on(history)
    return add_years(closed, years) if closed is not None else None


def _event(kind: str) -> Envelope:
    event_type, day, data, actor = {
        "closed in 2019": (CLOSED, 3, {"reason": "resolved_at_meeting"}, "test"),
        "closed on 29 February 2020": (CLOSED, 29, {"reason": "resolved_at_meeting"}, "test"),
        "erased": (ERASURE, 5, {"kid": "k1", "reason": "retention"}, "test"),
        "personal": ("MeetingHeld", 4, {"notes": SEALED}, "test"),
        "nested personal": ("ActionRecorded", 4, {"actions": [{"owner": SEALED}]}, "test"),
        "sealed actor": ("ChecksConfirmed", 4, {}, "enc:v1:k1:bm9uY2U=:Y3Q="),
        "plain": ("ActionOverdue", 4, {"action_id": "A1"}, "test"),
    }[kind]
    when = datetime(2020 if "2020" in kind else 2019, 2, day, 9, tzinfo=UTC)
    return Envelope(event_id=uuid.uuid4(), type=event_type, schema_version=1, case_id=CASE, occurred_at=when,
                    recorded_at=when, producer="test", actor=actor, correlation_id=uuid.uuid4(), data=data)


KINDS = ("closed in 2019", "closed on 29 February 2020", "erased", "personal", "nested personal", "sealed actor",
         "plain")
HISTORIES = [h for n in range(6) for h in itertools.product(KINDS, repeat=n) if n < 4 or len(set(h)) == n]


def test_the_oracle_sees_what_the_fold_must_tell_apart():
    # Guards the table: the kinds give every answer the sweep can reach.
    assert any(already_erased(h) for h in map(_history, HISTORIES))
    assert any(not already_erased(h) and any(r.type == ERASURE for r in h) for h in map(_history, HISTORIES))
    assert {closed_on(_history(h)) for h in HISTORIES} == {None, date(2019, 2, 3), date(2020, 2, 29)}


def _history(kinds: tuple[str, ...]) -> list[Recorded]:
    return [Recorded(_event(k), i + 1, None) for i, k in enumerate(kinds)]  # type: ignore[arg-type]


@pytest.mark.parametrize("years", [1, 6])
def test_the_fold_decides_every_history_as_the_case_by_case_sweep_did(years):
    assert len(HISTORIES) > 1000
    for kinds in HISTORIES:
        history = _history(kinds)
        fold = RetentionFold()
        for r in history:
            fold.add(r.envelope)
        assert (fold.closed_on, fold.due(years), fold.erased) == (
            closed_on(history), retention_due(history, years), already_erased(history)), kinds
