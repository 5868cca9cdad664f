"""A practitioner requests a Re-think through the pages, with no JavaScript, against the real services."""

from __future__ import annotations

import re

import pytest

from rethink.shared.access import AccessLog
from tests.support import ask, request_payload, wait_for

pytestmark = pytest.mark.nats

NEW = "/requests/new"
CASE_ID = re.compile(r"RT-[A-Z2-7]{10}")


async def answer_up_to_invitees(browser, checks=("yes", "yes", "yes"), reference="CSC-2026-0142") -> None:
    r = await browser.get(NEW)
    assert r.url.path == f"{NEW}/urgent-risk"
    assert "Is a child at risk of significant harm now?" in browser.page
    r = await browser.post(f"{NEW}/urgent-risk", {"immediate_risk": "no"})
    for slug, answer in zip(("check-network", "check-conversation", "check-hips"), checks, strict=True):
        assert r.url.path == f"{NEW}/{slug}", r.url
        r = await browser.post(f"{NEW}/{slug}", {"answer": answer, "note": ""})
        if answer == "no":
            assert r.url.path == f"{NEW}/{slug}/guidance"
            next_href = re.search(r'href="(/requests/new/[a-z-]+)"[^>]*class="govuk-button"', browser.page)
            assert next_href, browser.page
            r = await browser.get(next_href.group(1))
    assert r.url.path == f"{NEW}/case-reference"
    r = await browser.post(f"{NEW}/case-reference", {"case_reference": reference})
    assert r.url.path == f"{NEW}/agencies"
    r = await browser.post(f"{NEW}/agencies", [("agencies", "Children's Social Care"), ("agencies", "Police"),
                                               ("other_agencies", "Youth Justice Service")])
    assert r.url.path == f"{NEW}/reason"
    r = await browser.post(f"{NEW}/reason", {"reason": "disagreement"})
    assert r.url.path == f"{NEW}/description"
    r = await browser.post(f"{NEW}/description", {"description": "School and social care disagree on the plan."})
    assert r.url.path == f"{NEW}/invitees"


async def add_invitees(browser) -> None:
    r = await browser.post(f"{NEW}/invitees", {"action": "add", "name": "Sam Example",
                                               "agency": "Children's Social Care",
                                               "email": "sam.worker@council.example.org"})
    assert r.url.path == f"{NEW}/invitees" and "sam.worker@council.example.org" in browser.page
    r = await browser.post(f"{NEW}/invitees", {"action": "continue", "name": "DC Lee Example", "agency": "Police",
                                               "email": "safeguarding.unit@police.example.org"})
    assert r.url.path == f"{NEW}/check-answers", browser.page


async def test_a_practitioner_requests_a_rethink_page_by_page_and_the_case_is_in_the_log(browser, event_log):
    await browser.sign_in("priya")
    await answer_up_to_invitees(browser)
    await add_invitees(browser)
    for shown in ("CSC-2026-0142", "Children&#39;s Social Care, Police, Youth Justice Service",
                  "Professional disagreement", "School and social care disagree on the plan.",
                  "DC Lee Example, Police (safeguarding.unit@police.example.org)"):
        assert shown in browser.page, shown

    r = await browser.post(f"{NEW}/check-answers")
    assert r.url.path == f"{NEW}/confirmation"
    assert "Request sent" in browser.page and "CSC-2026-0142" in browser.page
    case_id = CASE_ID.search(browser.page).group(0)

    history = await wait_for(lambda: event_log.read_case(case_id), lambda h: len(h) >= 2, what="checks confirmed")
    assert [h.type for h in history[:2]] == ["RequestSubmitted", "ChecksConfirmed"]
    submitted = history[0]
    assert submitted.envelope.producer == "northside-school"  # from the subject the console sent it on
    assert submitted.shown.actor == "dsl@northside-school.example.org"  # stored sealed (docs/privacy.md)
    e = submitted.payload
    assert e.case_reference == "CSC-2026-0142"
    assert e.requester.email == "dsl@northside-school.example.org"
    assert e.agencies == ["Children's Social Care", "Police", "Youth Justice Service"]
    assert [p.email for p in e.invitees] == ["sam.worker@council.example.org", "safeguarding.unit@police.example.org"]
    assert not e.checks.missing()

    rows = await wait_for(lambda: browser.get("/requests"), lambda resp: case_id in resp.text, what="my requests")
    assert "Checks confirmed" in rows.text
    # Sending again (Back, then "Accept and send" once more) creates nothing new: the draft is gone.
    r = await browser.post(f"{NEW}/check-answers")
    assert r.url.path == f"{NEW}/urgent-risk"
    assert await event_log.case_ids() == [case_id]


async def test_a_child_at_risk_now_stops_the_request_with_referral_guidance(browser, event_log):
    await browser.sign_in("priya")
    await browser.get(NEW)
    r = await browser.post(f"{NEW}/urgent-risk", {"immediate_risk": "yes"})
    assert r.url.path == f"{NEW}/urgent-risk/stop"
    assert "Make a safeguarding referral now" in browser.page
    assert "call 999" in browser.page
    # The flow cannot be continued past the stop by typing a later page's address.
    r = await browser.get(f"{NEW}/case-reference")
    assert r.url.path == f"{NEW}/urgent-risk"
    r = await browser.get(f"{NEW}/check-answers")
    assert r.url.path == f"{NEW}/urgent-risk"
    assert await event_log.case_ids() == []


async def test_a_check_answered_no_shows_guidance_and_the_request_waits_for_its_checks(browser, event_log):
    await browser.sign_in("jo")
    await answer_up_to_invitees(browser, checks=("yes", "yes", "no"), reference="NHS-HV-7781")
    await add_invitees(browser)
    r = await browser.post(f"{NEW}/check-answers")
    assert r.url.path == f"{NEW}/confirmation"
    assert "waiting for the checks" in browser.page
    assert "Consider the HIPS Escalation Policy" in browser.page
    case_id = CASE_ID.search(browser.page).group(0)
    history = await event_log.read_case(case_id)
    assert [h.type for h in history] == ["RequestSubmitted"]
    assert history[0].payload.checks.missing() == ["hips_policy_considered"]
    page = await wait_for(lambda: browser.get("/requests"), lambda resp: case_id in resp.text, what="my requests")
    assert "Waiting for checks" in page.text


async def test_each_page_answers_bad_input_with_the_error_summary_and_keeps_what_was_typed(browser, event_log):
    await browser.sign_in("priya")
    await browser.get(NEW)
    r = await browser.post(f"{NEW}/urgent-risk", {})
    assert r.status_code == 400
    assert "govuk-error-summary" in browser.page and "There is a problem" in browser.page
    assert 'href="#immediate_risk"' in browser.page
    assert "Select yes if a child is at risk of significant harm now" in browser.page
    assert "<title>Error: " in browser.page

    await browser.post(f"{NEW}/urgent-risk", {"immediate_risk": "no"})
    for slug in ("check-network", "check-conversation", "check-hips"):
        await browser.post(f"{NEW}/{slug}", {"answer": "yes"})
    r = await browser.post(f"{NEW}/case-reference", {"case_reference": "Jane Smith"})
    assert r.status_code == 400 and 'href="#case_reference"' in browser.page
    assert 'value="Jane Smith"' in browser.page  # what was typed is kept
    assert "do not use the child&#39;s name" in browser.page

    await browser.post(f"{NEW}/case-reference", {"case_reference": "CSC-1"})
    r = await browser.post(f"{NEW}/agencies", {})
    assert r.status_code == 400 and 'href="#agencies"' in browser.page
    await browser.post(f"{NEW}/agencies", {"agencies": "Police"})
    r = await browser.post(f"{NEW}/reason", {"reason": "because"})
    assert r.status_code == 400 and 'href="#reason"' in browser.page
    await browser.post(f"{NEW}/reason", {"reason": "stuckness"})
    r = await browser.post(f"{NEW}/description", {"description": "x" * 4001})
    assert r.status_code == 400 and "4,000 characters or fewer" in browser.page
    await browser.post(f"{NEW}/description", {"description": "Stuck for three months."})

    r = await browser.post(f"{NEW}/invitees", {"action": "add", "name": "Sam Example", "agency": "CSC",
                                               "email": "not-an-address"})
    assert r.status_code == 400 and 'href="#email"' in browser.page
    assert 'value="Sam Example"' in browser.page and 'value="not-an-address"' in browser.page
    r = await browser.post(f"{NEW}/invitees", {"action": "add", "name": "Me", "agency": "School",
                                               "email": "dsl@northside-school.example.org"})
    assert r.status_code == 400 and "You are the requester" in browser.page
    r = await browser.post(f"{NEW}/invitees", {"action": "continue"})
    assert r.status_code == 400 and "Add at least one person to invite" in browser.page
    assert await event_log.case_ids() == []


async def test_change_links_on_check_your_answers_return_there(browser):
    await browser.sign_in("priya")
    await answer_up_to_invitees(browser)
    await add_invitees(browser)
    await browser.get(f"{NEW}/reason?change=1")
    r = await browser.post(f"{NEW}/reason", {"reason": "both", "change": "1"})
    assert r.url.path == f"{NEW}/check-answers"
    assert re.search(r'govuk-summary-list__value">\s*Both\s*<', browser.page)
    assert not re.search(r'govuk-summary-list__value">\s*Professional disagreement\s*<', browser.page)


async def test_a_practitioner_confirms_the_checks_later_and_only_for_their_own_agency(
        browser, second_browser, nc, subjects, event_log, settings):
    checks = {**request_payload()["checks"], "conversation_had": {"answer": False}}
    reply = await ask(nc, subjects.intake("community-health", "submit"),
                      request_payload(case_reference="NHS-HV-7781", checks=checks))
    case_id = reply["case_id"]
    await browser.sign_in("jo")
    page = await wait_for(lambda: browser.get(f"/cases/{case_id}"), lambda r: r.status_code == 200, what="case")
    assert f'href="/cases/{case_id}/confirm-checks"' in page.text
    # Reading a case in the console leaves an access record naming the person (docs/privacy.md).
    reads = await AccessLog(nc.jetstream(), settings).list(case_id)
    assert reads and {(r.who, r.what) for r in reads} == {("health.visitor@nhs-trust.example.org", "console case")}

    await browser.get(f"/cases/{case_id}/confirm-checks")
    r = await browser.post(f"/cases/{case_id}/confirm-checks", {
        "raised_with_network": "yes", "conversation_had": "no", "hips_policy_considered": "yes"})
    assert r.status_code == 400 and 'href="#conversation_had"' in browser.page
    assert "Have a conversation with those involved" in browser.page
    assert [h.type for h in await event_log.read_case(case_id)] == ["RequestSubmitted"]

    await second_browser.sign_in("priya")  # another agency may neither see nor confirm it
    assert (await second_browser.get(f"/cases/{case_id}/confirm-checks")).status_code == 403
    r = await second_browser.post(f"/cases/{case_id}/confirm-checks", {
        "raised_with_network": "yes", "conversation_had": "yes", "hips_policy_considered": "yes"})
    assert r.status_code == 403
    assert [h.type for h in await event_log.read_case(case_id)] == ["RequestSubmitted"]

    r = await browser.post(f"/cases/{case_id}/confirm-checks", {
        "raised_with_network": "yes", "conversation_had": "yes", "hips_policy_considered": "yes"})
    assert r.url.path == f"/cases/{case_id}" and "The checks are confirmed" in browser.page
    history = await event_log.read_case(case_id)
    assert [h.type for h in history][:2] == ["RequestSubmitted", "ChecksConfirmed"]
    assert history[1].envelope.producer == "community-health"
    assert history[1].shown.actor == "health.visitor@nhs-trust.example.org"
