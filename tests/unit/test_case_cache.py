"""The per-service case cache holds only complete prefixes of a case's history (pure, no server)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from rethink.shared.envelope import Origin, Recorded, digest, stamp
from rethink.shared.eventlog import CaseCache
from rethink.shared.events import ActionCompleted, PersonalDataErased

CASE = "RT-AAAAAAAAAA"


def chain(n: int, case_id: str = CASE, first_seq: int = 1, step: int = 1, last=None) -> list[Recorded]:
    """N events of one case, each naming the one before it (as EventLog.append writes them)."""
    out: list[Recorded] = []
    for i in range(n):
        payload = ActionCompleted(action_id=f"a{i}", completed_on=date(2026, 3, 2))
        if last is not None and i == n - 1:
            payload = last
        now = datetime.now(UTC)
        env = stamp(payload, case_id, Origin("test", "test", uuid.uuid4()), now, now, uuid.uuid4())
        if out:
            env = env.model_copy(update={"prev_event_id": out[-1].envelope.event_id, "prev_hash": out[-1].digest})
        out.append(Recorded(envelope=env, seq=first_seq + i * step, payload=payload, digest=digest(env.to_bytes())))
    return out


def test_a_case_seen_from_its_first_event_is_held_and_extended_in_order():
    cache = CaseCache()
    events = chain(3)
    for r in events:
        cache.observe(r)
    assert cache.get(CASE, 3) == events


def test_a_case_first_seen_in_the_middle_is_not_held():
    cache = CaseCache()
    _, second, third = chain(3)
    cache.observe(second)
    cache.observe(third)
    assert cache.get(CASE, 1) is None


def test_an_event_not_seen_here_drops_the_case_rather_than_leave_a_hole():
    """Another replica took the middle event from the shared durable: the next does not follow ours."""
    cache = CaseCache()
    first, _second, third = chain(3)
    cache.observe(first)
    cache.observe(third)
    assert cache.get(CASE, 1) is None
    assert len(cache) == 0


def test_a_history_that_does_not_reach_the_cause_is_a_miss():
    cache = CaseCache()
    events = chain(3)
    cache.store(CASE, events[:2])
    assert cache.get(CASE, events[2].seq) is None
    assert cache.get(CASE, events[1].seq) == events[:2]


def test_a_full_read_replaces_an_older_entry_but_never_a_newer_one():
    cache = CaseCache()
    events = chain(4)
    cache.store(CASE, events[:3])
    cache.store(CASE, events[:2])
    assert cache.get(CASE, 1) == events[:3]
    cache.store(CASE, events)
    assert cache.get(CASE, 1) == events


def test_events_already_held_are_ignored_when_the_consumer_delivers_them():
    cache = CaseCache()
    events = chain(3)
    cache.store(CASE, events)
    for r in events:
        cache.observe(r)
    assert cache.get(CASE, 1) == events


def test_a_copy_is_handed_out_so_a_decision_cannot_change_the_cache():
    cache = CaseCache()
    events = chain(2)
    cache.store(CASE, events)
    cache.get(CASE, 1).clear()
    assert cache.get(CASE, 1) == events


def test_the_least_recently_used_case_goes_first_when_full():
    cache = CaseCache(max_cases=2)
    a, b, c = (chain(1, case_id=f"RT-{x * 10}") for x in "ABC")
    cache.observe(a[0])
    cache.observe(b[0])
    assert cache.get("RT-AAAAAAAAAA", 1) == a  # A used last: B is the oldest now
    cache.observe(c[0])
    assert cache.get("RT-BBBBBBBBBB", 1) is None
    assert cache.get("RT-AAAAAAAAAA", 1) == a and cache.get("RT-CCCCCCCCCC", 1) == c


def test_an_erasure_drops_the_case_so_nothing_opened_before_it_is_kept():
    """Earlier events read as erased once the key is destroyed: the copies opened before must go."""
    cache = CaseCache()
    events = chain(3, last=PersonalDataErased(reason="retention policy"))
    for r in events:
        cache.observe(r)
    assert cache.get(CASE, 1) is None
    assert len(cache) == 0
