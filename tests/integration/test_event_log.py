"""The event log against a real JetStream: case-wide optimistic concurrency, dedup, per-case reads."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import date

import pytest

from rethink.shared.clock import SystemClock
from rethink.shared.commands import envelopes, execute
from rethink.shared.envelope import Envelope, Origin, Recorded, new_case_id
from rethink.shared.eventlog import CaseCache, ConcurrencyConflict, EventLog, decide_and_append
from rethink.shared.events import ActionCompleted, CaseClosed, Event
from tests.support import seed_case

pytestmark = pytest.mark.nats

ORIGIN = Origin(producer="test", actor="test", correlation_id=uuid.uuid4())


def envs(case_id: str, *payloads: Event, seed: object | None = None) -> list[Envelope]:
    return envelopes(list(payloads), case_id, ORIGIN, SystemClock(), seed)


def done(action_id: str) -> ActionCompleted:
    return ActionCompleted(action_id=action_id, completed_on=date(2026, 3, 2))


CLOSED = CaseClosed(reason="resolved_at_meeting")


async def stream_messages(nc, settings) -> int:
    return (await nc.jetstream().stream_info(settings.stream)).state.messages


# --- optimistic concurrency -------------------------------------------------------------------


async def test_a_second_append_with_the_same_expected_sequence_conflicts(event_log, nc, settings):
    case_id = new_case_id()
    [first_seq] = await event_log.append(case_id, envs(case_id, done("a1")), expected_last_seq=0)

    # Two writers both read the case at first_seq and both try to append.
    [winner_seq] = await event_log.append(case_id, envs(case_id, done("a2")), expected_last_seq=first_seq)
    with pytest.raises(ConcurrencyConflict):
        await event_log.append(case_id, envs(case_id, done("a3")), expected_last_seq=first_seq)

    history = await event_log.read_case(case_id)
    assert [r.seq for r in history] == [first_seq, winner_seq]
    assert [r.payload.action_id for r in history] == ["a1", "a2"]
    assert await stream_messages(nc, settings) == 2


async def test_two_writers_creating_the_same_new_case_conflict(event_log):
    case_id = new_case_id()
    await event_log.append(case_id, envs(case_id, done("a1")), expected_last_seq=0)
    with pytest.raises(ConcurrencyConflict):
        await event_log.append(case_id, envs(case_id, done("a2")), expected_last_seq=0)
    assert [r.payload.action_id for r in await event_log.read_case(case_id)] == ["a1"]


async def test_a_stale_append_of_a_different_event_type_conflicts_case_wide(event_log, nc, settings):
    case_id = new_case_id()
    [seq] = await event_log.append(case_id, envs(case_id, done("a1")), expected_last_seq=0)

    # CaseClosed goes to a subject that has never been written, so a per-subject check
    # (expected 0 on .CaseClosed) would pass; only the case-wide header catches it.
    with pytest.raises(ConcurrencyConflict):
        await event_log.append(case_id, envs(case_id, CLOSED), expected_last_seq=0)

    assert [r.type for r in await event_log.read_case(case_id)] == ["ActionCompleted"]
    assert await stream_messages(nc, settings) == 1
    # The same append against the fresh sequence goes through.
    [closed_seq] = await event_log.append(case_id, envs(case_id, CLOSED), expected_last_seq=seq)
    assert closed_seq > seq


async def test_without_the_case_wide_header_a_stale_different_type_append_would_slip_through(event_log, nc):
    """Control for the test above: proves its conflict comes from the case-wide header."""
    js = nc.jetstream()
    case_id = new_case_id()
    await event_log.append(case_id, envs(case_id, done("a1")), expected_last_seq=0)
    [env] = envs(case_id, CLOSED)
    ack = await js.publish(event_log.subjects.event(case_id, env.type), env.to_bytes(), stream=event_log.stream,
                           headers={"Nats-Msg-Id": str(env.event_id), "Nats-Expected-Last-Subject-Sequence": "0"})
    assert ack.seq > 0
    assert [r.type for r in await event_log.read_case(case_id)] == ["ActionCompleted", "CaseClosed"]


async def test_appends_to_two_different_new_cases_both_succeed(event_log):
    first, second = new_case_id(), new_case_id()
    (s1,), (s2,) = await asyncio.gather(
        event_log.append(first, envs(first, done("a1")), expected_last_seq=0),
        event_log.append(second, envs(second, done("b1")), expected_last_seq=0),
    )
    assert s1 != s2
    assert [r.payload.action_id for r in await event_log.read_case(first)] == ["a1"]
    assert [r.payload.action_id for r in await event_log.read_case(second)] == ["b1"]


async def test_an_append_of_several_events_chains_their_expected_sequences(event_log):
    case_id = new_case_id()
    seqs = await event_log.append(case_id, envs(case_id, done("a1"), done("a2"), CLOSED), expected_last_seq=0)
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert [r.seq for r in await event_log.read_case(case_id)] == seqs


class RacingLog(EventLog):
    """The real log, with another writer sneaking an event in right after the first ``races`` reads."""

    def __init__(self, inner: EventLog, races: int = 1) -> None:
        super().__init__(inner._js, inner.stream, inner.subjects, personal=inner.personal)
        self.races = races
        self.reads = 0

    async def read_case(self, case_id: str) -> list[Recorded]:
        history = await super().read_case(case_id)
        self.reads += 1
        if self.reads <= self.races:
            intruder = envs(case_id, done(f"intruder-{self.reads}"))
            await super().append(case_id, intruder, history[-1].seq if history else 0)
        return history  # now stale


async def test_decide_and_append_retries_a_conflict_and_decides_against_the_fresh_history(event_log):
    case_id = new_case_id()
    await seed_case(event_log, case_id, [done("a1"), done("a2")])
    racing = RacingLog(event_log, races=1)
    seen_lengths: list[int] = []

    def decide(history: list[Recorded]) -> list[Envelope]:
        seen_lengths.append(len(history))
        return envs(case_id, done(f"count-{len(history)}"))

    written = await decide_and_append(racing, case_id, decide)

    assert seen_lengths == [2, 3]  # stale read, conflict, fresh read with the intruder's event
    assert [e.data["action_id"] for e in written] == ["count-3"]
    history = await event_log.read_case(case_id)
    assert [r.payload.action_id for r in history] == ["a1", "a2", "intruder-1", "count-3"]


async def test_decide_and_append_gives_up_when_the_case_keeps_changing(event_log):
    case_id = new_case_id()
    racing = RacingLog(event_log, races=3)
    with pytest.raises(ConcurrencyConflict, match="kept changing"):
        await decide_and_append(racing, case_id, lambda h: envs(case_id, done(f"count-{len(h)}")), attempts=3)
    history = await event_log.read_case(case_id)
    assert [r.payload.action_id for r in history] == ["intruder-1", "intruder-2", "intruder-3"]


# --- duplicates -------------------------------------------------------------------------------


async def test_the_same_envelope_published_twice_is_stored_once(event_log, nc, settings):
    js = nc.jetstream()
    case_id = new_case_id()
    [env] = envs(case_id, done("a1"))
    subject = event_log.subjects.event(case_id, env.type)
    headers = {"Nats-Msg-Id": str(env.event_id)}  # no concurrency header: dedup alone must reject it

    first = await js.publish(subject, env.to_bytes(), stream=settings.stream, headers=headers)
    second = await js.publish(subject, env.to_bytes(), stream=settings.stream, headers=headers)

    assert not first.duplicate
    assert second.duplicate is True
    assert second.seq == first.seq
    assert await stream_messages(nc, settings) == 1
    history = await event_log.read_case(case_id)
    assert [(r.seq, r.envelope.event_id) for r in history] == [(first.seq, env.event_id)]


async def test_execute_with_the_same_seed_twice_writes_once(event_log, nc, settings):
    case_id = new_case_id()
    calls: list[int] = []

    def decide(history: list[Recorded]) -> list[Event]:
        calls.append(len(history))
        return [done(f"after-{len(history)}")]

    written, repeat = await execute(event_log, case_id, decide, ORIGIN, SystemClock(), seed="cmd-1")
    again, repeat_again = await execute(event_log, case_id, decide, ORIGIN, SystemClock(), seed="cmd-1")

    assert repeat is False and [e.type for e in written] == ["ActionCompleted"]
    assert repeat_again is True
    assert [e.event_id for e in again] == [e.event_id for e in written]
    assert calls == [0]  # the repeat found its own events and never decided again
    history = await event_log.read_case(case_id)
    assert [r.payload.action_id for r in history] == ["after-0"]
    assert await stream_messages(nc, settings) == 1


async def test_execute_with_a_different_seed_decides_again(event_log):
    case_id = new_case_id()
    decide = lambda h: [done(f"after-{len(h)}")]  # noqa: E731
    await execute(event_log, case_id, decide, ORIGIN, SystemClock(), seed="cmd-1")
    written, repeat = await execute(event_log, case_id, decide, ORIGIN, SystemClock(), seed="cmd-2")
    assert repeat is False
    assert [r.payload.action_id for r in await event_log.read_case(case_id)] == ["after-0", "after-1"]
    assert [e.data["action_id"] for e in written] == ["after-1"]


# --- reading a case ---------------------------------------------------------------------------


async def test_read_case_returns_only_that_case_in_log_order_with_stream_sequences(event_log):
    ours, other = new_case_id(), new_case_id()
    expected: list[tuple[int, str]] = []
    last = {ours: 0, other: 0}
    for i in range(6):  # interleave the two cases in the stream
        case_id = ours if i % 2 == 0 else other
        [seq] = await event_log.append(case_id, envs(case_id, done(f"{case_id}-{i}")), last[case_id])
        last[case_id] = seq
        if case_id == ours:
            expected.append((seq, f"{ours}-{i}"))

    history = await event_log.read_case(ours)

    assert [(r.seq, r.payload.action_id) for r in history] == expected
    assert all(r.envelope.case_id == ours for r in history)
    assert [r.seq for r in history] == sorted(r.seq for r in history)


async def test_read_case_of_a_long_case_returns_every_event(event_log):
    case_id = new_case_id()
    seqs = await event_log.append(case_id, envs(case_id, *(done(f"a{i}") for i in range(60))), 0)
    seqs += await event_log.append(case_id, envs(case_id, *(done(f"b{i}") for i in range(60))), seqs[-1])
    seqs += await event_log.append(case_id, envs(case_id, *(done(f"c{i}") for i in range(60))), seqs[-1])
    seqs += await event_log.append(case_id, envs(case_id, *(done(f"d{i}") for i in range(60))), seqs[-1])
    seqs += await event_log.append(case_id, envs(case_id, *(done(f"e{i}") for i in range(60))), seqs[-1])
    history = await event_log.read_case(case_id)
    assert len(history) == 300  # more than one fetch batch (256)
    assert [r.seq for r in history] == seqs


async def test_read_case_of_an_unknown_case_is_empty(event_log):
    other = new_case_id()
    await seed_case(event_log, other, [done("a1")])
    assert await event_log.read_case(new_case_id()) == []


async def test_read_case_leaves_no_consumer_behind(event_log, nc, settings):
    js = nc.jetstream()
    case_id = new_case_id()
    await seed_case(event_log, case_id, [done("a1")])
    before = (await js.stream_info(settings.stream)).state.consumer_count
    for _ in range(3):
        assert len(await event_log.read_case(case_id)) == 1
    assert (await js.stream_info(settings.stream)).state.consumer_count == before


async def test_an_append_never_reports_an_event_it_did_not_store_in_that_case(event_log):
    """JetStream drops a message whose Nats-Msg-Id it has seen, and acks with ``duplicate=True``
    and the *original* message's sequence. append must not pass that off as written to this case.

    Regression: EventLog.append ignored ``ack.duplicate`` and returned the other case's sequence.
    """
    first, second = new_case_id(), new_case_id()
    [env] = envs(first, done("a1"))
    [first_seq] = await event_log.append(first, [env], 0)
    same_id_other_case = env.model_copy(update={"case_id": second})

    try:
        seqs = await event_log.append(second, [same_id_other_case], 0)
    except Exception:
        seqs = None  # refusing is fine: the event was not stored
    if seqs is not None:
        assert seqs != [first_seq], "append returned the sequence of an event in another case"
        assert [r.envelope.event_id for r in await event_log.read_case(second)] == [env.event_id]


# --- the case cache (reactions) ---------------------------------------------------------------


async def test_a_reaction_decides_on_the_cached_case_without_reading_it(nc, settings, event_log):
    cached, case_id, first = await a_held_case(nc, settings, event_log)
    reads = count_reads(cached)
    seen: list[list[str]] = []

    def decide(history: list[Recorded]) -> list[Envelope]:
        seen.append([r.payload.action_id for r in history])
        return envs(case_id, done("reaction"))

    await decide_and_append(cached, case_id, decide, seen_seq=first)

    assert seen == [["a1"]] and reads == []
    assert [r.payload.action_id for r in await event_log.read_case(case_id)] == ["a1", "reaction"]


@pytest.mark.parametrize("deciding", ["a reaction", "a command"])
async def test_a_stale_cached_case_loses_the_append_and_the_decision_is_made_again_on_a_fresh_read(
        nc, settings, event_log, deciding):
    cached, case_id, first = await a_held_case(nc, settings, event_log, moved_on_by="elsewhere")
    reads = count_reads(cached)
    seen: list[list[str]] = []

    def decide(history: list[Recorded]) -> list[Envelope]:
        seen.append([r.payload.action_id for r in history])
        return envs(case_id, done(f"after-{history[-1].payload.action_id}"))

    await decide_and_append(cached, case_id, decide, seen_seq=first if deciding == "a reaction" else None)

    assert seen == [["a1"], ["a1", "elsewhere"]]  # the cached prefix, a conflict, then the log
    assert reads == [case_id]
    history = await event_log.read_case(case_id)
    assert [r.payload.action_id for r in history] == ["a1", "elsewhere", "after-elsewhere"]
    assert history[2].envelope.prev_event_id == history[1].envelope.event_id


async def test_a_command_decides_on_the_cached_case_once_the_log_confirms_it_is_current(nc, settings, event_log):
    cached = with_cache(nc, settings, event_log)
    case_id = new_case_id()
    await cached.append(case_id, envs(case_id, done("a1"), done("a2")), expected_last_seq=0)
    await deliver_to_cache(cached, event_log, case_id)
    reads = count_reads(cached)
    decide, seen = writes_nothing()  # e.g. a refusal: it must be decided on the case as it is now
    await decide_and_append(cached, case_id, decide)  # a command: no event seen to go by

    assert seen == [["a1", "a2"]] and reads == []


async def test_a_command_reads_the_log_when_the_case_moved_on_behind_the_cache(nc, settings, event_log):
    """Without the check a command would be refused (or decided) on an out-of-date case, since a
    decision that writes nothing is never checked by an append."""
    cached, case_id, _ = await a_held_case(nc, settings, event_log, moved_on_by="elsewhere")
    reads = count_reads(cached)
    decide, seen = writes_nothing()
    await decide_and_append(cached, case_id, decide)

    # Decided first on the copy held; the log says the case moved on; decided again on the log's.
    assert seen == [["a1"], ["a1", "elsewhere"]] and reads == [case_id]


async def test_a_command_that_appends_on_a_current_copy_asks_the_log_nothing_first(nc, settings, event_log):
    cached, case_id, _ = await a_held_case(nc, settings, event_log)
    reads, asked = count_reads(cached), count_ends_at(cached)
    seen: list[list[str]] = []

    def decide(history: list[Recorded]) -> list[Envelope]:
        seen.append([r.payload.action_id for r in history])
        return envs(case_id, done("a2"))

    await decide_and_append(cached, case_id, decide)  # a command

    assert seen == [["a1"]] and reads == [] and asked == []  # the append itself proved the copy current
    assert [r.payload.action_id for r in await event_log.read_case(case_id)] == ["a1", "a2"]


async def test_a_refusal_on_a_current_copy_is_given_once_the_log_confirms_it(nc, settings, event_log):
    cached, case_id, _ = await a_held_case(nc, settings, event_log)
    reads, asked = count_reads(cached), count_ends_at(cached)

    def refuse(history: list[Recorded]) -> list[Envelope]:
        raise ValueError(f"refused on {[r.payload.action_id for r in history]}")

    with pytest.raises(ValueError, match=r"refused on \['a1'\]"):
        await decide_and_append(cached, case_id, refuse)
    assert asked == [case_id] and reads == []


async def test_a_refusal_on_a_copy_the_case_moved_past_is_decided_again_on_the_log(nc, settings, event_log):
    cached, case_id, _ = await a_held_case(nc, settings, event_log, moved_on_by="a2")

    def needs_a2(history: list[Recorded]) -> list[Envelope]:  # refused on the copy, accepted on the log
        if history[-1].payload.action_id != "a2":
            raise ValueError("a2 not done yet")
        return envs(case_id, done("a3"))

    await decide_and_append(cached, case_id, needs_a2)
    assert [r.payload.action_id for r in await event_log.read_case(case_id)] == ["a1", "a2", "a3"]


async def test_a_command_on_a_case_with_no_events_yet_reads_nothing(nc, settings, event_log):
    cached = with_cache(nc, settings, event_log)
    case_id = new_case_id()
    reads = count_reads(cached)
    seen: list[list[Recorded]] = []

    def decide(history: list[Recorded]) -> list[Envelope]:
        seen.append(history)
        return envs(case_id, done("first"))

    await decide_and_append(cached, case_id, decide)  # e.g. an agency's submission

    assert seen == [[]] and reads == []
    assert [r.payload.action_id for r in await event_log.read_case(case_id)] == ["first"]


async def test_a_command_on_a_case_not_held_in_the_cache_reads_it(nc, settings, event_log):
    cached = with_cache(nc, settings, event_log)
    case_id = new_case_id()
    await event_log.append(case_id, envs(case_id, done("a1")), expected_last_seq=0)  # written elsewhere
    reads = count_reads(cached)
    decide, seen = writes_nothing()
    await decide_and_append(cached, case_id, decide)

    # Decided first on nothing held (most often a new case); the log says the case exists: read it.
    assert seen == [[], ["a1"]] and reads == [case_id]


def writes_nothing() -> tuple[Callable[[list[Recorded]], list[Envelope]], list[list[str]]]:
    """A decision that writes nothing (a refusal, say), and the histories it was shown."""
    seen: list[list[str]] = []

    def decide(history: list[Recorded]) -> list[Envelope]:
        seen.append([r.payload.action_id for r in history])
        return []

    return decide, seen


async def a_held_case(nc, settings, event_log: EventLog, moved_on_by: str | None = None) -> tuple[EventLog, str, int]:
    """A case of one event ("a1"), held in a service's cache as its own consumer would have
    delivered it; ``moved_on_by``: an event another service then appends, unseen by that cache.
    Returns the service's log, the case id and a1's sequence."""
    cached = with_cache(nc, settings, event_log)
    case_id = new_case_id()
    [first] = await cached.append(case_id, envs(case_id, done("a1")), expected_last_seq=0)
    await deliver_to_cache(cached, event_log, case_id)
    if moved_on_by is not None:
        await event_log.append(case_id, envs(case_id, done(moved_on_by)), expected_last_seq=first)
    return cached, case_id, first


def with_cache(nc, settings, event_log: EventLog) -> EventLog:
    """The same log as a service sees it: with its own case cache."""
    return EventLog(nc.jetstream(), settings.stream, event_log.subjects, personal=event_log.personal,
                    cache=CaseCache())


async def deliver_to_cache(cached: EventLog, reader: EventLog, case_id: str) -> None:
    assert cached.cache is not None
    for r in await reader.read_case(case_id):
        cached.cache.observe(r)


def count_ends_at(log: EventLog) -> list[str]:
    """Record every case ``log`` asks the log where it ends."""
    asked: list[str] = []
    real = log.ends_at

    async def ends_at(case_id: str, seq: int) -> bool:
        asked.append(case_id)
        return await real(case_id, seq)

    log.ends_at = ends_at  # type: ignore[method-assign]
    return asked


def count_reads(log: EventLog) -> list[str]:
    """Record every case ``log`` reads back from JetStream."""
    reads: list[str] = []
    real = log.read_case

    async def read_case(case_id: str) -> list[Recorded]:
        reads.append(case_id)
        return await real(case_id)

    log.read_case = read_case  # type: ignore[method-assign]
    return reads
