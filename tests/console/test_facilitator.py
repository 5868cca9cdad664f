"""The facilitator's journeys through the pages, with no JavaScript, against the real services:
arrange, move and cancel a meeting; record it stage by stage; complete its actions; escalate; close."""

from __future__ import annotations

import html
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.support import ask, request_payload, wait_for

pytestmark = pytest.mark.nats
LONDON = ZoneInfo("Europe/London")


async def assigned_case(nc, subjects, event_log, reference: str) -> str:
    reply = await ask(nc, subjects.intake("police", "submit"), request_payload(case_reference=reference))
    assert reply["status"] == "accepted", reply
    case_id = reply["case_id"]
    await wait_for(lambda: event_log.read_case(case_id),
                   lambda h: any(r.type == "FacilitatorAssigned" for r in h), what="facilitator assigned")
    return case_id


def types(history) -> list[str]:
    return [r.type for r in history]


def date_fields(name: str, day) -> dict[str, str]:
    return {f"{name}-day": str(day.day), f"{name}-month": str(day.month), f"{name}-year": str(day.year)}


async def until_page_has(browser, path: str, text: str):
    return await wait_for(lambda: browser.get(path), lambda r: text in r.text, what=f"{text!r} on {path}")


async def test_a_facilitator_arranges_moves_and_records_the_meeting_then_completes_actions_and_closes(
        browser, nc, subjects, event_log, service_clock):
    case_id = await assigned_case(nc, subjects, event_log, "POL-CR-7001")
    case = f"/cases/{case_id}"
    await browser.sign_in("fac-1")
    await until_page_has(browser, case, "Arrange the meeting")

    # Arrange: wrong answers come back with the error summary and what was typed.
    await browser.get(f"{case}/schedule")
    r = await browser.post(f"{case}/schedule", {"meeting_time": "25:99", "duration_minutes": "5", "venue": ""})
    assert r.status_code == 400
    page = html.unescape(browser.page)
    for message in ("There is a problem", "Enter the date of the meeting",
                    "The start time must be a time in 24-hour format", "from 15 to 480",
                    "Select how the meeting will be held"):
        assert message in page, message
    assert 'value="25:99"' in browser.page and 'href="#meeting_date"' in browser.page
    tomorrow = datetime.now(LONDON).date() + timedelta(days=1)
    r = await browser.post(f"{case}/schedule", {**date_fields("meeting_date", tomorrow), "meeting_time": "10:00",
                                                "duration_minutes": "60", "mode": "in_person", "venue": ""})
    assert r.status_code == 400 and "Enter the address of the meeting" in browser.page
    r = await browser.post(f"{case}/schedule", {**date_fields("meeting_date", tomorrow), "meeting_time": "10:00",
                                                "duration_minutes": "60", "mode": "virtual", "venue": "Video call"})
    assert r.url.path == case and "The meeting is arranged for" in browser.page
    history = await event_log.read_case(case_id)
    scheduled = next(h for h in history if h.type == "MeetingScheduled")
    assert scheduled.payload.starts_at.astimezone(LONDON).hour == 10
    assert scheduled.shown.actor == "facilitator.one@example.org"  # stored sealed (docs/privacy.md)

    # Move it: the form starts from the arrangements on record.
    await until_page_has(browser, case, "Move the meeting")
    await browser.get(f"{case}/reschedule")
    assert 'value="10:00"' in browser.page and "Video call" in browser.page
    r = await browser.post(f"{case}/reschedule", {**date_fields("meeting_date", tomorrow), "meeting_time": "11:30",
                                                  "duration_minutes": "60", "mode": "virtual",
                                                  "venue": "Video call", "reason": "The school nurse can join later"})
    assert "The meeting is moved to" in browser.page, browser.page
    history = await wait_for(lambda: event_log.read_case(case_id), lambda h: "MeetingRescheduled" in types(h))
    moved = next(h for h in history if h.type == "MeetingRescheduled").payload
    assert moved.starts_at.astimezone(LONDON).hour == 11 and moved.reason == "The school nurse can join later"

    # The meeting is held a little later; it is recorded one stage per page.
    service_clock.offset = timedelta(minutes=2)
    held = datetime.now(LONDON) + timedelta(minutes=1)
    await until_page_has(browser, case, "Record the meeting")
    r = await browser.get(f"{case}/record")
    assert r.url.path == f"{case}/record/held"
    r = await browser.post(f"{case}/record/held", {"held_time": "9"})
    assert r.status_code == 400 and "Enter the date of the meeting" in browser.page and 'value="9"' in browser.page
    r = await browser.post(f"{case}/record/held", {**date_fields("held_date", held.date()),
                                                   "held_time": f"{held:%H:%M}"})
    assert r.url.path == f"{case}/record/attendees"
    r = await browser.post(f"{case}/record/attendees", {"action": "continue"})
    assert r.status_code == 400 and "Add at least one attendee" in browser.page
    for name, agency in (("Sam Example", "Children's Social Care"), ("DC Lee Example", "Police")):
        r = await browser.post(f"{case}/record/attendees", {"action": "add", "name": name, "agency": agency})
        assert r.url.path == f"{case}/record/attendees"
    r = await browser.post(f"{case}/record/attendees", {"action": "continue"})
    assert r.url.path == f"{case}/record/strengths"
    r = await browser.post(f"{case}/record/strengths", {"strengths": " "})
    assert r.status_code == 400 and "Enter what was said at this stage" in browser.page
    r = await browser.post(f"{case}/record/strengths", {"strengths": "Attendance has improved."})
    assert r.url.path == f"{case}/record/perspectives"
    r = await browser.post(f"{case}/record/perspectives", {"action": "add", "professional": "Sam Example",
                                                           "agency": "Children's Social Care", "feelings": "Stretched"})
    assert r.status_code == 400 and "Enter what they need" in browser.page and "Stretched" in browser.page
    r = await browser.post(f"{case}/record/perspectives", {
        "action": "continue", "professional": "Sam Example", "agency": "Children's Social Care",
        "feelings": "Stretched", "needs": "Evidence shared before the review"})
    assert r.url.path == f"{case}/record/impact"  # what was typed is added on Continue
    for slug, field, value in (("impact", "impact", "The plan review was delayed."),
                               ("ways-forward", "ways_forward", "Share chronologies."),
                               ("learning", "learning", "Share chronologies before meetings.")):
        r = await browser.post(f"{case}/record/{slug}", {field: value})
    assert r.url.path == f"{case}/record/outcome"
    r = await browser.post(f"{case}/record/outcome", {})
    assert r.status_code == 400 and "Select the outcome of the meeting" in browser.page
    r = await browser.post(f"{case}/record/outcome", {"outcome": "partly_resolved"})
    assert r.url.path == f"{case}/record/actions"
    action = {"action": "add", "description": "Share the chronology", "owner_name": "Sam Example",
              "owner_agency": "Children's Social Care", "owner_email": "not an email",
              **date_fields("due_date", held.date() + timedelta(days=7))}
    r = await browser.post(f"{case}/record/actions", action)
    assert r.status_code == 400 and "Enter an email address in the correct format" in browser.page
    assert "Share the chronology" in browser.page  # kept as typed
    r = await browser.post(f"{case}/record/actions", {**action, "owner_email": "sam.worker@council.example.org"})
    r = await browser.post(f"{case}/record/actions", {"action": "continue"})
    assert r.url.path == f"{case}/record/check"
    for shown in ("Sam Example, Children&#39;s Social Care; DC Lee Example, Police", "Attendance has improved.",
                  "Partly resolved", "Share the chronology"):
        assert shown in browser.page, shown
    r = await browser.post(f"{case}/record/check")
    assert r.url.path == case and "The meeting is recorded, with 1 action." in browser.page
    history = await wait_for(lambda: event_log.read_case(case_id), lambda h: "ActionRecorded" in types(h))
    record = next(h for h in history if h.type == "MeetingHeld").payload
    assert [a.name for a in record.attendees] == ["Sam Example", "DC Lee Example"]
    assert record.stages.perspectives[0].needs == "Evidence shared before the review"
    assert record.stages.learning == "Share chronologies before meetings."
    assert record.outcome.value == "partly_resolved"
    action_id = record.actions[0].action_id

    # Complete the action: a date in the future is refused on the page.
    page = await until_page_has(browser, case, f"/actions/{action_id}/complete")
    await browser.get(f"{case}/actions/{action_id}/complete")
    r = await browser.post(f"{case}/actions/{action_id}/complete",
                           date_fields("completed_on", held.date() + timedelta(days=3)))
    assert r.status_code == 400 and "must be today or in the past" in browser.page
    r = await browser.post(f"{case}/actions/{action_id}/complete", {"note": "Sent to everyone"})
    assert "is complete" in browser.page
    await wait_for(lambda: event_log.read_case(case_id), lambda h: "ActionCompleted" in types(h))

    # Partly resolved, every action done: the network agrees to close.
    await until_page_has(browser, case, "Close the case by agreement")
    await browser.get(f"{case}/close")
    r = await browser.post(f"{case}/close", {"note": ""})
    assert r.status_code == 400 and "Enter what the network agreed" in browser.page
    r = await browser.post(f"{case}/close", {"note": "Nothing more is needed."})
    assert "closed by agreement" in browser.page
    history = await event_log.read_case(case_id)
    assert history[-1].type == "CaseClosed" and history[-1].payload.reason == "agreed_by_network"
    assert page.status_code == 200


async def test_a_facilitator_cancels_a_meeting_and_raises_advances_and_resolves_an_escalation(
        browser, nc, subjects, event_log):
    case_id = await assigned_case(nc, subjects, event_log, "POL-CR-7002")
    case = f"/cases/{case_id}"
    await browser.sign_in("fac-1")
    await until_page_has(browser, case, "Arrange the meeting")
    await browser.get(f"{case}/schedule")
    soon = datetime.now(LONDON).date() + timedelta(days=2)
    await browser.post(f"{case}/schedule", {**date_fields("meeting_date", soon), "meeting_time": "09:00",
                                            "duration_minutes": "90", "mode": "in_person", "venue": "Room 2"})
    await until_page_has(browser, case, "Cancel the meeting")
    await browser.get(f"{case}/cancel")
    r = await browser.post(f"{case}/cancel", {"reason": ""})
    assert r.status_code == 400 and "Enter why the meeting is cancelled" in browser.page
    r = await browser.post(f"{case}/cancel", {"reason": "The family moved away"})
    assert "The meeting is cancelled" in browser.page
    await wait_for(lambda: event_log.read_case(case_id), lambda h: "MeetingCancelled" in types(h))

    await until_page_has(browser, case, "Raise an escalation")
    await browser.get(f"{case}/escalation/raise")
    yesterday = datetime.now(LONDON).date() - timedelta(days=1)
    r = await browser.post(f"{case}/escalation/raise", {"reason": "Drift", **date_fields("faster_deadline", yesterday)})
    # The service's refusal is shown at the field it names, and what was typed stays.
    assert r.status_code == 400 and "must be today" in browser.page and "Drift" in browser.page
    assert 'href="#faster_deadline"' in browser.page
    r = await browser.post(f"{case}/escalation/raise", {"reason": "Drift since the meeting was cancelled"})
    assert "The escalation is at stage 1" in browser.page
    await until_page_has(browser, case, "Move to the next stage")
    await browser.get(f"{case}/escalation/advance")
    r = await browser.post(f"{case}/escalation/advance", {"reason": "No agreement between managers"})
    assert "The escalation is at stage 2" in browser.page
    await until_page_has(browser, case, "Resolve the escalation")
    await browser.get(f"{case}/escalation/resolve")
    r = await browser.post(f"{case}/escalation/resolve", {"resolution": ""})
    assert r.status_code == 400 and "Enter how the escalation was resolved" in browser.page
    r = await browser.post(f"{case}/escalation/resolve", {"resolution": "Heads of service agreed the plan"})
    assert "resolved and the case is closed" in browser.page
    history = await wait_for(lambda: event_log.read_case(case_id), lambda h: "CaseClosed" in types(h))
    assert types(history)[-3:] == ["EscalationStageAdvanced", "EscalationResolved", "CaseClosed"]


async def test_only_facilitators_use_the_facilitator_pages(browser, nc, subjects, event_log):
    case_id = await assigned_case(nc, subjects, event_log, "POL-CR-7003")
    for user in ("lee", "morgan"):
        await browser.sign_in(user)
        for path in ("schedule", "record", "record/held", "cancel", "escalation/raise", "close"):
            assert (await browser.get(f"/cases/{case_id}/{path}")).status_code == 403, (user, path)
