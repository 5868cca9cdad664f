"""A consumer meeting an event it cannot open: it waits for an absent key store, parks a forged ciphertext."""

from __future__ import annotations

import asyncio

from rethink.shared.delivery import deliver
from rethink.shared.envelope import InvalidEvent
from rethink.shared.events import ActionCompleted
from rethink.shared.keystore import KeyStoreUnavailable
from tests.support import recorded


def _event():
    return recorded(ActionCompleted(action_id="A1", completed_on="2026-11-20", note="n"))


async def _run(decode, max_attempts: int = 2):
    applied, parked = [], []

    async def handler(r):
        applied.append(r)

    async def park(service, seq, data, reason, attempts):
        parked.append(reason)

    async def keep_alive():
        return None

    event = _event()
    done = await deliver(handler, event.envelope.to_bytes(), 1, service="meeting", decode=decode,
                         keep_alive=keep_alive, stopping=asyncio.Event(), park=park, max_attempts=max_attempts,
                         first_delay=0.001)
    return done, applied, parked, event


async def test_an_unreachable_key_store_is_waited_for_however_long_and_the_event_is_never_parked():
    calls = 0
    event = _event()

    async def decode(env, data, seq):
        nonlocal calls
        calls += 1
        if calls <= 5:  # more failures than max_attempts: transient failures are not counted
            raise KeyStoreUnavailable("key store unreachable")
        return event

    done, applied, parked, _ = await _run(decode)
    assert done and applied == [event] and parked == [] and calls == 6


async def test_a_ciphertext_that_does_not_open_is_parked_at_once():
    async def decode(env, data, seq):
        raise InvalidEvent("field note does not decrypt with its case's key")

    done, applied, parked, _ = await _run(decode)
    assert done and applied == [] and parked == ["unreadable: field note does not decrypt with its case's key"]


async def test_a_failure_to_open_is_counted_against_the_event_type_even_before_anything_was_decoded():
    seen = []
    event = _event()
    calls = 0

    async def decode(env, data, seq):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyStoreUnavailable("key store unreachable")
        return event

    async def handler(r):
        return None

    async def park(*_):
        return None

    async def keep_alive():
        return None

    done = await deliver(handler, event.envelope.to_bytes(), 1, service="meeting", decode=decode,
                         keep_alive=keep_alive, stopping=asyncio.Event(), park=park, max_attempts=2,
                         first_delay=0.001, failed=lambda kind, transient: seen.append((kind, transient)))
    assert done and seen == [("ActionCompleted", True)]
