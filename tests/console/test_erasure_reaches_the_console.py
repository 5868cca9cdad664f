"""An erasure reaches what the console already holds in memory for its reports."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rethink.console.gateway import Gateway
from rethink.shared.erasure import erase_case
from rethink.shared.events import ERASED
from tests.support import ask, request_payload

pytestmark = pytest.mark.nats


async def test_the_report_cache_forgets_an_erased_cases_personal_fields(console_app, settings, nc, subjects, event_log):
    kept = await ask(nc, subjects.intake("police", "submit"), request_payload(case_reference="POL-KEPT"))
    gone = await ask(nc, subjects.intake("police", "submit"), request_payload(case_reference="POL-GONE"))
    gateway = Gateway(settings)
    await gateway.connect()
    try:
        def description(events, case_id):
            return next(r.payload.description for r in events
                        if r.envelope.case_id == case_id and r.type == "RequestSubmitted")

        before = list(await gateway.read_log())
        assert description(before, gone["case_id"]) != ERASED  # opened while the key exists

        await erase_case(event_log, gone["case_id"], "dpo@pscp.example.org", "retention period ended",
                         datetime.now(UTC))
        after = await gateway.read_log()
        assert description(after, gone["case_id"]) == ERASED
        assert description(after, kept["case_id"]) == description(before, kept["case_id"]) != ERASED
        seqs = [r.seq for r in after]
        assert seqs == sorted(set(seqs)) and {r.seq for r in before} <= set(seqs)  # nothing lost or doubled
        assert [r.envelope.case_id for r in after if r.type == "PersonalDataErased"] == [gone["case_id"]]
    finally:
        await gateway.close()
