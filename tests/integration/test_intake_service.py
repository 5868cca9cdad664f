from __future__ import annotations

import pytest

from rethink.intake.app import build as intake
from tests.support import ask, request_payload, wait_for

pytestmark = pytest.mark.nats


async def test_a_complete_request_is_submitted_and_its_checks_confirmed(run_services, nc, subjects, event_log):
    await run_services(intake)
    reply = await ask(nc, subjects.intake("police", "submit"), request_payload())
    assert reply["status"] == "accepted", reply
    assert reply["checks"] == "complete"
    case_id = reply["case_id"]
    history = await wait_for(lambda: event_log.read_case(case_id), lambda h: len(h) == 2, what="ChecksConfirmed")
    assert [r.type for r in history] == ["RequestSubmitted", "ChecksConfirmed"]
    assert history[0].envelope.producer == "police"
    view = await wait_for(lambda: ask(nc, subjects.query("intake", "case"), {"case_id": case_id}),
                          lambda v: v.get("result", {}).get("status") == "checks_confirmed")
    assert view["result"]["agency"] == "police"
