"""The partnership manager's reports: figures folded from the log for a chosen period, with charts and CSVs."""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from rethink.console import reports
from rethink.console.gateway import Gateway
from rethink.shared.cli.demo import meeting_record
from tests.support import ask, request_payload, wait_for

pytestmark = pytest.mark.nats
LONDON = ZoneInfo("Europe/London")


def section(page: str, slug: str) -> str:
    return re.search(rf'<section id="{slug}"(.*?)</section>', page, re.S).group(1)


def cells(fragment: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", fragment, re.S)]


async def test_the_reports_count_requests_meetings_outcomes_actions_escalations_and_learning(
        browser, nc, subjects, event_log, service_clock, settings):
    async def command(service: str, name: str, payload: dict) -> dict:
        reply = await ask(nc, subjects.command(service, name), payload)
        assert reply["status"] == "accepted", reply
        return reply

    async def submit(agency: str, reference: str, reason: str) -> str:
        reply = await ask(nc, subjects.intake(agency, "submit"), request_payload(case_reference=reference, reason=reason))
        assert reply["status"] == "accepted", reply
        await wait_for(lambda: event_log.read_case(reply["case_id"]),
                       lambda h: any(r.type == "FacilitatorAssigned" for r in h), what="assigned")
        return reply["case_id"]

    held_case = await submit("police", "POL-1", "disagreement")
    await submit("police", "POL-2", "stuckness")
    escalated = await submit("northside-school", "NS-1", "both")
    starts = datetime.now(LONDON) + timedelta(days=1)
    await command("scheduling", "schedule", {"case_id": held_case, "starts_at": starts.isoformat(),
                                             "mode": "virtual", "venue": "Video call"})
    service_clock.offset = timedelta(minutes=1)
    owner = {"name": "Sam Example", "agency": "Children's Social Care", "email": "sam.worker@council.example.org"}
    record = meeting_record("partly_resolved", [("Share the chronology", owner, date.today() + timedelta(days=3)),
                                                ("Book the review", owner, date.today() + timedelta(days=5))])
    record["held_at"] = (datetime.now(LONDON) + timedelta(seconds=30)).isoformat()
    reply = await command("meeting", "record", {"case_id": held_case, **record})
    await wait_for(lambda: event_log.read_case(held_case),
                   lambda h: sum(r.type == "ActionRecorded" for r in h) == 2, what="actions recorded")
    await command("meeting", "complete_action", {"case_id": held_case, "action_id": reply["action_ids"][0]})
    await command("escalation", "raise", {"case_id": escalated, "reason": "Drift"})
    await command("escalation", "advance", {"case_id": escalated, "reason": "Still stuck"})

    await browser.sign_in("morgan")
    # The actions fall due next week, so the period runs on past today.
    start, end = date.today() - timedelta(days=7), date.today() + timedelta(days=10)
    query = (f"from-day={start.day}&from-month={start.month}&from-year={start.year}"
             f"&to-day={end.day}&to-month={end.month}&to-year={end.year}")
    page = (await wait_for(lambda: browser.get(f"/reports?{query}"), lambda r: "2: " in r.text,
                           what="the escalation in the report")).text
    assert "Figures for" in page
    by_agency = cells(section(page, "by-agency"))
    assert by_agency[by_agency.index("police"):by_agency.index("police") + 5] == ["police", "2", "1", "1", "0"]
    assert ["All agencies", "3", "1", "1", "1"] == by_agency[-5:]
    assert "<svg" in section(page, "by-agency") and 'role="img"' in section(page, "by-agency")
    to_meeting = cells(section(page, "to-meeting"))
    assert to_meeting[to_meeting.index("0 to 5") + 1] == "1"
    outcomes = cells(section(page, "outcomes"))
    assert outcomes[outcomes.index("Partly resolved") + 1] == "1" and outcomes[outcomes.index("Resolved") + 1] == "0"
    actions = cells(section(page, "actions"))
    assert actions[actions.index("Completed on time") + 1] == "1"
    assert actions[actions.index("Not completed, not yet due") + 1] == "1"
    stages = cells(section(page, "escalations"))
    assert stages[stages.index(next(c for c in stages if c.startswith("1: "))) + 1] == "1"
    assert any(c.startswith("2: ") for c in stages)
    assert "No word recurs across meetings in this period yet." in section(page, "learning")  # one meeting so far

    # Each table downloads as CSV, with the same figures.
    link = re.search(r'href="(/reports/by-agency\.csv\?[^"]+)"', page).group(1).replace("&amp;", "&")
    r = await browser.client.get(link)
    assert r.headers["content-type"].startswith("text/csv") and "attachment" in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["Agency", "Total", "Disagreement", "Stuckness", "Both"] and ["police", "2", "1", "1", "0"] in rows

    # A period that ended before these cases counts none of them.
    r = await browser.get("/reports?from-day=1&from-month=1&from-year=2020&to-day=31&to-month=12&to-year=2020")
    assert r.status_code == 200 and "police" not in section(r.text, "by-agency")

    # The facts are read with only the learning opened (no key fetched for the rest): the same
    # figures as every event of every case read whole, personal fields opened.
    gateway = Gateway(settings)
    await gateway.connect()
    try:
        facts = await gateway.report_facts()
        whole = sorted([r for case_id in facts for r in await event_log.read_case(case_id)], key=lambda r: r.seq)
    finally:
        await gateway.close()
    assert {r.type for r in whole} >= {"RequestSubmitted", "MeetingHeld", "ActionCompleted", "EscalationStageAdvanced"}
    def seen(cases: dict) -> dict:
        return {case_id: (f.requested, f.meetings, f.actions.lines(end), f.stages.lines(end))
                for case_id, f in cases.items()}

    assert seen(facts) == seen(reports.fold({}, whole))
    assert any(m.words for f in facts.values() for m in f.meetings)  # the learning's words, opened


async def test_a_wrong_period_gets_the_error_summary_and_keeps_what_was_typed(browser):
    await browser.sign_in("morgan")
    r = await browser.get("/reports?from-day=31&from-month=2&from-year=2026&to-day=1&to-month=1&to-year=")
    assert r.status_code == 400 and "There is a problem" in r.text
    assert "The first day of the period must be a real date" in r.text
    assert "The last day of the period must include a year" in r.text
    assert 'value="31"' in r.text and 'href="#from"' in r.text


async def test_only_partnership_managers_see_the_reports(browser):
    for user in ("fac-1", "lee", "ash"):
        await browser.sign_in(user)
        assert (await browser.get("/reports")).status_code == 403, user
        assert (await browser.get("/reports/outcomes.csv")).status_code == 403, user


def test_working_days_skip_weekends_and_bank_holidays():
    from rethink.console.reports import working_days_between
    from rethink.shared.workdays import england_and_wales

    holidays = england_and_wales()
    assert working_days_between(date(2026, 5, 1), date(2026, 5, 4), holidays) == 0  # Fri -> bank holiday Mon
    assert working_days_between(date(2026, 5, 1), date(2026, 5, 5), holidays) == 1
    assert working_days_between(date(2026, 5, 5), date(2026, 5, 5), holidays) == 0


def test_learning_themes_count_each_word_once_per_meeting_and_leave_out_filler():
    from rethink.console.reports import CaseFacts, HeldMeeting, Period, learning_themes, learning_words

    def held(text: str) -> CaseFacts:
        return CaseFacts(meetings=[HeldMeeting(date(2026, 3, 2), "resolved",
                                               learning_words(text))])

    cases = [held("Share chronologies. Chronologies help."), held("Share the chronologies early"),
             held("Meet sooner")]
    table = learning_themes(cases, Period(date(2026, 3, 1), date(2026, 3, 31)))
    assert table.rows == [["chronologies", 2], ["share", 2]]


async def test_a_read_of_the_log_cut_short_is_said_and_the_next_reads_on_with_nothing_lost_or_twice(
        console_app, settings, nc, subjects, event_log, monkeypatch):
    from rethink.console import gateway as gateway_module
    from rethink.console.gateway import Unavailable
    from rethink.shared import rebuild

    case_ids = []
    for n, agency in enumerate(("police", "police", "northside-school", "police")):
        reply = await ask(nc, subjects.intake(agency, "submit"), request_payload(case_reference=f"CUT-{n}"))
        case_ids.append(reply["case_id"])
    for case_id in case_ids:
        await wait_for(lambda c=case_id: event_log.read_case(c),
                       lambda h: any(r.type == "FacilitatorAssigned" for r in h), what="assigned")

    def seen(facts) -> dict:
        return {c: (f.requested, f.meetings, f.actions.lines(date.today()), f.stages.lines(date.today()))
                for c, f in facts.items()}

    real_fold = reports.fold

    async def read(cut_after: int | None) -> tuple[dict, list[int]]:
        gateway = Gateway(settings)
        await gateway.connect()
        folded: list[int] = []  # each event's place in the log, as it is folded

        def fold(cases, events):
            events = list(events)
            folded.extend(r.seq for r in events)
            return real_fold(cases, events)

        monkeypatch.setattr(reports, "fold", fold)
        try:
            if cut_after is None:
                return seen(await gateway.report_facts()), folded
            real, calls = rebuild.Batches.fetch, []

            async def fetch(self, batch, timeout):
                calls.append(batch)
                if len(calls) == cut_after:
                    raise rebuild.Interrupted("a message went missing")
                return await real(self, batch, timeout)

            monkeypatch.setattr(gateway_module, "BATCH", 3)  # a few events a request: several requests
            monkeypatch.setattr(rebuild.Batches, "fetch", fetch)
            with pytest.raises(Unavailable, match="cut short"):
                await gateway.report_facts()
            monkeypatch.setattr(rebuild.Batches, "fetch", real)
            return seen(await gateway.report_facts()), folded
        finally:
            await gateway.close()

    whole, every = await read(None)
    assert set(case_ids) <= set(whole) and all(whole[c][0] for c in case_ids)
    assert every == sorted(set(every)) and len(every) >= len(case_ids)
    assert await read(cut_after=2) == (whole, every)  # nothing lost, nothing twice, in order
    assert await read(cut_after=1) == (whole, every)


async def test_the_console_reads_the_log_for_its_reports_when_it_starts(console_app, settings, nc, subjects,
                                                                        event_log, accounts, monkeypatch):
    from rethink.console.app import build_app

    case_ids = []
    for n in range(3):
        reply = await ask(nc, subjects.intake("police", "submit"), request_payload(case_reference=f"AHEAD-{n}"))
        case_ids.append(reply["case_id"])
    for case_id in case_ids:
        await wait_for(lambda c=case_id: event_log.read_case(c),
                       lambda h: any(r.type == "FacilitatorAssigned" for r in h), what="assigned")
    last = (await nc.jetstream().stream_info(settings.stream)).state.last_seq

    async def read_to(gateway: Gateway) -> int:
        return gateway.reports_read_to

    folded: list[int] = []
    real_fold = reports.fold

    def fold(cases, events):
        events = list(events)
        folded.extend(r.seq for r in events)
        return real_fold(cases, events)

    app = build_app(settings, accounts=accounts)  # a console started now, with that log behind it
    async with app.router.lifespan_context(app):
        gateway = app.state.gateway
        await wait_for(lambda: read_to(gateway), lambda n: n >= last, what="the log read at start, unasked")
        monkeypatch.setattr(reports, "fold", fold)
        facts = await gateway.report_facts()  # the first report
    assert set(case_ids) <= set(facts) and all(facts[c].requested for c in case_ids)
    assert all(seq > last for seq in folded)  # it waited for nothing read before it asked

    quiet = build_app(settings.model_copy(update={"console_read_log_at_start": False}), accounts=accounts)
    async with quiet.router.lifespan_context(quiet):
        assert quiet.state.gateway.reports_read_to == 0
        await quiet.state.gateway.report_facts()
        assert quiet.state.gateway.reports_read_to >= last  # read when first asked, as before
