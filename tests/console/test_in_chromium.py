"""End to end in a real headless Chromium: a practitioner requests a Re-think through the pages, a
facilitator arranges and records the meeting with an action, and the partnership's report counts it.

axe-core checks every page of these journeys for WCAG 2.2 A/AA violations, and the browser reports
no Content Security Policy violation on any of them. Runs against the four real services, a real
nats-server and the console served by uvicorn on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import uvicorn

from tests.console.browser import axe_violations, chromium_path
from tests.console.conftest import PASSWORD
from tests.support import wait_for

pytestmark = pytest.mark.nats
LONDON = ZoneInfo("Europe/London")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def served(console_app) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(console_app, host="127.0.0.1", port=port, lifespan="off",
                                           log_level="warning"))
    task = asyncio.create_task(server.serve())
    await wait_for(lambda: asyncio.sleep(0, server.started), what="the console serving")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


@pytest.fixture
async def chromium() -> AsyncIterator[object]:
    path, why = chromium_path()
    if path is None:
        pytest.skip(why)
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(path), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()


class Visit:
    """One person's browser tab: every page it lands on is checked by axe-core, and CSP reports are kept."""

    def __init__(self, page, base: str, checked: dict[str, list]) -> None:
        self.page, self.base, self.checked = page, base, checked
        self.csp: list[str] = []
        page.on("console", lambda m: self.csp.append(m.text) if "Content Security Policy" in m.text else None)

    async def audit(self) -> None:
        path = re.sub(r"RT-[A-Z2-7]{10}", "RT-…", self.page.url.removeprefix(self.base).split("?")[0])
        if await self.page.locator(".govuk-error-summary").count():
            path += " (with errors)"  # the error summary and error messages are audited too
        if path not in self.checked:
            self.checked[path] = await axe_violations(self.page)

    async def goto(self, path: str) -> None:
        await self.page.goto(self.base + path)
        await self.audit()

    async def submit(self, button: str = "Continue") -> None:
        async with self.page.expect_navigation():
            await self.page.get_by_role("button", name=button, exact=True).click()
        await self.audit()

    async def sign_in(self, username: str) -> None:
        await self.goto("/sign-in")
        await self.page.fill("#username", username)
        await self.page.fill("#password", PASSWORD)
        await self.submit("Sign in")

    async def sign_out(self) -> None:
        async with self.page.expect_navigation():
            await self.page.get_by_role("button", name=re.compile("^Sign out")).click()


async def test_a_request_is_made_scheduled_recorded_and_counted_in_a_real_browser_with_no_wcag_violations(
        served, chromium, service_clock):
    checked: dict[str, list] = {}
    context = await chromium.new_context()
    page = await context.new_page()
    tab = Visit(page, served, checked)

    # A practitioner asks for a Re-think, one question per page.
    await tab.sign_in("priya")
    await page.get_by_role("button", name="Request a Re-think").click()
    await page.wait_for_url("**/urgent-risk")
    await tab.audit()
    await page.check("input[name=immediate_risk][value=no]")
    await tab.submit()
    for _ in range(3):
        await page.check("input[name=answer][value=yes]")
        await tab.submit()
    await page.fill("input[name=case_reference]", "CSC-2026-0142")
    await tab.submit()
    await page.check("input[name=agencies][value='Children\\'s Social Care']")
    await page.check("input[name=agencies][value='Police']")
    await tab.submit()
    await page.check("input[name=reason][value=disagreement]")
    await tab.submit()
    await page.fill("textarea[name=description]", "School and social care disagree on the plan.")
    await tab.submit()
    await page.fill("#name", "Sam Example")
    await page.fill("#agency", "Children's Social Care")
    await page.fill("#email", "sam.worker@council.example.org")
    await tab.submit("Add this person")
    await tab.submit()
    assert "Check your answers" in await page.title()
    await tab.submit("Accept and send")
    assert "Request sent" in await page.content()
    case_id = re.search(r"RT-[A-Z2-7]{10}", await page.content()).group(0)
    await tab.goto("/requests")
    await tab.goto(f"/cases/{case_id}")
    await tab.sign_out()

    # The facilitator arranges the meeting from the queue, then records it stage by stage.
    await tab.sign_in("fac-1")

    async def case_page_offers(label: str) -> bool:
        await page.goto(f"{served}/cases/{case_id}")
        return await page.get_by_role("button", name=label).count() > 0

    await wait_for(lambda: case_page_offers("Arrange the meeting"), what="the case ready to schedule")
    await tab.goto("/queue")
    assert case_id in await page.content()
    await tab.goto(f"/cases/{case_id}")
    await page.get_by_role("button", name="Arrange the meeting").click()
    await page.wait_for_url("**/schedule")
    await tab.audit()
    await tab.submit("Arrange the meeting")  # nothing filled in: the error summary, checked by axe too
    assert "There is a problem" in await page.content()
    day = datetime.now(LONDON).date() + timedelta(days=1)
    await page.fill("#meeting_date-day", str(day.day))
    await page.fill("#meeting_date-month", str(day.month))
    await page.fill("#meeting_date-year", str(day.year))
    await page.fill("#meeting_time", "10:00")
    await page.check("input[name=mode][value=virtual]")
    await page.fill("#venue", "Video call")
    await tab.submit("Arrange the meeting")
    assert "The meeting is arranged for" in await page.content()

    service_clock.offset = timedelta(minutes=2)  # the meeting is held, a little later
    held = datetime.now(LONDON) + timedelta(minutes=1)
    await wait_for(lambda: case_page_offers("Record the meeting"), what="the meeting arranged")
    await page.get_by_role("button", name="Record the meeting").click()
    await page.wait_for_url("**/record/held")
    await tab.audit()
    await page.fill("#held_date-day", str(held.day))
    await page.fill("#held_date-month", str(held.month))
    await page.fill("#held_date-year", str(held.year))
    await page.fill("#held_time", f"{held:%H:%M}")
    await tab.submit()
    await page.fill("#name", "Sam Example")
    await page.fill("#agency", "Children's Social Care")
    await tab.submit("Add this attendee")
    await tab.submit()
    await page.fill("#strengths", "Attendance has improved.")
    await tab.submit()
    await page.fill("#professional", "Sam Example")
    await page.fill("#agency", "Children's Social Care")
    await page.fill("#feelings", "Stretched")
    await page.fill("#needs", "Evidence shared before the review")
    await tab.submit()
    for field, text in (("#impact", "The review was delayed."), ("#ways_forward", "Share chronologies."),
                        ("#learning", "Share chronologies before meetings.")):
        await page.fill(field, text)
        await tab.submit()
    await page.check("input[name=outcome][value=partly_resolved]")
    await tab.submit()
    due = held.date() + timedelta(days=7)
    await page.fill("#description", "Share the chronology")
    await page.fill("#owner_name", "Sam Example")
    await page.fill("#owner_agency", "Children's Social Care")
    await page.fill("#owner_email", "sam.worker@council.example.org")
    await page.fill("#due_date-day", str(due.day))
    await page.fill("#due_date-month", str(due.month))
    await page.fill("#due_date-year", str(due.year))
    await tab.submit("Add this action")
    await tab.submit()
    await tab.submit("Record the meeting")
    assert "The meeting is recorded, with 1 action." in await page.content()
    await tab.goto(f"/cases/{case_id}/timeline")
    await tab.sign_out()

    # The partnership manager's report counts it.
    await tab.sign_in("morgan")
    until = due + timedelta(days=1)

    async def report() -> str:
        await page.goto(f"{served}/reports?from-day={held.day}&from-month={held.month}&from-year={held.year}"
                        f"&to-day={until.day}&to-month={until.month}&to-year={until.year}")
        return await page.content()

    content = await wait_for(report, lambda c: "Partly resolved" in c and "northside-school" in c, what="report")
    await tab.audit()
    outcomes = await page.locator("#outcomes tbody tr", has_text="Partly resolved").inner_text()
    assert outcomes.split()[-1] == "1"
    assert "Not completed, not yet due" in content
    await context.close()

    assert len(checked) >= 25 and "/cases/RT-…/schedule (with errors)" in checked, sorted(checked)
    failures = {path: found for path, found in checked.items() if found}
    assert not failures, failures
    assert not tab.csp, tab.csp


async def test_in_the_browser_another_agencys_case_is_403_and_a_post_without_the_token_is_refused(
        served, chromium, nc, subjects):
    from tests.support import ask, request_payload

    reply = await ask(nc, subjects.intake("police", "submit"), request_payload(case_reference="POL-CR-9001"))
    context = await chromium.new_context()
    page = await context.new_page()
    tab = Visit(page, served, {})
    await tab.sign_in("priya")  # Northside School Trust
    response = await page.goto(f"{served}/cases/{reply['case_id']}")
    assert response.status == 403 and "POL-CR-9001" not in await page.content()
    await tab.goto("/requests/new/urgent-risk")
    await page.evaluate("document.querySelectorAll('main input[name=csrf_token]').forEach(e => e.remove())")
    await page.check("input[name=immediate_risk][value=no]")
    async with page.expect_navigation() as nav:
        await page.get_by_role("button", name="Continue").click()
    assert (await nav.value).status == 403
    assert "The form had expired or did not come from this site" in await page.content()
    with contextlib.suppress(Exception):
        await context.close()
