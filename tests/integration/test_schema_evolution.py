"""Schema evolution end to end, on a real nats-server: v1 events in the log, a v2 model in the code.

The story an operator lives through. Re-think v1 wrote ``ActionCompleted`` with the moment
the action was done (``completed_at``, a date-time). v2 reads ``completed_on`` (a date) and
ships an upcaster for the step. The test runs the real services up to a held meeting, stops
them, writes the completions exactly as the v1 model serialised them (through the real append
path, chained), then "deploys v2": the current model at ``schema_version = 2`` with its
upcaster registered. The restarted services read the v1 events, the case closes, and:
history shows the upcast content, the live and rebuilt projections hold the upcast dates, and
``audit verify`` passes, because the chain covers the stored v1 bytes, which never change.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import ClassVar

import pytest
from sqlalchemy import select

from rethink.escalation.app import build as escalation
from rethink.intake.app import build as intake
from rethink.meeting.app import build as meeting
from rethink.scheduling.app import build as scheduling
from rethink.shared import events as catalogue
from rethink.shared import upcasting
from rethink.shared.cli.client import Client
from rethink.shared.cli.demo import _tomorrow_at, meeting_record, request
from rethink.shared.envelope import InvalidEvent, digest
from rethink.shared.events import Event
from rethink.shared.rebuild import projection_store
from rethink.shared.settings import SERVICES
from tests.integration.test_audit_history import rethink
from tests.support import ask, seed_case, wait_for

pytestmark = pytest.mark.nats

OWNER = {"name": "Sam Example", "agency": "Children's Social Care", "email": "sam.worker@council.example.org"}


class ActionCompletedV1(Event):
    """ActionCompleted as Re-think v1 wrote it: when the action was done, as a date-time."""

    type: ClassVar[str] = "ActionCompleted"
    schema_version: ClassVar[int] = 1
    action_id: str
    completed_at: datetime
    note: str | None = None


def completed_at_to_completed_on(data: dict) -> dict:
    """v1 -> v2: the day the action was done, in the offset it was recorded with."""
    data["completed_on"] = datetime.fromisoformat(data.pop("completed_at")).date().isoformat()
    return data


def deploy_v2(monkeypatch, with_upcaster: bool = True) -> None:
    """Today's ActionCompleted model becomes v2 (``completed_on``), as the code base would declare it."""
    monkeypatch.setattr(catalogue.ActionCompleted, "schema_version", 2)
    if with_upcaster:
        monkeypatch.setitem(upcasting.UPCASTERS, ("ActionCompleted", 1), completed_at_to_completed_on)


async def _caught_up(nc, subjects, js, stream, names=SERVICES) -> bool:
    last = (await js.stream_info(stream)).state.last_seq
    pings = [await ask(nc, subjects.query(n, "ping"), {}) for n in names]
    return all(p["last_applied_seq"] == last for p in pings)


def _rows(store):
    with store.engine.connect() as conn:
        return {name: sorted(map(tuple, conn.execute(select(table)).all()), key=repr)
                for name, table in sorted(store.metadata.tables.items())}


async def test_v1_events_read_by_the_v2_model_keep_history_projections_and_verify_working(
        run_services, settings, nc, subjects, event_log, monkeypatch, tmp_path):
    js = nc.jetstream()
    # --- v1 era: the real services take a case to a resolved meeting with two actions.
    running = await run_services(intake, scheduling, meeting, escalation)
    today = date.today()
    async with Client(settings) as client:
        receipt = await client.agency_command("northside-school", "submit", request(
            "CSC-2026-0777", "disagreement", "School and social care disagree about the plan."))
        case_id = receipt["case_id"]
        await wait_for(lambda: client.history(case_id), lambda h: any(r.type == "FacilitatorAssigned" for r in h),
                       what="facilitator assigned")
        await client.command("scheduling", "schedule", {"case_id": case_id, "starts_at": _tomorrow_at(10),
                                                        "mode": "virtual", "venue": "https://meet.example.org/r"})
        held = await client.command("meeting", "record", {"case_id": case_id, **meeting_record("resolved", [
            ("Share the chronology", OWNER, today + timedelta(days=5)),
            ("Book a joint visit", OWNER, today + timedelta(days=9))])})
        await wait_for(lambda: client.history(case_id),
                       lambda h: sum(r.type == "ActionRecorded" for r in h) == 2, what="actions recorded")
    await wait_for(lambda: _caught_up(nc, subjects, js, settings.stream), what="projections caught up")
    for svc in running:
        await svc.stop()

    # The v1 meeting service completed both actions: the v1 model's bytes, chained, as appended then.
    done_at = datetime.now(UTC).replace(microsecond=0)
    v1_events = await seed_case(event_log, case_id, [
        ActionCompletedV1(action_id=a, completed_at=done_at, note="done") for a in held["action_ids"]],
        producer="meeting", actor="owner")
    last = (await js.stream_info(settings.stream)).state.last_seq  # nothing else is writing now
    stored = [json.loads((await js.get_msg(settings.stream, seq)).data) for seq in (last - 1, last)]
    assert [(s["schema_version"], sorted(s["data"])) for s in stored] == [(1, ["action_id", "completed_at", "note"])] * 2

    # --- v2 is deployed. Without its upcaster the v1 events cannot be read, and say why.
    deploy_v2(monkeypatch, with_upcaster=False)
    with pytest.raises(InvalidEvent, match="no upcaster for ActionCompleted v1 -> v2"):
        await event_log.read_case(case_id)
    deploy_v2(monkeypatch)

    # The restarted services read the v1 completions: the meeting projection records them and
    # escalation closes the case (a v2-era event, chained onto the stored v1 bytes).
    running = await run_services(intake, scheduling, meeting, escalation)
    history = await wait_for(lambda: event_log.read_case(case_id), lambda h: h[-1].type == "CaseClosed",
                             what="the case to close on the v1 completions")
    await wait_for(lambda: _caught_up(nc, subjects, js, settings.stream), what="projections caught up")
    v1_read = [r for r in history if r.envelope.event_id in {e.event_id for e in v1_events}]
    assert [(r.envelope.schema_version, r.payload.completed_on) for r in v1_read] == [(1, done_at.date())] * 2
    assert history[-1].envelope.prev_hash == v1_read[-1].digest == digest(
        (await js.get_msg(settings.stream, v1_read[-1].seq)).data)

    view = (await ask(nc, subjects.query("meeting", "case"), {"case_id": case_id}))["result"]
    assert [(a["status"], a["completed_on"]) for a in view["actions"]] == [("completed", done_at.date().isoformat())] * 2
    assert view["closed"] is True
    busy = await rethink(monkeypatch, settings, "projections", "rebuild", "meeting")
    assert busy.exit_code == 1 and "the meeting service is running: stop it first" in busy.stderr
    for svc in running:
        await svc.stop()

    # History: the upcast content, and the version it was written at.
    result = await rethink(monkeypatch, settings, "audit", "history", case_id, "--format", "json")
    assert result.exit_code == 0, result.output
    rows = [r for r in json.loads(result.stdout) if r["type"] == "ActionCompleted"]
    assert [(r["schema_version"], r["data"]["completed_on"], r["stored_data"]["completed_at"]) for r in rows] == [
        (1, done_at.date().isoformat(), done_at.isoformat().replace("+00:00", "Z"))] * 2
    assert all(f"completed on {done_at.date()}" in r["summary"] for r in rows)
    sheet = await rethink(monkeypatch, settings, "audit", "history", case_id, "--format", "csv")
    assert sheet.exit_code == 0 and sheet.stdout.count(f"completed on {done_at.date()}") == 2

    # Projections: `rethink projections rebuild` replays v1 and v2 events into a projection
    # equal to the live one, for every service.
    for service in SERVICES:
        target = f"sqlite:///{tmp_path / (service + '-rebuilt.db')}"
        rebuilt = await rethink(monkeypatch, settings, "projections", "rebuild", service, "--into", target)
        assert rebuilt.exit_code == 0 and "unreadable 0" in rebuilt.stdout, rebuilt.output
        assert _rows(projection_store(service, target)) == _rows(projection_store(service, settings.db_url(service)))
    live = _rows(projection_store("meeting", settings.db_url("meeting")))
    swapped = await rethink(monkeypatch, settings, "projections", "rebuild", "meeting")  # in place: built beside, swapped
    assert swapped.exit_code == 0 and "swapped in" in swapped.stdout, swapped.output
    assert _rows(projection_store("meeting", settings.db_url("meeting"))) == live

    # Verify: the chain covers the stored bytes, which upcasting never touches.
    verified = await rethink(monkeypatch, settings, "audit", "verify", case_id)
    assert verified.exit_code == 0 and verified.stdout.strip() == f"{case_id}: intact ({len(history)} events)"

