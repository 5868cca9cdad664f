"""Who may see and do what: every route checks the role, auditors change nothing, forms need the CSRF token."""

from __future__ import annotations

import pytest

from tests.console.conftest import PASSWORD
from tests.support import ask, request_payload, wait_for

pytestmark = pytest.mark.nats


async def submitted_case(nc, subjects, agency: str, reference: str) -> str:
    reply = await ask(nc, subjects.intake(agency, "submit"), request_payload(case_reference=reference))
    assert reply["status"] == "accepted", reply
    return reply["case_id"]


async def test_a_practitioner_sees_only_their_own_agencys_requests(browser, nc, subjects, console_app):
    police_case = await submitted_case(nc, subjects, "police", "POL-CR-55120")
    school_case = await submitted_case(nc, subjects, "northside-school", "CSC-2026-0142")
    await browser.sign_in("priya")  # Northside School Trust

    page = await wait_for(lambda: browser.get("/requests"), lambda r: school_case in r.text, what="own request")
    assert police_case not in page.text and "POL-CR-55120" not in page.text
    own = await wait_for(lambda: browser.get(f"/cases/{school_case}"), lambda r: r.status_code == 200,
                         what="own case page")
    assert "CSC-2026-0142" in own.text
    other = await browser.get(f"/cases/{police_case}")
    assert other.status_code == 403
    assert "POL-CR-55120" not in other.text
    assert (await browser.get("/queue")).status_code == 403  # the facilitators' queue is not theirs


async def test_an_auditor_reads_but_every_change_is_refused(browser, nc, subjects, event_log):
    case_id = await submitted_case(nc, subjects, "police", "POL-CR-1")
    await browser.sign_in("ash")
    page = await wait_for(lambda: browser.get(f"/cases/{case_id}"), lambda r: r.status_code == 200,
                          what="case page")
    assert "POL-CR-1" in page.text
    for path in ("/requests/new/urgent-risk", "/requests/new/check-answers", "/requests/new/invitees",
                 "/queue", "/cases/" + case_id, "/anything-at-all"):
        r = await browser.post(path, {"immediate_risk": "no"}, follow=False)
        assert r.status_code == 403, path
        assert "Auditors can read but not change anything" in r.text
    assert (await browser.get("/requests/new")).status_code == 403
    assert await event_log.case_ids() == [case_id]
    r = await browser.post("/sign-out", follow=False)  # signing out changes nothing in the system
    assert r.status_code == 303


async def test_signed_out_people_are_sent_to_sign_in(browser):
    for path in ("/", "/requests", "/requests/new", "/queue", "/cases/RT-AAAAAAAAAA"):
        r = await browser.client.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/sign-in", path


async def test_a_form_posted_without_its_csrf_token_is_refused_and_changes_nothing(browser, event_log):
    await browser.sign_in("priya")
    await browser.get("/requests/new")
    r = await browser.client.post("/requests/new/urgent-risk", data={"immediate_risk": "no"})
    assert r.status_code == 403
    r = await browser.client.post("/requests/new/urgent-risk",
                                  data={"immediate_risk": "no", "csrf_token": "forged"})
    assert r.status_code == 403
    r = await browser.get("/requests/new/case-reference")  # the answer was never recorded
    assert r.url.path == "/requests/new/urgent-risk"


async def test_the_session_cookie_is_http_only_and_same_site(browser):
    await browser.get("/sign-in")
    r = await browser.client.post("/sign-in", data={"username": "priya", "password": PASSWORD,
                                                    "csrf_token": browser.token()})
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie


async def test_a_case_id_that_is_not_one_is_a_404_not_an_error(browser):
    await browser.sign_in("fac-1")
    assert (await browser.get("/cases/not-a-case")).status_code == 404
    assert (await browser.get("/cases/RT-AAAAAAAAAA")).status_code == 404
