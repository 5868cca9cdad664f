"""The facilitator's work queue shows each kind of waiting work, read from the services' own queries."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from rethink.console.accounts import Accounts
from rethink.console.app import build_app
from rethink.console.gateway import Gateway
from rethink.console.users import Role, User
from rethink.shared.cli.demo import meeting_record
from tests.console.conftest import CHEAP, PASSWORD, Browser
from tests.support import ask, request_payload, wait_for

pytestmark = pytest.mark.nats
LONDON = ZoneInfo("Europe/London")
NO = {"answer": False}


def section(page: str, anchor: str) -> str:
    return re.search(rf'<div id="{anchor}">(.*?)</div>', page, re.S).group(1)


async def test_the_queue_shows_awaiting_ready_this_weeks_meetings_overdue_actions_and_close_deadlines(
        settings, run_services, nc, subjects, event_log, console_app, tmp_path, monkeypatch):
    async def submit(reference: str, **overrides) -> str:
        reply = await ask(nc, subjects.intake("police", "submit"),
                          request_payload(case_reference=reference, **overrides))
        assert reply["status"] == "accepted", reply
        return reply["case_id"]

    async def command(service: str, name: str, payload: dict) -> dict:
        reply = await ask(nc, subjects.command(service, name), payload)
        assert reply["status"] == "accepted", reply
        return reply

    async def assigned(case_id: str) -> None:
        await wait_for(lambda: event_log.read_case(case_id),
                       lambda h: any(r.type == "FacilitatorAssigned" for r in h), what="facilitator assigned")

    checks = request_payload()["checks"]
    awaiting = await submit("AWAIT-1", checks={**checks, "hips_policy_considered": NO})
    ready = await submit("READY-1")
    booked = await submit("BOOKED-1")
    escalated = await submit("ESCAL-1")
    for case_id in (ready, booked, escalated):
        await assigned(case_id)

    tomorrow = datetime.now(LONDON).date() + timedelta(days=1)
    ten = datetime.combine(tomorrow, time(10), tzinfo=LONDON)
    await command("scheduling", "schedule", {"case_id": booked, "starts_at": ten.isoformat(),
                                             "mode": "virtual", "venue": "Video call"})
    await command("scheduling", "schedule", {"case_id": escalated, "starts_at": (ten + timedelta(hours=4)).isoformat(),
                                             "mode": "in_person", "venue": "Room 2"})
    # Held straight away (a record may not be in the future), unresolved, with an action due today.
    owner = {"name": "Sam Example", "agency": "Children's Social Care", "email": "sam.worker@council.example.org"}
    record = meeting_record("unresolved", [("Convene a strategy discussion", owner, date.today())])
    record["held_at"] = datetime.now(LONDON).isoformat()
    await command("meeting", "record", {"case_id": escalated, **record})
    await wait_for(lambda: event_log.read_case(escalated),
                   lambda h: {"ActionRecorded", "EscalationRaised"} <= {r.type for r in h}, what="escalation")
    await command("meeting", "check_overdue", {"as_of": (date.today() + timedelta(days=1)).isoformat()})
    await wait_for(lambda: event_log.read_case(escalated),
                   lambda h: any(r.type == "ActionOverdue" for r in h), what="action overdue")

    owner = {case_id: next(r.payload.facilitator_id for r in await event_log.read_case(case_id)
                           if r.type == "FacilitatorAssigned") for case_id in (ready, booked, escalated)}
    assert set(owner.values()) == {"fac-1", "fac-2"}  # the least loaded takes each: both have some

    # The console's clock stands at the morning of the booked meeting, so "this week" holds it
    # whatever day the test runs on.
    accounts = Accounts(tmp_path / "users.json", hasher=CHEAP)
    for fac_id, name, mail in (("fac-1", "Facilitator One", "facilitator.one@example.org"),
                               ("fac-2", "Facilitator Two", "facilitator.two@example.org")):  # as configured
        accounts.add(User(fac_id, name, mail, Role.FACILITATOR, "Re-think facilitator"), PASSWORD)
    app = build_app(settings, now=lambda: ten - timedelta(hours=1), accounts=accounts)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        browser = Browser(client)
        await browser.sign_in("fac-1")
        page = (await wait_for(
            lambda: browser.get("/queue"),
            lambda r: all(c in r.text for c in (awaiting, ready, booked, escalated)) and "Video call" in r.text,
            what="every case in the queue")).text

        # Narrowed to one facilitator's cases without replaying the log (that grew with every case ever).
        async def no_replay(self):
            raise AssertionError("the work queue read the whole event log")

        monkeypatch.setattr(Gateway, "report_facts", no_replay)
        mine = {}
        for fac_id in ("fac-1", "fac-2"):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
                person = Browser(c)
                await person.sign_in(fac_id)
                mine[fac_id] = (await person.get("/queue?mine=1")).text

    assert "AWAIT-1" in section(page, "awaiting") and "hips_policy_considered" in section(page, "awaiting")
    assert "READY-1" in section(page, "ready")
    for other in ("AWAIT-1", "BOOKED-1", "ESCAL-1"):  # scheduled, held or waiting: none is ready
        assert other not in section(page, "ready")
    assert "BOOKED-1" in section(page, "week") and "ESCAL-1" not in section(page, "week")  # held is not to come
    assert ten.strftime("%A %-d %B, 10:00") in section(page, "week")
    assert escalated in section(page, "overdue") and "Convene a strategy discussion" in section(page, "overdue")
    assert escalated in section(page, "escalations") and "The practitioners involved" in section(page, "escalations")
    assert booked not in section(page, "escalations")

    shown = {(case_id, anchor) for case_id in (ready, booked, escalated)
             for anchor in ("ready", "week", "overdue", "escalations") if case_id in section(page, anchor)}
    assert {anchor for _, anchor in shown} == {"ready", "week", "overdue", "escalations"}
    for fac_id, narrowed in mine.items():
        assert "AWAIT-1" in section(narrowed, "awaiting")  # no facilitator yet: stays for everyone
        for case_id, anchor in shown:
            assert (case_id in section(narrowed, anchor)) == (owner[case_id] == fac_id), (fac_id, case_id, anchor)


async def test_a_facilitator_can_narrow_the_queue_to_the_cases_assigned_to_them(browser, nc, subjects, event_log):
    case_ids = []
    for reference in ("MINE-1", "MINE-2", "MINE-3"):
        reply = await ask(nc, subjects.intake("police", "submit"), request_payload(case_reference=reference))
        case_ids.append(reply["case_id"])
    owner = {}
    for case_id in case_ids:
        history = await wait_for(lambda c=case_id: event_log.read_case(c),
                                 lambda h: any(r.type == "FacilitatorAssigned" for r in h), what="assigned")
        owner[case_id] = next(r.payload.facilitator_id for r in history if r.type == "FacilitatorAssigned")
    assert set(owner.values()) == {"fac-1", "fac-2"}  # the least loaded takes each new case
    await browser.sign_in("fac-1")  # facilitator.one@example.org is the configured fac-1
    everyone = await wait_for(lambda: browser.get("/queue"), lambda r: all(c in r.text for c in case_ids),
                              what="every case in the queue")
    assert "Show only my cases" in everyone.text
    mine = (await browser.get("/queue?mine=1")).text
    for case_id, facilitator in owner.items():
        assert (case_id in section(mine, "ready")) == (facilitator == "fac-1"), (case_id, facilitator)
    assert "Show the whole partnership" in mine
