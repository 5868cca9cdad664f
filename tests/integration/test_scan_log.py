"""``scan_log``: the whole log read once, in order, as a replay reads it (``rethink audit search``'s read).

Against a real nats-server: every event handed out once and in order across several batches, up to
the end asked for; a consumer lost mid-read (a clustered stream's leader moving) or a message lost
on its way is read on from a fresh consumer, nothing skipped and nothing twice; a reader that leaves
early leaves no consumer behind.
"""

from __future__ import annotations

import contextlib

import pytest

from rethink.shared import rebuild
from rethink.shared.envelope import new_case_id
from rethink.shared.rebuild import scan_log
from tests.integration.test_rebuild import LeaderMoves
from tests.support import seed_case

from .test_audit_history import completed, submitted

pytestmark = pytest.mark.nats


async def _log_of(event_log, cases: int) -> list[tuple[int, str, str]]:
    """``cases`` cases of three events each, interleaved as cases are; (seq, case, type) of each."""
    ids = [new_case_id() for _ in range(cases)]
    for case_id in ids:
        await seed_case(event_log, case_id, [submitted()])
    for n, case_id in enumerate(ids):
        await seed_case(event_log, case_id, [completed(n), completed(n + 100)])
    return [(r.seq, r.envelope.case_id, r.type) for case_id in ids for r in await event_log.read_sealed(case_id)]


async def _scanned(js, settings, subjects, last: int) -> list[tuple[int, str, str]]:
    out = []
    async with contextlib.aclosing(scan_log(js, settings.stream, subjects, last)) as scan:
        async for batch in scan:
            out += [(e.seq, e.case_id, e.kind) for e in batch]
    return out


async def test_every_event_up_to_the_end_asked_for_is_handed_out_once_in_order(
        event_log, settings, subjects, nc, monkeypatch):
    monkeypatch.setattr(rebuild, "BATCH", 4)  # several batches
    expected = sorted(await _log_of(event_log, 5))
    assert await _scanned(nc.jetstream(), settings, subjects, expected[-1][0]) == expected
    # Appended after the reader asked where the log ends: the next read's, not this one's.
    assert await _scanned(nc.jetstream(), settings, subjects, expected[9][0]) == expected[:10]
    assert await _scanned(nc.jetstream(), settings, subjects, 0) == []


async def test_a_read_whose_consumer_is_lost_reads_on_from_a_fresh_one(event_log, settings, subjects, nc, monkeypatch):
    monkeypatch.setattr(rebuild, "BATCH", 4)
    expected = sorted(await _log_of(event_log, 5))
    moving = LeaderMoves(nc.jetstream())
    moving.lose_the_first_consumer_after_one_batch(monkeypatch, rebuild)
    assert await _scanned(moving, settings, subjects, expected[-1][0]) == expected
    assert len(moving.consumers) == 2


async def test_a_message_lost_on_its_way_is_read_again_from_a_fresh_consumer(
        event_log, settings, subjects, nc, monkeypatch):
    monkeypatch.setattr(rebuild, "BATCH", 4)
    expected = sorted(await _log_of(event_log, 5))
    real_fetch, fetched = rebuild.Batches.fetch, []

    async def fetch(batches, *a, **k):
        msgs = await real_fetch(batches, *a, **k)
        if len(fetched) == 1:
            msgs = msgs[:-1]  # the second batch's last message never arrives
        fetched.append(1)
        return msgs
    monkeypatch.setattr(rebuild.Batches, "fetch", fetch)
    counting = LeaderMoves(nc.jetstream())
    assert await _scanned(counting, settings, subjects, expected[-1][0]) == expected
    assert len(counting.consumers) == 2


async def test_a_reader_that_leaves_early_leaves_no_consumer(event_log, settings, subjects, nc, monkeypatch):
    monkeypatch.setattr(rebuild, "BATCH", 4)
    expected = sorted(await _log_of(event_log, 5))
    js = nc.jetstream()

    async def consumers() -> int:
        return (await js.stream_info(settings.stream)).state.consumer_count

    services = await consumers()  # the services' durable consumers, made by the bootstrap
    async with contextlib.aclosing(scan_log(js, settings.stream, subjects, expected[-1][0])) as scan:
        async for batch in scan:
            assert await consumers() == services + 1
            assert [e.seq for e in batch] == [seq for seq, *_ in expected[:4]]
            break
    assert await consumers() == services
