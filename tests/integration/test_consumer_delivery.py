"""A service's durable consumer against a real JetStream: redelivery, retries, order, poison messages.

A small probe service (its own on_event, its own projection table) runs through the real
``RunningService``, so these tests prove the runtime's delivery guarantees, not a service's rules.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, select
from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs
from typer.testing import CliRunner

from rethink.shared.cli import main
from rethink.shared.clock import SystemClock
from rethink.shared.commands import envelopes
from rethink.shared.consumer import PIN_TIMEOUT_SECONDS, ensure_consumer
from rethink.shared.delivery import DeadLetters
from rethink.shared.envelope import Origin, Recorded, new_case_id
from rethink.shared.eventlog import EventLog
from rethink.shared.events import ActionCompleted
from rethink.shared.projection import ProjectionStore, checkpoint_table, make_engine
from rethink.shared.runtime import ServiceParts
from rethink.shared.settings import Settings
from tests.support import ask, recorded, take_from_durable, wait_for

pytestmark = pytest.mark.nats

NAME = "probe"


def done(action_id: str) -> ActionCompleted:
    return ActionCompleted(action_id=action_id, completed_on=date(2026, 3, 2))


def make_store(path: Path) -> tuple[ProjectionStore, Table]:
    metadata = MetaData()
    applied = Table(
        "applied", metadata,
        Column("event_id", String(36), primary_key=True),  # a second insert of one event would fail loudly
        Column("case_id", String(16), nullable=False),
        Column("action_id", String(64), nullable=False),
        Column("seq", Integer, nullable=False),
    )
    checkpoint_table(metadata)

    def apply(conn: Connection, r: Recorded) -> None:
        conn.execute(applied.insert().values(event_id=str(r.envelope.event_id), case_id=r.envelope.case_id,
                                             action_id=r.payload.action_id, seq=r.seq))

    store = ProjectionStore(make_engine(f"sqlite:///{path}"), metadata, NAME, apply)
    store.create_schema()
    return store, applied


def rows(store: ProjectionStore, table: Table) -> list[tuple]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(table).order_by(table.c.seq))]


class Probe:
    """A service whose on_event we control: it records every attempt and applies to a real store."""

    def __init__(self, tmp_path: Path) -> None:
        self.store, self.table = make_store(tmp_path / "probe.db")
        self.attempts: list[int] = []  # stream sequences, one per call of on_event
        self.applied: list[int] = []   # stream sequences whose handling succeeded, in order
        self.failures: dict[str, int] = {}  # action_id -> how many more calls must fail, transiently
        self.poison: set[str] = set()  # action_ids whose handling fails every time

    def factory(self, settings: Settings, log: EventLog, clock) -> ServiceParts:
        async def on_event(r: Recorded) -> None:
            self.attempts.append(r.seq)
            action_id = getattr(r.payload, "action_id", None)
            if action_id in self.poison:
                raise ValueError(f"{action_id} can never be applied")
            if self.failures.get(action_id, 0) > 0:
                self.failures[action_id] -= 1
                raise OperationalError("INSERT ...", {}, Exception("database is locked"))
            self.store.apply(r)
            self.applied.append(r.seq)

        return ServiceParts(name=NAME, on_event=on_event)


@pytest.fixture
async def probe(tmp_path: Path, nc, settings: Settings, subjects, stream: str) -> Probe:
    await ensure_consumer(nc.jetstream(), settings.stream, NAME, subjects)
    return Probe(tmp_path)


async def consumer_drained(nc, settings: Settings):
    info = await nc.jetstream().consumer_info(settings.stream, NAME)
    return info if info.num_pending == 0 and info.num_ack_pending == 0 else None


async def append_one(event_log: EventLog, case_id: str, action_id: str, expected: int) -> int:
    envs = envelopes([done(action_id)], case_id, Origin("test", "test", uuid.uuid4()), SystemClock(), None)
    [seq] = await event_log.append(case_id, envs, expected)
    return seq


async def append_many(event_log: EventLog, case_id: str, action_ids: list[str], expected: int = 0) -> list[int]:
    seqs = []
    for action_id in action_ids:
        expected = await append_one(event_log, case_id, action_id, expected)
        seqs.append(expected)
    return seqs


# --- redelivery -------------------------------------------------------------------------------


def test_applying_the_same_recorded_event_twice_changes_nothing(tmp_path: Path):
    store, table = make_store(tmp_path / "p.db")
    r = recorded(done("a1"), seq=7)

    assert store.apply(r) is True
    before = rows(store, table)
    assert store.last_seq() == 7

    assert store.apply(r) is False
    assert rows(store, table) == before == [(str(r.envelope.event_id), "RT-AAAAAAAAAA", "a1", 7)]
    assert store.last_seq() == 7


def test_an_older_event_arriving_after_a_newer_one_is_ignored(tmp_path: Path):
    store, table = make_store(tmp_path / "p.db")
    assert store.apply(recorded(done("a5"), seq=5)) is True
    assert store.apply(recorded(done("a3"), seq=3)) is False
    assert [row[2] for row in rows(store, table)] == ["a5"]
    assert store.last_seq() == 5


async def test_a_full_redelivery_leaves_the_projection_unchanged(probe, run_services, event_log, nc, settings):
    case_a, case_b = new_case_id(), new_case_id()
    seqs = await append_many(event_log, case_a, ["a1", "a2", "a3"]) + await append_many(event_log, case_b, ["b1", "b2"])
    [first] = await run_services(probe.factory)
    await wait_for(lambda: consumer_drained(nc, settings), what="first delivery acked")
    await wait_for(lambda: asyncio.sleep(0, probe.store.last_seq()), lambda s: s == max(seqs))
    before, checkpoint = rows(probe.store, probe.table), probe.store.last_seq()
    assert [row[3] for row in before] == sorted(seqs)
    await first.stop()

    # Lose every ack: a fresh durable consumer delivers the whole log again.
    js = nc.jetstream()
    await js.delete_consumer(settings.stream, NAME)
    await ensure_consumer(js, settings.stream, NAME, event_log.subjects)
    assert (await js.consumer_info(settings.stream, NAME)).num_pending == len(seqs)
    await run_services(probe.factory)
    await wait_for(lambda: consumer_drained(nc, settings), what="redelivery acked")

    assert Counter(probe.attempts) == {seq: 2 for seq in seqs}
    assert rows(probe.store, probe.table) == before
    assert probe.store.last_seq() == checkpoint


# --- transient failures -----------------------------------------------------------------------


async def test_a_handler_that_fails_transiently_gets_the_event_again_in_place(probe, run_services, event_log, nc,
                                                                             settings):
    probe.failures["a2"] = 2
    case_id = new_case_id()
    s1, s2, s3, s4 = await append_many(event_log, case_id, ["a1", "a2", "a3", "a4"])
    await run_services(probe.factory)

    await wait_for(lambda: asyncio.sleep(0, [row[2] for row in rows(probe.store, probe.table)]),
                   lambda ids: ids == ["a1", "a2", "a3", "a4"], what="all four applied")
    info = await wait_for(lambda: consumer_drained(nc, settings), what="all acked")

    assert probe.attempts == [s1, s2, s2, s2, s3, s4]  # three tries of a2, and nothing overtook it
    assert probe.applied == [s1, s2, s3, s4]
    assert probe.store.last_seq() == s4
    # Applied, so not termed; retried in place, so JetStream never had to redeliver it.
    assert info.num_redelivered == 0
    assert info.delivered.stream_seq == s4


async def test_an_event_still_failing_when_the_service_stops_is_applied_first_after_a_restart(
        probe, run_services, event_log, nc, settings):
    """Stopping mid-retry naks the event; the next run must apply it before anything after it.

    Fails with bootstrap.consumer_config's max_ack_pending=1000: while the nak'd event waits out
    its delay, JetStream hands the restarted service the next event, the projection checkpoints
    past the first one, and the first is then dropped as "already applied" (silently lost).
    """
    probe.failures["a1"] = 3
    case_id = new_case_id()
    s1, s2 = await append_many(event_log, case_id, ["a1", "a2"])
    [first] = await run_services(probe.factory)
    await wait_for(lambda: asyncio.sleep(0, len(probe.attempts)), lambda n: n >= 2, what="a1 failing")
    await first.stop()
    assert probe.applied == []

    await run_services(probe.factory)
    await wait_for(lambda: asyncio.sleep(0, len(probe.applied)), lambda n: n == 2, what="both handled")
    await wait_for(lambda: consumer_drained(nc, settings), what="both acked")

    assert probe.applied == [s1, s2]
    assert [row[2] for row in rows(probe.store, probe.table)] == ["a1", "a2"]


# --- order ------------------------------------------------------------------------------------


async def test_events_are_applied_in_log_order_under_load(probe, run_services, event_log, nc, settings):
    await run_services(probe.factory)
    cases = [new_case_id() for _ in range(20)]
    # 20 concurrent writers, 10 events each: their appends interleave in the stream.
    per_case = await asyncio.gather(*(append_many(event_log, c, [f"{c}-{i}" for i in range(10)]) for c in cases))
    appended = sorted(seq for seqs in per_case for seq in seqs)
    assert len(appended) == 200

    await wait_for(lambda: asyncio.sleep(0, len(probe.applied)), lambda n: n >= 200, timeout=30,
                   what="200 events applied")
    await wait_for(lambda: consumer_drained(nc, settings), what="all acked")

    assert probe.attempts == appended  # each once, strictly increasing stream sequence
    assert all(a < b for a, b in zip(probe.attempts, probe.attempts[1:], strict=False))
    assert len(rows(probe.store, probe.table)) == 200
    # Within each case, events were applied in the order that case's writer appended them.
    by_case: dict[str, list[str]] = {}
    for _, case_id, action_id, _ in rows(probe.store, probe.table):
        by_case.setdefault(case_id, []).append(action_id)
    assert by_case == {c: [f"{c}-{i}" for i in range(10)] for c in cases}


async def test_two_replicas_sharing_the_durable_apply_every_event_once_in_log_order(
        probe, run_services, event_log, nc, settings):
    """Each replica keeps a pull request open for many events, and either may hold hundreds
    unacknowledged; the lease (a pinned_client priority group) is what keeps the two from applying
    events side by side or out of order."""
    replicas = await run_services(probe.factory, probe.factory)
    cases = [new_case_id() for _ in range(10)]
    per_case = await asyncio.gather(*(append_many(event_log, c, [f"{c}-{i}" for i in range(10)]) for c in cases))
    appended = sorted(seq for seqs in per_case for seq in seqs)

    await wait_for(lambda: asyncio.sleep(0, len(probe.applied)), lambda n: n >= 100, timeout=30,
                   what="100 events applied")
    await wait_for(lambda: consumer_drained(nc, settings), what="all acked")

    assert probe.attempts == appended  # each once, in stream order, whichever replica took it
    assert len(rows(probe.store, probe.table)) == 100
    assert max(r.last_applied_seq for r in replicas) == appended[-1]


async def test_later_events_handed_out_before_an_earlier_one_wait_for_it(
        probe, run_services, event_log, nc, settings):
    """The gap check. A replica gave the first event back with a delay (as on a stop) and left; the
    server hands the next holder the later events first. They are given back until the first has
    come round and been applied: without the check the checkpoint would pass it and it would be lost.
    """
    case_id = new_case_id()
    s1, s2, s3 = await append_many(event_log, case_id, ["a1", "a2", "a3"])
    taken = await take_from_durable(nc, settings.stream, NAME)
    assert taken.metadata.sequence.stream == s1
    await taken.nak(delay=2)  # back in two seconds: long after a2 and a3 reach the new holder

    with capture_logs() as logs:
        await run_services(probe.factory)
        await wait_for(lambda: asyncio.sleep(0, len(probe.applied)), lambda n: n == 3, what="all three applied")
        await wait_for(lambda: consumer_drained(nc, settings), what="all acked")

    assert probe.attempts == [s1, s2, s3]  # nothing attempted out of order, nothing twice
    assert [row[2] for row in rows(probe.store, probe.table)] == ["a1", "a2", "a3"]
    given_back = [e for e in logs if e["event"] == "events_given_back_for_an_earlier_one"]
    assert given_back and given_back[0]["seq"] == s2  # the check did fire: the server did send a2 first


async def test_a_stopping_replica_gives_up_the_lease_so_another_takes_over_at_once(
        probe, run_services, event_log, nc, settings):
    case_id = new_case_id()
    [first] = await run_services(probe.factory)
    [s1] = await append_many(event_log, case_id, ["a1"])
    await wait_for(lambda: asyncio.sleep(0, probe.applied), lambda a: a == [s1], what="a1 applied")
    await first.stop()  # holding the pin; a clean stop unpins (otherwise the next waits PIN_TIMEOUT_SECONDS)

    await run_services(probe.factory)
    [s2] = await append_many(event_log, case_id, ["a2"], expected=s1)
    applied = await wait_for(lambda: asyncio.sleep(0, list(probe.applied)), lambda a: len(a) == 2,
                             timeout=PIN_TIMEOUT_SECONDS / 3, what="a2 applied by the second replica")
    assert applied == [s1, s2]


# --- unreadable messages ----------------------------------------------------------------------


def _envelope_json(**overrides) -> bytes:
    env = envelopes([done("x")], new_case_id(), Origin("test", "test", uuid.uuid4()), SystemClock(), None)[0]
    data = json.loads(env.to_bytes())
    data.update(overrides)
    return json.dumps(data).encode()


@pytest.mark.parametrize("garbage", [
    pytest.param(b"not an envelope", id="not-json"),
    pytest.param(b"\xff\xfe\x00garbage", id="not-utf8"),
    pytest.param(_envelope_json(type="NoSuchEvent"), id="unknown-event-type"),
    pytest.param(_envelope_json(data={"action_id": 42}), id="invalid-payload"),
    # Regression: FastStream's default decoder json-parsed the body before our handler and let
    # RecursionError escape, so this message was neither logged nor acked.
    pytest.param(b"[" * 100_000, id="deeply-nested-json"),
])
async def test_an_unreadable_message_is_parked_logged_and_acked(garbage, probe, run_services, event_log, nc,
                                                                  settings, subjects):
    js = nc.jetstream()
    case_id = new_case_id()
    with capture_logs() as logs:
        [service] = await run_services(probe.factory)
        bad = await js.publish(subjects.event(new_case_id(), "ActionCompleted"), garbage, stream=settings.stream)
        [good] = await append_many(event_log, case_id, ["after-garbage"])

        await wait_for(lambda: asyncio.sleep(0, probe.applied), lambda a: a == [good], what="the valid event")
        info = await wait_for(lambda: consumer_drained(nc, settings), timeout=5, what="both acked")

    assert probe.attempts == [good]  # the handler never saw the garbage
    assert [row[2] for row in rows(probe.store, probe.table)] == ["after-garbage"]
    skipped = [e for e in logs if e["event"] == "event_unreadable_parked"]
    assert len(skipped) == 1 and skipped[0]["seq"] == bad.seq and skipped[0]["log_level"] == "error"
    assert skipped[0]["service"] == NAME and skipped[0]["error"]
    [parked] = await DeadLetters(js, settings.dead_letter_stream, subjects).list(NAME)
    assert parked["seq"] == bad.seq and parked["reason"].startswith("unreadable: ")
    assert info.delivered.stream_seq == good and info.num_redelivered == 0
    assert service.last_applied_seq == good
    pong = await ask(nc, subjects.query(NAME, "ping"), {})
    assert pong == {"status": "ok", "service": NAME, "last_applied_seq": good}


async def test_a_poison_event_is_retried_a_bounded_number_of_times_then_parked_and_the_consumer_moves_on(
        probe, run_services, event_log, nc, settings, subjects):
    settings.max_handler_attempts = 3
    probe.poison.add("poison")
    case_id = new_case_id()
    [bad, good] = await append_many(event_log, case_id, ["poison", "after-poison"])
    [service] = await run_services(probe.factory)

    await wait_for(lambda: asyncio.sleep(0, probe.applied), lambda a: a == [good], what="the event after it")
    assert probe.attempts == [bad, bad, bad, good]
    [parked] = await DeadLetters(nc.jetstream(), settings.dead_letter_stream, subjects).list(NAME)
    assert (parked["seq"], parked["attempts"]) == (bad, 3)
    assert parked["reason"] == "ValueError: poison can never be applied"
    assert json.loads(parked["message"])["event_id"] == str((await event_log.read_case(case_id))[0].envelope.event_id)
    assert await wait_for(lambda: consumer_drained(nc, settings), what="both acked")
    assert (await ask(nc, subjects.query(NAME, "ping"), {}))["last_applied_seq"] == good


async def test_a_transient_failure_is_never_parked_however_long_it_lasts(
        probe, run_services, event_log, nc, settings, subjects):
    settings.max_handler_attempts = 2
    probe.failures["slow-db"] = 5  # more failures than the poison bound: still retried, then applied
    [seq] = await append_many(event_log, new_case_id(), ["slow-db"])
    await run_services(probe.factory)
    await wait_for(lambda: asyncio.sleep(0, probe.applied), lambda a: a == [seq], timeout=20, what="applied")
    assert probe.attempts == [seq] * 6
    assert await DeadLetters(nc.jetstream(), settings.dead_letter_stream, subjects).list() == []


# --- operators: deadletter show / retry --------------------------------------------------------


async def rethink(monkeypatch, settings: Settings, *args: str):
    """Run the CLI in a worker thread: it runs its own event loop, as it does for a person."""
    monkeypatch.setattr(main, "settings", lambda: settings)
    return await asyncio.to_thread(CliRunner().invoke, main.app, list(args))


async def _parked_poison(probe, run_services, event_log, nc, settings, subjects) -> tuple[int, int, dict]:
    settings.max_handler_attempts = 2
    probe.poison.add("poison")
    [bad, good] = await append_many(event_log, new_case_id(), ["poison", "after-poison"])
    await run_services(probe.factory)
    await wait_for(lambda: asyncio.sleep(0, probe.applied), lambda a: a == [good], what="the event after it")
    [parked] = await DeadLetters(nc.jetstream(), settings.dead_letter_stream, subjects).list(NAME)
    return bad, good, parked


async def test_deadletter_show_gives_the_reason_and_the_event_as_the_log_holds_it(
        probe, run_services, event_log, nc, settings, subjects, monkeypatch):
    bad, _, parked = await _parked_poison(probe, run_services, event_log, nc, settings, subjects)

    shown = await rethink(monkeypatch, settings, "deadletter", "show", str(parked["id"]))
    assert shown.exit_code == 0, shown.output
    detail = json.loads(shown.stdout)
    assert (detail["id"], detail["service"], detail["seq"]) == (parked["id"], NAME, bad)
    assert detail["reason"] == "ValueError: poison can never be applied"
    assert detail["event"]["data"]["action_id"] == "poison"

    listed = await rethink(monkeypatch, settings, "deadletter", "list")
    assert str(parked["id"]) in listed.stdout and "poison can never be applied" in listed.stdout
    missing = await rethink(monkeypatch, settings, "deadletter", "show", "999")
    assert missing.exit_code == 1 and "nothing parked with id 999" in missing.stderr


async def test_deadletter_retry_applies_a_fixed_event_once_and_unparks_it(
        probe, run_services, event_log, nc, settings, subjects, monkeypatch):
    bad, good, parked = await _parked_poison(probe, run_services, event_log, nc, settings, subjects)

    still = await rethink(monkeypatch, settings, "deadletter", "retry", str(parked["id"]))
    assert still.exit_code == 1 and "still fails: ValueError: poison can never be applied" in still.stderr
    assert len(await DeadLetters(nc.jetstream(), settings.dead_letter_stream, subjects).list()) == 1

    probe.poison.clear()  # the operator fixed the cause
    fixed = await rethink(monkeypatch, settings, "deadletter", "retry", str(parked["id"]))
    assert fixed.exit_code == 0, fixed.output
    assert f"{parked['id']}: applied by {NAME} (seq {bad})" in fixed.stdout
    # Applied although the checkpoint had moved past it, and the checkpoint did not move back.
    assert sorted(row[3] for row in rows(probe.store, probe.table)) == [bad, good]
    assert probe.store.last_seq() == good
    assert await DeadLetters(nc.jetstream(), settings.dead_letter_stream, subjects).list() == []

    again = await rethink(monkeypatch, settings, "deadletter", "retry", str(parked["id"]))
    assert again.exit_code == 1 and "nothing parked" in again.stderr
    assert sorted(row[3] for row in rows(probe.store, probe.table)) == [bad, good]


async def test_deadletter_retry_all_retries_each_and_reports_what_still_fails(
        probe, run_services, event_log, nc, settings, subjects, monkeypatch):
    settings.max_handler_attempts = 1
    probe.poison.update({"p1", "p2"})
    [s1, s2] = await append_many(event_log, new_case_id(), ["p1", "p2"])
    await run_services(probe.factory)
    dead = DeadLetters(nc.jetstream(), settings.dead_letter_stream, subjects)
    await wait_for(lambda: dead.list(), lambda p: len(p) == 2, what="both parked")

    probe.poison.discard("p1")
    result = await rethink(monkeypatch, settings, "deadletter", "retry", "--all")
    assert result.exit_code == 1
    assert f"applied by {NAME} (seq {s1})" in result.stdout and "still fails" in result.stderr
    assert [p["seq"] for p in await dead.list()] == [s2]
    assert [row[3] for row in rows(probe.store, probe.table)] == [s1]
    nothing = await rethink(monkeypatch, settings, "deadletter", "retry")
    assert nothing.exit_code == 1 and "give one parked event's ID, or --all" in nothing.stderr


# --- upgrading ----------------------------------------------------------------------------------


async def test_bootstrap_turns_a_durable_of_an_earlier_version_into_the_lease_keeping_its_place(
        nc, settings, event_log, stream):
    """Earlier versions made each service's durable with one event in flight and no priority group;
    bootstrap updates it in place, so the service carries on from where it was, not from the start."""
    from nats.js import api

    from rethink.shared.bootstrap import bootstrap
    from rethink.shared.consumer import GROUP, MAX_IN_HAND, consumer_info_raw

    js = nc.jetstream()
    await js.add_consumer(settings.stream, api.ConsumerConfig(
        durable_name="intake", filter_subject=event_log.subjects.all_events, deliver_policy=api.DeliverPolicy.ALL,
        ack_policy=api.AckPolicy.EXPLICIT, ack_wait=10.0, max_ack_pending=1))  # as an earlier bootstrap left it
    s1, s2 = await append_many(event_log, new_case_id(), ["a1", "a2"])
    old = await js.pull_subscribe_bind("intake", stream=settings.stream)
    [first] = await old.fetch(1, timeout=5)
    await first.ack()  # the earlier service applied the first event
    await old.unsubscribe()

    assert "consumer intake updated" in await bootstrap(js, settings)

    info = await consumer_info_raw(js, settings.stream, "intake")
    assert info is not None
    assert info["config"]["priority_groups"] == [GROUP] and info["config"]["priority_policy"] == "pinned_client"
    assert info["config"]["max_ack_pending"] == MAX_IN_HAND
    assert info["ack_floor"]["stream_seq"] == s1  # its place kept: the next event it gets is the second
    assert (await take_from_durable(nc, settings.stream, "intake")).metadata.sequence.stream == s2
    assert await bootstrap(js, settings) == []  # and once it is as wanted, bootstrap leaves it alone
