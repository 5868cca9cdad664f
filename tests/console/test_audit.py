"""The auditor's read-only timeline of a case, from the log, and the record of who viewed it."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from rethink.shared.access import AccessLog
from tests.support import ask, request_payload, wait_for

pytestmark = pytest.mark.nats


async def test_an_auditor_reads_a_cases_timeline_and_downloads_it_and_each_view_is_recorded(
        browser, nc, subjects, event_log, settings):
    reply = await ask(nc, subjects.intake("police", "submit"), request_payload(case_reference="POL-CR-8001"))
    case_id = reply["case_id"]
    await wait_for(lambda: event_log.read_case(case_id), lambda h: len(h) >= 3, what="facilitator assigned")
    await browser.sign_in("ash")
    r = await wait_for(lambda: browser.get("/"), lambda r: case_id in r.text, what="the case in the list")
    assert r.url.path == "/cases" and "POL-CR-8001" in r.text
    with capture_logs() as logs:
        r = await browser.get(f"/cases/{case_id}/timeline")
        assert r.status_code == 200
        for shown in ("RequestSubmitted", "ChecksConfirmed", "FacilitatorAssigned", "POL-CR-8001", "police"):
            assert shown in r.text, shown
        assert "<form" not in r.text.split('id="main-content"')[1]  # read only: no form on the page
        csv = await browser.client.get(f"/cases/{case_id}/timeline.csv")
        assert csv.headers["content-type"].startswith("text/csv")
        assert csv.text.startswith("seq,occurred_at") and "RequestSubmitted" in csv.text
        page = await browser.client.get(f"/cases/{case_id}/timeline.html")
        assert "attachment" in page.headers["content-disposition"] and "RequestSubmitted" in page.text
        await browser.get(f"/cases/{case_id}")
    viewed = [e for e in logs if e["event"] == "case_viewed"]
    assert [e["page"] for e in viewed] == ["timeline", "timeline.csv", "timeline.html", "case"]
    assert all(e["case_id"] == case_id and e["user"] == "ash" and e["role"] == "auditor" for e in viewed)
    # Each view is also in the access records (`rethink audit access CASE`), naming the auditor.
    reads = await AccessLog(nc.jetstream(), settings).list(case_id)
    assert [r.what for r in reads] == ["console timeline", "console timeline.csv", "console timeline.html",
                                       "console case"]
    assert {r.who for r in reads} == {viewed[0]["email"]}


async def test_practitioners_do_not_read_timelines(browser, nc, subjects):
    reply = await ask(nc, subjects.intake("police", "submit"), request_payload(case_reference="POL-CR-8002"))
    await browser.sign_in("lee")  # even their own agency's case: the timeline is for the partnership
    assert (await browser.get(f"/cases/{reply['case_id']}/timeline")).status_code == 403
    assert (await browser.get("/cases")).status_code == 403
