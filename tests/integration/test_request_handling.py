"""Requests (agencies' messages, commands, queries, operators' routes) are answered on the event loop.

FastStream resolves a handler parameter taken from its context (the message) in a worker thread:
a thread hand-off per request, a tenth of a service's CPU under load (issue 7). The handlers take
their subject and body from a decoder instead; this proves no request goes through a thread.
"""

from __future__ import annotations

import fast_depends.utils
import pytest

from rethink.intake.app import build as intake
from rethink.meeting.app import build as meeting
from tests.support import ask, request_payload

pytestmark = pytest.mark.nats


async def test_requests_of_every_kind_are_answered_without_a_thread_hand_off(run_services, nc, subjects,
                                                                             monkeypatch):
    await run_services(intake, meeting)
    handed_off: list[str] = []
    real = fast_depends.utils.run_in_threadpool

    async def counting(func, *args, **kwargs):
        handed_off.append(getattr(func, "__qualname__", repr(func)))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(fast_depends.utils, "run_in_threadpool", counting)

    receipt = await ask(nc, subjects.intake("police", "submit"), request_payload())
    assert receipt["status"] == "accepted", receipt
    case = await ask(nc, subjects.query("intake", "case"), {"case_id": receipt["case_id"]})
    assert case["status"] == "ok", case
    refused = await ask(nc, subjects.command("meeting", "record"), {"case_id": "not a case id"})
    assert refused["status"] == "rejected", refused
    ping = await ask(nc, subjects.query("meeting", "ping"), {})
    assert ping["service"] == "meeting"
    parked = await ask(nc, f"{subjects.prefix}.ops.meeting.retry_parked", {"id": 1})
    assert parked["status"] in ("rejected", "not_found", "error"), parked

    assert handed_off == [], f"requests resolved in a worker thread: {handed_off}"
