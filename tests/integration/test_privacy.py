"""Personal data against a real nats-server: sealed in the log, erased by destroying the case's key.

Every personal value of a case carries a unique tag, so "no personal value anywhere" is a byte
scan for the tag: in the stream's raw messages, the key store, the projection files and the logs.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest

from rethink.escalation.app import build as escalation
from rethink.intake.app import build as intake
from rethink.meeting.app import build as meeting
from rethink.scheduling.app import build as scheduling
from rethink.shared.audit import verify_chain
from rethink.shared.clock import FixedClock
from rethink.shared.envelope import new_case_id
from rethink.shared.erasure import erase_case
from rethink.shared.eventlog import EventLog
from rethink.shared.events import ERASED, ActionCompleted, RequestSubmitted
from rethink.shared.keystore import KeyStoreUnavailable, KvKeyStore
from rethink.shared.privacy import PersonalData, PersonalDataLocked, personal_data
from rethink.shared.rebuild import projection_store, replay_into
from tests.support import ask, request_payload, seed_case, wait_for

pytestmark = pytest.mark.nats
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def tagged_request(tag: str) -> dict:
    """A request whose every personal value (and nothing else) contains ``tag``."""
    return request_payload(
        requester={"name": f"Quilla {tag}", "role": "Designated safeguarding lead", "agency": "Northside School",
                   "email": f"q.{tag}@school.example.org"},
        description=f"School and social care disagree about the plan ({tag}).",
        invitees=[{"name": f"Rowan {tag}", "agency": "Children's Social Care", "email": f"r.{tag}@council.example.org"}],
        checks={"raised_with_network": {"answer": True, "note": f"raised at the core group, {tag}"},
                "conversation_had": {"answer": True}, "hips_policy_considered": {"answer": True}})


def record_body(case_id: str, tag: str, held_at: datetime) -> dict:
    owner = {"name": f"Sasha {tag}", "agency": "Community Health", "email": f"s.{tag}@health.example.org"}
    return {
        "case_id": case_id, "actor": "facilitator", "held_at": held_at.isoformat(),
        "attendees": [{"name": f"Rowan {tag}", "agency": "Children's Social Care"}],
        "stages": {"strengths": f"Strengths {tag}", "impact": f"Impact {tag}", "ways_forward": f"Ways {tag}",
                   "learning": f"Learning {tag}",
                   "perspectives": [{"professional": f"Rowan {tag}", "agency": "Children's Social Care",
                                     "feelings": f"Worried {tag}", "needs": f"Needs {tag}"}]},
        "outcome": "partly_resolved",
        "actions": [{"description": f"Joint visit {tag}", "owner": owner,
                     "due_date": (held_at + timedelta(days=10)).date().isoformat()}],
    }


async def drive_case(nc, subjects, event_log, clock: FixedClock, tag: str) -> str:
    """Request, facilitator, meeting scheduled and held with one action: personal data in every service."""
    reply = await ask(nc, subjects.intake("police", "submit"), tagged_request(tag))
    assert reply["status"] == "accepted", reply
    case_id = reply["case_id"]
    await wait_for(lambda: event_log.read_case(case_id), lambda h: "FacilitatorAssigned" in [r.type for r in h],
                   what="FacilitatorAssigned")
    starts = clock.now() + timedelta(days=1)
    reply = await ask(nc, subjects.command("scheduling", "schedule"), {
        "case_id": case_id, "starts_at": starts.isoformat(), "mode": "in_person", "venue": f"Room {tag}",
        "actor": "facilitator"})
    assert reply["status"] == "accepted", reply
    clock.advance(timedelta(days=2))
    reply = await ask(nc, subjects.command("meeting", "record"), record_body(case_id, tag, starts + timedelta(hours=1)))
    assert reply["status"] == "accepted", reply
    await wait_for(lambda: event_log.read_case(case_id), lambda h: "ActionRecorded" in [r.type for r in h],
                   what="ActionRecorded")
    return case_id


async def raw_stream_bytes(js, stream: str) -> bytes:
    info = await js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(stream, seq)
        except nats.js.errors.NotFoundError:
            continue
        out.append(msg.subject.encode() + b"\n" + (msg.data or b"") + b"\n" + repr(msg.headers).encode())
    return b"\n".join(out)


def projection_files(state_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(state_dir.glob("*.db*")))


async def caught_up(nc, subjects, service: str, seq: int) -> None:
    await wait_for(lambda: ask(nc, subjects.query(service, "ping"), {}),
                   lambda r: r["last_applied_seq"] >= seq, what=f"{service} to apply seq {seq}")


async def test_personal_values_are_stored_sealed_and_read_back_in_clear(event_log, nc, settings):
    tag = uuid.uuid4().hex[:12]
    request = tagged_request(tag)
    del request["immediate_risk"]
    case_id = new_case_id()
    await seed_case(event_log, case_id, [RequestSubmitted.model_validate(request),
                                         ActionCompleted(action_id="A1", completed_on="2026-11-20")])

    assert tag.encode() not in await raw_stream_bytes(nc.jetstream(), settings.stream)
    [submitted, completed] = await event_log.read_case(case_id)
    assert submitted.payload.requester.email == f"q.{tag}@school.example.org"
    assert submitted.payload.checks.raised_with_network.note == f"raised at the core group, {tag}"
    assert submitted.payload.invitees[0].name == f"Rowan {tag}"
    assert submitted.envelope.data["requester"]["agency"] == "Northside School"  # not personal: left readable
    assert submitted.envelope.data["requester"]["name"]["enc"] == "v1"
    assert completed.envelope.data == {"action_id": "A1", "completed_on": "2026-11-20", "note": None}
    assert verify_chain(case_id, await event_log.read_sealed(case_id)).intact


async def test_after_erasure_no_personal_value_of_the_case_is_left_anywhere_and_other_cases_are_untouched(
        run_services, nc, subjects, event_log, settings, tmp_path, capfd):
    clock = FixedClock(T0)
    await run_services(intake, scheduling, meeting, escalation, clock=clock)
    gone, kept = uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
    case_id = await drive_case(nc, subjects, event_log, clock, gone)
    other_id = await drive_case(nc, subjects, event_log, clock, kept)
    key = await KvKeyStore(nc.jetstream(), settings.keys_bucket).get(case_id)
    assert key is not None

    done = await erase_case(event_log, case_id, "dpo@partnership.example.org", "subject access request ended",
                            clock.now())
    assert done.recorded and done.key_destroyed and done.kid == key.kid

    history = await event_log.read_case(case_id)
    erasure = history[-1]
    assert erasure.type == "PersonalDataErased" and erasure.payload.kid == key.kid
    assert erasure.envelope.actor == "dpo@partnership.example.org"
    assert erasure.payload.reason == "subject access request ended"
    submitted = history[0].payload
    assert submitted.requester.name == ERASED and submitted.requester.email == ERASED
    assert submitted.description == ERASED and submitted.invitees[0].email == ERASED
    assert submitted.case_reference == "CSC-2026-0042"  # not personal: kept
    assert [r.type for r in history] == [r.type for r in await event_log.read_sealed(case_id)]
    assert verify_chain(case_id, await event_log.read_sealed(case_id)).intact
    other = await event_log.read_case(other_id)
    assert other[0].payload.requester.name == f"Quilla {kept}"

    # The log: the erased case's values were never there in clear; the key that sealed them is gone.
    raw = await raw_stream_bytes(nc.jetstream(), settings.stream)
    for tag in (gone, kept):
        at = raw.find(tag.encode())
        assert at < 0, raw[max(0, at - 300):at + 50]
    keys_raw = await raw_stream_bytes(nc.jetstream(), f"KV_{settings.keys_bucket}")
    assert __import__("base64").b64encode(key.secret) not in keys_raw
    assert await KvKeyStore(nc.jetstream(), settings.keys_bucket).get(other_id) is not None

    # The projections: each service blanks the case once it has applied the erasure.
    for service in ("scheduling", "meeting"):
        await caught_up(nc, subjects, service, erasure.seq)
    files = projection_files(settings.state_dir)
    assert gone.encode() not in files
    assert kept.encode() in files  # the scan does see personal data where it is still allowed
    view = await ask(nc, subjects.query("scheduling", "case"), {"case_id": case_id})
    assert view["result"]["meeting"]["venue"] == ERASED

    # A projection rebuilt from the log holds none either.
    for service in ("scheduling", "meeting"):
        store = projection_store(service, f"sqlite:///{tmp_path / (service + '-rebuilt.db')}")
        await replay_into(nc.jetstream(), settings, store)
        store.engine.dispose()
        rebuilt = (tmp_path / f"{service}-rebuilt.db").read_bytes()
        assert gone.encode() not in rebuilt and kept.encode() in rebuilt, service

    # The logs written meanwhile.
    logged = "".join(capfd.readouterr())
    assert "outbox_case_erased" in logged and case_id in logged  # the capture holds the services' lines
    assert gone not in logged


async def test_erasing_twice_records_it_once(event_log, settings):
    case_id = new_case_id()
    await seed_case(event_log, case_id, [ActionCompleted(action_id="A1", completed_on="2026-11-20", note="a note")])
    first = await erase_case(event_log, case_id, "dpo", "retention", T0)
    again = await erase_case(event_log, case_id, "dpo", "retention", T0)
    assert first.recorded and first.key_destroyed
    assert not again.recorded and not again.key_destroyed
    history = await event_log.read_case(case_id)
    assert [r.type for r in history] == ["ActionCompleted", "PersonalDataErased"]
    assert history[0].payload.note == ERASED


async def test_another_process_with_the_key_cached_reads_the_case_as_erased_once_the_erasure_is_in_its_history(
        event_log, nc, settings):
    case_id = new_case_id()
    await seed_case(event_log, case_id, [ActionCompleted(action_id="A1", completed_on="2026-11-20", note="private")])
    elsewhere = EventLog(nc.jetstream(), settings.stream, event_log.subjects,
                         personal=PersonalData(KvKeyStore(nc.jetstream(), settings.keys_bucket), cache_seconds=3600))
    assert (await elsewhere.read_case(case_id))[0].payload.note == "private"  # its key is now cached there

    await erase_case(event_log, case_id, "dpo", "retention", T0)

    assert (await elsewhere.read_case(case_id))[0].payload.note == ERASED


async def test_an_unreachable_key_store_makes_reads_fail_and_never_shows_ciphertext_or_erased(
        event_log, nats_url, settings):
    case_id = new_case_id()
    await seed_case(event_log, case_id, [ActionCompleted(action_id="A1", completed_on="2026-11-20", note="private")])
    log_nc, keys_nc = await nats.connect(nats_url), await nats.connect(nats_url)
    try:
        await keys_nc.close()  # the key store's connection is gone; the log's is fine
        cut_off = EventLog(log_nc.jetstream(), settings.stream, event_log.subjects,
                           personal=personal_data(keys_nc.jetstream(), settings))
        with pytest.raises(KeyStoreUnavailable, match="unreachable"):
            await cut_off.read_case(case_id)
        no_keys = EventLog(log_nc.jetstream(), settings.stream, event_log.subjects, personal=None)
        with pytest.raises(PersonalDataLocked):
            await no_keys.read_case(case_id)
        assert len(await no_keys.read_sealed(case_id)) == 1  # verifying needs no key
        missing = settings.model_copy(update={"keys_bucket": f"NOPE{uuid.uuid4().hex[:8]}"})
        with pytest.raises(KeyStoreUnavailable, match="does not exist"):
            await EventLog(log_nc.jetstream(), settings.stream, event_log.subjects,
                           personal=personal_data(log_nc.jetstream(), missing)).read_case(case_id)
    finally:
        await log_nc.close()


async def test_writers_racing_to_create_a_cases_key_all_end_up_with_the_same_one(nc, settings, stream):
    case_id = new_case_id()
    stores = [KvKeyStore(nc.jetstream(), settings.keys_bucket) for _ in range(8)]
    keys = await asyncio.gather(*(s.create(case_id) for s in stores))
    assert len({k.kid for k in keys}) == 1 and len({k.secret for k in keys}) == 1
    assert (await stores[0].get(case_id)) == keys[0]


async def test_events_sealed_at_once_by_two_processes_for_a_new_case_are_both_readable(nc, settings, stream):
    from rethink.shared.commands import envelopes
    from rethink.shared.envelope import Origin

    case_id = new_case_id()
    [one, two] = envelopes([ActionCompleted(action_id="A1", completed_on="2026-11-20", note="one"),
                            ActionCompleted(action_id="A2", completed_on="2026-11-20", note="two")],
                           case_id, Origin("test", "test", uuid.uuid4()), FixedClock(T0), None)
    writers = [personal_data(nc.jetstream(), settings) for _ in range(2)]
    sealed = await asyncio.gather(writers[0].seal(one), writers[1].seal(two))
    assert sealed[0].data["note"]["kid"] == sealed[1].data["note"]["kid"]
    reader = personal_data(nc.jetstream(), settings)
    assert [(await reader.open(e)).data["note"] for e in sealed] == ["one", "two"]


async def test_many_keys_are_read_in_batches_and_an_erased_or_unmade_key_is_absent(nc, nats_url, settings, stream,
                                                                                  monkeypatch):
    import rethink.shared.keystore as keystore

    monkeypatch.setattr(keystore, "MANY", 16)  # 40 cases: three batched requests
    store = KvKeyStore(nc.jetstream(), settings.keys_bucket)
    made = [new_case_id() for _ in range(40)]
    keys = {c: await store.create(c) for c in made}
    erased, never = made[7], new_case_id()
    await store.destroy(erased)
    asked = [*made, never, "RT-*", "not.a.case"]  # what is not a case id is never put into a subject

    found = await store.get_many(asked)

    assert found == {c: k for c, k in keys.items() if c != erased}
    assert all([found[c] == await store.get(c) for c in found])  # the same keys as one at a time

    other = await nats.connect(nats_url)
    await other.close()
    with pytest.raises(KeyStoreUnavailable, match="unreachable"):
        await KvKeyStore(other.jetstream(), settings.keys_bucket).get_many(made)
    missing = KvKeyStore(nc.jetstream(), f"NOPE{uuid.uuid4().hex[:8]}")
    with pytest.raises(KeyStoreUnavailable, match="does not exist"):
        await missing.get_many(made)


async def test_a_prefetch_reads_a_batch_of_keys_at_once_and_opening_then_asks_for_none(nc, settings, stream):
    store = KvKeyStore(nc.jetstream(), settings.keys_bucket)
    cases = [new_case_id() for _ in range(5)]
    for c in cases:
        await store.create(c)
    reads: list[str] = []
    one_by_one = store.get

    async def counted(case_id: str):
        reads.append(case_id)
        return await one_by_one(case_id)

    store.get = counted  # type: ignore[method-assign]
    personal = PersonalData(store)
    await personal.prefetch(cases)
    assert reads == []  # one batched read, no per-case reads
    assert all([await personal._key(c, (await one_by_one(c)).kid) is not None for c in cases])
    assert reads == []  # every key came from the cache
