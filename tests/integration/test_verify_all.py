"""`audit verify --all` and `audit anchor` read the log once, and report what the case-by-case read did.

Against a real nats-server: a log of several cases, some tampered with through the JetStream API.
Every report equals ``verify_chain`` of that case's own read (the way both commands worked before
the thirteenth round of the performance work), and only the cases that are not whole are read again.
"""

from __future__ import annotations

import json

import pytest

from rethink.shared.audit import Anchor, verify_chain
from rethink.shared.cli.chains import heads, verify_all
from rethink.shared.cli.client import Client
from rethink.shared.envelope import new_case_id
from rethink.shared.events import ActionCompleted, CaseClosed
from tests.support import calls_to, seed_case

pytestmark = pytest.mark.nats

AT = "2026-11-27T10:00:00+00:00"


def _events(n: int):
    return [ActionCompleted(action_id=f"A{i}", completed_on="2026-11-20") for i in range(1, n)] + [
        CaseClosed(reason="resolved_at_meeting")]


@pytest.fixture
async def cases(event_log):
    """Five cases of five events, written in turn so that their events interleave in the log."""
    ids = [new_case_id() for _ in range(5)]
    for i in range(5):
        for case_id in ids:
            await seed_case(event_log, case_id, [_events(5)[i]])
    return ids


@pytest.fixture
def reads(monkeypatch):
    """The cases read on their own (``Client.stored_history`` by verify, ``sealed_history`` by anchor), in order."""
    seen = calls_to(monkeypatch, Client, "stored_history")
    anchoring = calls_to(monkeypatch, Client, "sealed_history")
    yield seen
    assert anchoring == [], "anchor read a case on its own"


async def _oracle(event_log, case_ids, anchors):
    return [verify_chain(c, await event_log.read_sealed(c), anchors.get(c)) for c in sorted(case_ids)]


async def test_an_untouched_log_is_verified_and_anchored_without_reading_any_case_on_its_own(
        cases, event_log, settings, reads):
    async with Client(settings) as client:
        anchors = await heads(client, AT)
        reports = await verify_all(client, anchors)
    assert reads == []
    assert anchors == {c: Anchor.of((await event_log.read_sealed(c))[-1], AT) for c in cases}
    assert reports == await _oracle(event_log, cases, anchors)
    assert [(r.intact, r.events) for r in reports] == [(True, 5)] * 5


async def test_tampered_cases_are_read_again_and_reported_as_the_case_by_case_read_reports_them(
        cases, event_log, settings, nc, reads):
    js = nc.jetstream()
    removed, moved, cut_short, untouched = cases[0], cases[1], cases[2], cases[3:]
    async with Client(settings) as client:
        anchors = await heads(client, AT)
    history = {c: await event_log.read_sealed(c) for c in cases}
    await js.delete_msg(settings.stream, history[removed][2].seq)
    # Deleted and published again, unchanged: it now comes after the event that follows it.
    await js.delete_msg(settings.stream, history[moved][1].seq)
    await js.publish(event_log.subjects.event(moved, history[moved][1].type), history[moved][1].envelope.to_bytes(),
                     stream=settings.stream)
    # The last event gone: the chain cannot see it, its anchor can.
    await js.delete_msg(settings.stream, history[cut_short][-1].seq)

    async with Client(settings) as client:
        reports = await verify_all(client, anchors)
        unanchored = await verify_all(client, {})

    assert reports == await _oracle(event_log, cases, anchors)
    assert unanchored == await _oracle(event_log, cases, {})
    found = {r.case_id: [b.kind for b in r.breaks] for r in reports}
    assert found[removed] == ["removed"] and found[moved] == ["reordered"] and found[cut_short] == ["removed"]
    assert all(found[c] == [] for c in untouched)
    # Read again: the three tampered cases with their anchors, then the two whose chains broke.
    assert reads == sorted([removed, moved, cut_short]) + sorted([removed, moved])


async def test_a_case_only_in_the_anchors_file_is_reported_removed(cases, event_log, settings, reads):
    gone = new_case_id()
    async with Client(settings) as client:
        anchors = await heads(client, AT)
        anchors[gone] = Anchor("9b0c3f4e-8a51-4d0e-9c8f-7f6a2e1d0b11", "0" * 64, 1, AT)
        reports = await verify_all(client, anchors)
    assert reads == [gone]
    assert reports == await _oracle(event_log, [*cases, gone], anchors)
    [report] = [r for r in reports if r.case_id == gone]
    assert [b.kind for b in report.breaks] == ["removed"] and report.events == 0


async def test_an_unreadable_event_is_reported_by_verify_and_stops_anchor(cases, event_log, settings, nc, monkeypatch):
    ack = await nc.jetstream().publish(event_log.subjects.event(cases[0], "MeetingHeld"), b"{not json",
                                       stream=settings.stream)
    verify_reads = calls_to(monkeypatch, Client, "stored_history")
    anchor_reads = calls_to(monkeypatch, Client, "sealed_history")
    async with Client(settings) as client:
        reports = await verify_all(client, {})
        with pytest.raises(ValueError, match="not an event envelope"):
            await heads(client, AT)
    assert verify_reads == [cases[0]] and anchor_reads == [cases[0]]
    found = {r.case_id: [(b.kind, b.seq) for b in r.breaks] for r in reports}
    assert found == {c: [] for c in cases} | {cases[0]: [("unreadable", ack.seq)]}


async def test_the_cli_says_the_same_with_and_without_all(cases, event_log, settings, nc, monkeypatch):
    from tests.integration.test_audit_history import rethink

    history = await event_log.read_sealed(cases[0])
    await nc.jetstream().delete_msg(settings.stream, history[1].seq)
    await nc.jetstream().publish(event_log.subjects.event(cases[1], "CaseClosed"), b"\x00" * 10, stream=settings.stream)
    every = await rethink(monkeypatch, settings, "audit", "verify", "--all", "--json")
    assert every.exit_code == 2
    one_by_one, exits = [], {}
    for case_id in sorted(cases):
        alone = await rethink(monkeypatch, settings, "audit", "verify", case_id, "--json")
        one_by_one += json.loads(alone.stdout)
        exits[case_id] = alone.exit_code
    assert json.loads(every.stdout) == one_by_one
    kinds = {r["case_id"]: [b["kind"] for b in r["breaks"]] for r in one_by_one}
    assert kinds == {c: [] for c in cases} | {cases[0]: ["removed"], cases[1]: ["unreadable"]}
    assert exits == {c: 0 for c in cases} | {cases[0]: 2, cases[1]: 2}
