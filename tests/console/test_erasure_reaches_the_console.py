"""An erasure reaches what the console already holds in memory for its reports."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from rethink.console.gateway import Gateway
from rethink.console.reports import learning_words
from rethink.shared.cli.demo import meeting_record
from rethink.shared.erasure import erase_case
from rethink.shared.events import ERASED
from tests.support import ask, request_payload, wait_for

pytestmark = pytest.mark.nats
LONDON = ZoneInfo("Europe/London")


async def test_the_report_facts_forget_an_erased_cases_personal_fields(console_app, settings, nc, subjects,
                                                                       event_log, service_clock):
    owner = {"name": "Sam Example", "agency": "Children's Social Care", "email": "sam.worker@council.example.org"}

    async def held_case(reference: str) -> str:
        reply = await ask(nc, subjects.intake("police", "submit"), request_payload(case_reference=reference))
        case_id = reply["case_id"]
        await wait_for(lambda: event_log.read_case(case_id),
                       lambda h: any(r.type == "FacilitatorAssigned" for r in h), what="assigned")
        starts = service_clock.now() + timedelta(days=1)
        scheduled = await ask(nc, subjects.command("scheduling", "schedule"), {
            "case_id": case_id, "starts_at": starts.isoformat(), "mode": "virtual", "venue": "Video call"})
        assert scheduled["status"] == "accepted", scheduled
        record = meeting_record("partly_resolved", [("Share the chronology", owner, date.today() + timedelta(days=3))])
        # Held after it was arranged, by the services' clock, and not in its future (moved on a minute).
        record["held_at"] = (service_clock.now() + timedelta(seconds=30)).astimezone(LONDON).isoformat()
        service_clock.offset += timedelta(minutes=1)
        held = await ask(nc, subjects.command("meeting", "record"), {"case_id": case_id, **record})
        assert held["status"] == "accepted", held
        await wait_for(lambda: event_log.read_case(case_id),
                       lambda h: any(r.type == "ActionRecorded" for r in h), what="action recorded")
        return case_id

    kept, gone = await held_case("POL-KEPT"), await held_case("POL-GONE")
    gateway = Gateway(settings)
    await gateway.connect()
    try:
        def seen(facts, case_id):
            f = facts[case_id]
            return ([m.words for m in f.meetings], [a.description for a in f.actions.lines(date.today())],
                    f.requested, [(m.held_on, m.outcome) for m in f.meetings])

        before = {c: seen(await gateway.report_facts(), c) for c in (kept, gone)}
        assert before[gone][0] == [learning_words(meeting_record("resolved", [])["stages"]["learning"])]
        assert before[gone][1] == ["Share the chronology"]  # opened while the key exists

        await erase_case(event_log, gone, "dpo@pscp.example.org", "retention period ended", datetime.now(UTC))
        after = {c: seen(await gateway.report_facts(), c) for c in (kept, gone)}
        assert after[gone][:2] == ([learning_words(ERASED)], [ERASED])
        assert after[gone][2:] == before[gone][2:]  # the request and the meeting still count, once
        assert after[kept] == before[kept]
    finally:
        await gateway.close()
