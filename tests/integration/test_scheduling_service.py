from __future__ import annotations

import email
import uuid
from datetime import UTC, datetime, timedelta
from email import policy

import icalendar
import pytest

from rethink.intake.app import build as intake
from rethink.scheduling.app import build as scheduling
from tests.support import ask, request_payload, wait_for

pytestmark = pytest.mark.nats

# A fixed future slot (whole minutes, UTC) keeps overlaps easy to reason about.
SLOT = (datetime.now(UTC) + timedelta(days=14)).replace(hour=9, minute=0, second=0, microsecond=0)


async def ready_case(nc, subjects, event_log, **overrides) -> str:
    """Submit a complete request and wait until scheduling has assigned its facilitator."""
    reply = await ask(nc, subjects.intake("police", "submit"), request_payload(**overrides))
    assert reply["status"] == "accepted", reply
    case_id = reply["case_id"]
    await wait_for(lambda: event_log.read_case(case_id),
                   lambda h: any(r.type == "FacilitatorAssigned" for r in h), what="FacilitatorAssigned")
    return case_id


def schedule_payload(case_id: str, starts_at: datetime = SLOT, **extra) -> dict:
    return {"case_id": case_id, "command_id": str(uuid.uuid4()), "actor": "coordinator@pscp.example.org",
            "starts_at": starts_at.isoformat(), "duration_minutes": 90, "mode": "in_person",
            "venue": "Civic Offices, Meeting Room 2"} | extra


def eml_files(settings) -> list:
    return sorted(settings.mail_dir.glob("*.eml")) if settings.mail_dir.exists() else []


async def query_case(nc, subjects, case_id: str) -> dict:
    return await ask(nc, subjects.query("scheduling", "case"), {"case_id": case_id})


async def test_a_confirmed_case_gets_a_facilitator_and_its_meeting_invitations(run_services, nc, subjects,
                                                                              event_log, settings):
    await run_services(intake, scheduling)
    case_id = await ready_case(nc, subjects, event_log)

    command = schedule_payload(case_id)
    reply = await ask(nc, subjects.command("scheduling", "schedule"), command)
    resent = await ask(nc, subjects.command("scheduling", "schedule"), command)

    assert reply["status"] == "accepted", reply
    assert resent["duplicate"] is True and resent["meeting_id"] == reply["meeting_id"]
    assert resent["event_ids"] == reply["event_ids"]
    assert reply["events"] == ["MeetingScheduled"] and reply["meeting_id"].startswith("M-")
    history = await event_log.read_case(case_id)
    assert [r.type for r in history] == ["RequestSubmitted", "ChecksConfirmed", "FacilitatorAssigned",
                                         "MeetingScheduled"]
    meeting = history[-1].payload
    assert meeting.facilitator_id == "fac-1" and meeting.meeting_id == reply["meeting_id"]
    assert [str(p.email) for p in meeting.invitees] == [
        "dsl@school.example.org", "sw@council.example.org", "hv@health.example.org"]
    files = await wait_for(lambda: _async(eml_files(settings)), lambda f: len(f) == 3, what="three .eml files")
    assert {f.name for f in files} == {f"{history[-1].envelope.event_id}-{i:03d}.eml" for i in range(3)}
    messages = [email.message_from_bytes(f.read_bytes(), policy=policy.default) for f in files]
    assert {m["To"].addresses[0].addr_spec for m in messages} == {str(p.email) for p in meeting.invitees}
    assert all(m["From"].addresses[0].addr_spec == settings.partnership_email for m in messages)
    assert all("CSC-2026-0042" in m["Subject"] and "neglect" not in m.get_body(("plain",)).get_content()
               for m in messages)
    calendars = [icalendar.Calendar.from_ical(next(m.iter_attachments()).get_content()) for m in messages]
    assert {c["METHOD"] for c in calendars} == {"REQUEST"}
    assert len({str(c.walk("VEVENT")[0]["UID"]) for c in calendars}) == 1
    view = await wait_for(lambda: query_case(nc, subjects, case_id),
                          lambda v: (v.get("result") or {}).get("meeting") is not None, what="meeting in view")
    assert view["result"]["facilitator"]["id"] == "fac-1"
    assert view["result"]["meeting"]["status"] == "scheduled"
    assert view["result"]["meeting"]["meeting_id"] == reply["meeting_id"]


async def test_a_meeting_in_the_past_is_refused_and_nothing_is_written(run_services, nc, subjects, event_log,
                                                                       settings):
    await run_services(intake, scheduling)
    case_id = await ready_case(nc, subjects, event_log)
    before = await event_log.read_case(case_id)

    reply = await ask(nc, subjects.command("scheduling", "schedule"),
                      schedule_payload(case_id, datetime.now(UTC) - timedelta(hours=1)))

    assert reply["status"] == "rejected", reply
    assert reply["reasons"][0]["field"] == "starts_at" and "future" in reply["reasons"][0]["message"]
    assert await event_log.read_case(case_id) == before
    assert eml_files(settings) == []
    unknown = await ask(nc, subjects.command("scheduling", "schedule"), schedule_payload("RT-ZZZZZZZZZZ"))
    assert unknown["status"] == "not_found"


async def test_one_facilitator_cannot_be_double_booked_across_two_cases(run_services, nc, subjects, event_log,
                                                                        settings):
    settings.facilitators = settings.facilitators[:1]  # both cases go to the same facilitator
    await run_services(intake, scheduling)
    first = await ready_case(nc, subjects, event_log)
    second = await ready_case(nc, subjects, event_log, case_reference="CSC-2026-0043")
    booked = await ask(nc, subjects.command("scheduling", "schedule"), schedule_payload(first))
    assert booked["status"] == "accepted", booked
    await wait_for(lambda: ask(nc, subjects.query("scheduling", "meetings"), {"facilitator_id": "fac-1"}),
                   lambda v: len(v["result"]) == 1, what="first meeting projected")

    clash = await ask(nc, subjects.command("scheduling", "schedule"),
                      schedule_payload(second, SLOT + timedelta(minutes=30)))
    after = await ask(nc, subjects.command("scheduling", "schedule"),
                      schedule_payload(second, SLOT + timedelta(minutes=90)))

    assert clash["status"] == "rejected"
    assert clash["reasons"][0]["field"] == "starts_at" and booked["meeting_id"] in clash["reasons"][0]["message"]
    assert after["status"] == "accepted", after
    assert [r.type for r in await event_log.read_case(second)][-1] == "MeetingScheduled"


async def test_a_meeting_can_be_moved_and_then_called_off(run_services, nc, subjects, event_log, settings):
    await run_services(intake, scheduling)
    case_id = await ready_case(nc, subjects, event_log)
    scheduled = await ask(nc, subjects.command("scheduling", "schedule"), schedule_payload(case_id))
    assert scheduled["status"] == "accepted", scheduled

    moved = await ask(nc, subjects.command("scheduling", "reschedule"),
                      {"case_id": case_id, "starts_at": (SLOT + timedelta(days=1)).isoformat(),
                       "mode": "virtual", "venue": "https://meet.example.org/rethink-42", "reason": "room unavailable"})
    assert moved["status"] == "accepted", moved
    assert moved["events"] == ["MeetingRescheduled"] and moved["meeting_id"] == scheduled["meeting_id"]
    view = await wait_for(lambda: query_case(nc, subjects, case_id),
                          lambda v: ((v.get("result") or {}).get("meeting") or {}).get("status") == "rescheduled")
    assert view["result"]["meeting"]["mode"] == "virtual"
    assert view["result"]["meeting"]["duration_minutes"] == 90  # kept

    cancelled = await ask(nc, subjects.command("scheduling", "cancel"),
                          {"case_id": case_id, "reason": "Agencies reached agreement beforehand"})
    assert cancelled["status"] == "accepted" and cancelled["events"] == ["MeetingCancelled"], cancelled
    await wait_for(lambda: query_case(nc, subjects, case_id),
                   lambda v: v["result"]["meeting"]["status"] == "cancelled", what="cancelled in view")
    files = await wait_for(lambda: _async(eml_files(settings)), lambda f: len(f) == 9, what="3 x 3 .eml files")
    messages = [email.message_from_bytes(f.read_bytes(), policy=policy.default) for f in files]
    subjects_seen = sorted(m["Subject"].rsplit(" ", 1)[1] for m in messages)
    assert subjects_seen == ["cancelled"] * 3 + ["changed"] * 3 + ["invitation"] * 3
    # One calendar entry, updated then cancelled: same UID, SEQUENCE 0 -> 1 -> 2.
    events = {(c["METHOD"], int(c.walk("VEVENT")[0]["SEQUENCE"]), str(c.walk("VEVENT")[0]["UID"]))
              for c in (icalendar.Calendar.from_ical(next(m.iter_attachments()).get_content()) for m in messages)}
    [uid] = {u for _, _, u in events}
    assert events == {("REQUEST", 0, uid), ("REQUEST", 1, uid), ("CANCEL", 2, uid)}
    again = await ask(nc, subjects.command("scheduling", "cancel"), {"case_id": case_id, "reason": "twice"})
    assert again["status"] == "rejected" and "no scheduled meeting" in again["reasons"][0]["message"]
    active = await ask(nc, subjects.query("scheduling", "meetings"), {})
    assert active == {"status": "ok", "result": []}


async def test_malformed_json_is_rejected_and_the_service_keeps_answering(run_services, nc, subjects):
    await run_services(scheduling)

    bad = await ask(nc, subjects.command("scheduling", "schedule"), b"{not json")
    naive = await ask(nc, subjects.command("scheduling", "schedule"),
                      schedule_payload("RT-ZZZZZZZZZZ", starts_at=SLOT.replace(tzinfo=None)))
    nxt = await ask(nc, subjects.query("scheduling", "case"), {"case_id": "RT-ZZZZZZZZZZ"})

    assert bad["status"] == "rejected" and "malformed JSON" in bad["reasons"][0]["message"]
    assert naive["status"] == "rejected" and naive["reasons"][0]["field"] == "starts_at"
    assert "timezone offset" in naive["reasons"][0]["message"]
    assert nxt["status"] == "not_found" and nxt["reasons"][0]["field"] == "case_id"


async def _async(value):
    return value


async def test_the_facilitator_of_each_case_is_answered_and_a_bad_list_is_refused(run_services, nc, subjects,
                                                                                   event_log):
    await run_services(intake, scheduling)
    case_id = await ready_case(nc, subjects, event_log)
    holder = next(r.payload.facilitator_id for r in await event_log.read_case(case_id) if r.type == "FacilitatorAssigned")
    assigned = subjects.query("scheduling", "assigned")
    found = await wait_for(lambda: ask(nc, assigned, {"case_ids": [case_id, "RT-ZZZZZZZZZZ"]}),
                           lambda v: v.get("result"), what="the assignment projected")
    assert found == {"status": "ok", "result": {case_id: holder}}  # a case never recorded is left out

    too_many = await ask(nc, assigned, {"case_ids": [case_id] * 2001})
    hostile = await ask(nc, assigned, {"case_ids": [case_id, "RT-' OR 1=1 --"]})
    empty = await ask(nc, assigned, {"case_ids": []})
    extra = await ask(nc, assigned, {"case_ids": [case_id], "facilitator_id": holder})

    for reply in (too_many, hostile, empty, extra):
        assert reply["status"] == "rejected", reply
        assert "result" not in reply
    assert too_many["reasons"][0]["field"] == "case_ids" and "at most 2000" in too_many["reasons"][0]["message"]
    assert hostile["reasons"][0]["field"] == "case_ids.1" and "pattern" in hostile["reasons"][0]["message"]
    assert empty["reasons"][0]["field"] == "case_ids"
    assert extra["reasons"][0]["field"] == "facilitator_id"
    assert await ask(nc, assigned, {"case_ids": [case_id]}) == found  # still answering
