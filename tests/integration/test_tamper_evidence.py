"""Tampering with a real stream through the JetStream API is found, classified and located."""

from __future__ import annotations

import json

import pytest

from rethink.shared.audit import Anchor, verify_chain
from rethink.shared.envelope import Envelope, new_case_id
from rethink.shared.events import ActionCompleted, CaseClosed
from tests.support import seed_case

pytestmark = pytest.mark.nats


def _events(n: int):
    return [ActionCompleted(action_id=f"A{i}", completed_on="2026-11-20") for i in range(1, n)] + [
        CaseClosed(reason="resolved_at_meeting")]


@pytest.fixture
async def case(event_log):
    case_id = new_case_id()
    await seed_case(event_log, case_id, _events(5))
    history = await event_log.read_case(case_id)
    assert len(history) == 5
    return case_id, history


async def _republish(nc, event_log, recorded, data: bytes) -> None:
    """What someone with write access to the stream could do: put bytes back on the case subject."""
    subject = event_log.subjects.event(recorded.envelope.case_id, recorded.type)
    await nc.jetstream().publish(subject, data, stream=event_log.stream)


async def test_an_untouched_case_verifies_intact(case, event_log):
    case_id, _ = case
    report = verify_chain(case_id, await event_log.read_case(case_id))
    assert report.intact and report.events == 5
    assert report.one_line() == f"{case_id}: intact (5 events)"


async def test_an_event_deleted_through_the_jetstream_api_is_found_where_the_chain_breaks(case, event_log, nc):
    case_id, history = case
    await nc.jetstream().delete_msg(event_log.stream, history[2].seq)
    report = verify_chain(case_id, await event_log.read_case(case_id))
    assert [(b.kind, b.seq) for b in report.breaks] == [("removed", history[3].seq)]
    assert str(history[2].envelope.event_id) in report.breaks[0].detail


async def test_an_altered_event_is_found_even_when_its_id_is_kept(case, event_log, nc):
    case_id, history = case
    target = history[1]
    forged = json.loads(target.envelope.model_dump_json())
    forged["data"]["completed_on"] = "2026-11-01"  # backdating a completion
    await nc.jetstream().delete_msg(event_log.stream, target.seq)
    await _republish(nc, event_log, target, json.dumps(forged).encode())
    report = verify_chain(case_id, await event_log.read_case(case_id))
    assert [(b.kind, b.seq) for b in report.breaks] == [("altered", history[2].seq)]
    assert "different content" in report.breaks[0].detail


async def test_an_event_moved_unchanged_is_reported_as_reordered(case, event_log, nc):
    case_id, history = case
    raw = await nc.jetstream().get_msg(event_log.stream, history[1].seq)
    await nc.jetstream().delete_msg(event_log.stream, history[1].seq)
    await _republish(nc, event_log, history[1], raw.data)
    report = verify_chain(case_id, await event_log.read_case(case_id))
    assert [(b.kind, b.seq) for b in report.breaks] == [("reordered", history[2].seq)]


async def test_a_forged_event_published_straight_to_the_stream_is_reported_as_inserted(case, event_log, nc):
    case_id, history = case
    # A forger who copies a real event's envelope, points it back into the chain and appends it.
    forged = history[1].envelope.model_copy(update={"event_id": history[1].envelope.event_id.__class__(int=7),
                                                    "prev_event_id": history[0].envelope.event_id,
                                                    "prev_hash": history[0].digest})
    await _republish(nc, event_log, history[1], forged.to_bytes())
    after = await event_log.read_case(case_id)
    report = verify_chain(case_id, after)
    assert [(b.kind, b.seq) for b in report.breaks] == [("inserted", after[-1].seq)]
    assert f"seq {history[0].seq}" in report.breaks[0].detail


async def test_a_forged_first_event_is_reported_as_inserted(case, event_log, nc):
    case_id, history = case
    unchained = Envelope.model_validate({**json.loads(history[4].envelope.model_dump_json()),
                                         "event_id": "00000000-0000-0000-0000-000000000009",
                                         "prev_event_id": None, "prev_hash": None})
    await _republish(nc, event_log, history[4], unchained.to_bytes())
    after = await event_log.read_case(case_id)
    report = verify_chain(case_id, after)
    assert [(b.kind, b.seq) for b in report.breaks] == [("inserted", after[-1].seq)]


async def test_services_chain_every_event_they_append(case, event_log):
    case_id, history = case
    assert history[0].envelope.prev_event_id is None
    for before, after in zip(history, history[1:], strict=False):
        assert after.envelope.prev_event_id == before.envelope.event_id
        assert after.envelope.prev_hash == before.digest


async def test_case_ids_lists_every_case_in_the_log(case, event_log):
    case_id, _ = case
    other = new_case_id()
    await seed_case(event_log, other, _events(2))
    assert set(await event_log.case_ids()) == {case_id, other}


async def test_removing_the_last_event_is_invisible_to_the_chain_but_not_to_an_anchor(case, event_log, nc):
    case_id, history = case
    anchor = Anchor.of(history[-1], "2026-11-26T12:00:00+00:00")
    await nc.jetstream().delete_msg(event_log.stream, history[-1].seq)
    after = await event_log.read_case(case_id)
    assert verify_chain(case_id, after).intact  # the documented limit of a chain alone
    report = verify_chain(case_id, after, anchor)
    assert [(b.kind, b.seq) for b in report.breaks] == [("removed", history[-1].seq)]
    assert "anchored as the case's head on 2026-11-26" in report.breaks[0].detail


async def test_rewriting_the_last_event_is_caught_by_its_anchor(case, event_log, nc):
    case_id, history = case
    anchor = Anchor.of(history[-1], "2026-11-26T12:00:00+00:00")
    rewritten = json.loads((await nc.jetstream().get_msg(event_log.stream, history[-1].seq)).data)
    rewritten["data"]["reason"] = "escalation_resolved"
    await nc.jetstream().delete_msg(event_log.stream, history[-1].seq)
    await _republish(nc, event_log, history[-1], json.dumps(rewritten).encode())
    after = await event_log.read_case(case_id)
    assert verify_chain(case_id, after).intact  # it still points at the right predecessor
    [brk] = verify_chain(case_id, after, anchor).breaks
    assert (brk.kind, brk.seq) == ("altered", after[-1].seq)


async def test_events_after_the_anchor_are_checked_by_the_chain_as_usual(case, event_log):
    case_id, history = case
    anchor = Anchor.of(history[-1], "2026-11-26T12:00:00+00:00")
    await seed_case(event_log, case_id, [ActionCompleted(action_id="later", completed_on="2026-11-27")])
    assert verify_chain(case_id, await event_log.read_case(case_id), anchor).intact
