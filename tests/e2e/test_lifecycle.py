"""The four services as separate processes against one nats-server: a case from request to closure.

This runs what `rethink up` runs (the same supervisor code), so it also proves the services
need nothing but NATS between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import nats
import pytest

from rethink.shared.audit import verify_chain
from rethink.shared.cli.client import Client
from rethink.shared.cli.supervisor import running_system, service_env, spawn, wait_until_serving
from rethink.shared.settings import Settings
from tests.support import request_payload

pytestmark = [pytest.mark.nats, pytest.mark.e2e]


async def _until(probe, done, timeout: float = 30.0, what: str = "condition"):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if done(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {value!r}")
        await asyncio.sleep(0.1)


def _types(history):
    return [r.type for r in history]


def _record(outcome: str, due):
    return {
        "held_at": datetime.now(UTC).isoformat(),
        "attendees": [{"name": "Sam Teacher", "agency": "Northside School Trust"},
                      {"name": "Alex Social", "agency": "Children's Social Care"}],
        "stages": {"strengths": "Good attendance", "impact": "Plan drift", "ways_forward": "Share chronologies",
                   "learning": "Share early",
                   "perspectives": [{"professional": "Sam Teacher", "agency": "Northside School Trust",
                                     "feelings": "worried", "needs": "clarity"}]},
        "outcome": outcome,
        "actions": [{"description": "Share the chronology", "due_date": due.isoformat(),
                     "owner": {"name": "Alex Social", "agency": "Children's Social Care",
                               "email": "sw@council.example.org"}}],
    }


async def _lifecycle(settings: Settings, procs) -> None:
    async with Client(settings) as c:
        receipt = await c.agency_command("police", "submit", request_payload())
        case_id = receipt["case_id"]
        await _until(lambda: c.history(case_id), lambda h: "FacilitatorAssigned" in _types(h), what="assignment")

        starts = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
        await c.command("scheduling", "schedule", {"case_id": case_id, "starts_at": starts.isoformat(),
                                                   "mode": "in_person", "venue": "Room 1, example"})

        # A service killed outright and restarted resumes from its durable consumer and checkpoint.
        procs["meeting"].send_signal(signal.SIGKILL)
        procs["meeting"].wait(timeout=10)
        procs["meeting"] = spawn("meeting", settings, settings.state_dir / "logs")
        await wait_until_serving(settings)

        rec = await c.command("meeting", "record", {"case_id": case_id, **_record("unresolved", datetime.now(UTC).date())})
        await _until(lambda: c.history(case_id), lambda h: {"ActionRecorded", "EscalationRaised"} <= set(_types(h)),
                     what="actions and escalation")
        # The overdue check reads the meeting service's projection, which follows the log a moment later.
        await _until(lambda: c.query("meeting", "case", {"case_id": case_id}),
                     lambda r: r.get("status") == "ok" and r["result"]["actions"], what="actions in the projection")
        overdue = await c.command("meeting", "check_overdue",
                                  {"as_of": (datetime.now(UTC).date() + timedelta(days=1)).isoformat()})
        assert [o["case_id"] for o in overdue["overdue"]] == [case_id]
        await c.command("escalation", "advance", {"case_id": case_id, "reason": "deadline passed"})
        await c.command("meeting", "complete_action", {"case_id": case_id, "action_id": rec["action_ids"][0]})
        await c.command("escalation", "resolve", {"case_id": case_id, "resolution": "agreed a joint plan"})
        history = await _until(lambda: c.history(case_id), lambda h: "CaseClosed" in _types(h), what="closure")

        types = _types(history)
        # ActionRecorded and EscalationRaised both react to MeetingHeld, so their order may vary.
        assert types[:5] == ["RequestSubmitted", "ChecksConfirmed", "FacilitatorAssigned", "MeetingScheduled",
                             "MeetingHeld"]
        assert set(types[5:7]) == {"ActionRecorded", "EscalationRaised"}
        assert types[7:] == ["ActionOverdue", "EscalationStageAdvanced", "ActionCompleted", "EscalationResolved",
                             "CaseClosed"]
        assert [r.seq for r in history] == sorted(r.seq for r in history)
        assert {r.envelope.producer for r in history} == {"police", "intake", "scheduling", "meeting", "escalation"}
        # Every reaction points at what caused it, and the whole case shares the request's correlation id.
        by_id = {r.envelope.event_id: r for r in history}
        assert by_id[history[1].envelope.causation_id].type == "RequestSubmitted"

        assert verify_chain(case_id, history).intact
        last = history[-1].seq

        async def caught_up():
            return [await c.query(n, "ping", {}) for n in ("intake", "scheduling", "meeting", "escalation")]

        await _until(caught_up, lambda ps: all(p["last_applied_seq"] >= last for p in ps), what="projections")
        intake = (await c.query("intake", "case", {"case_id": case_id}))["result"]
        scheduling = (await c.query("scheduling", "case", {"case_id": case_id}))["result"]
        meeting = (await c.query("meeting", "case", {"case_id": case_id}))["result"]
        escalation = (await c.query("escalation", "case", {"case_id": case_id}))["result"]

    assert intake["status"] == "checks_confirmed" and intake["agency"] == "police"
    assert scheduling["facilitator"]["id"] in {"fac-1", "fac-2"}
    assert scheduling["meeting"]["status"] == "held"
    assert meeting["meeting"]["outcome"] == "unresolved"
    assert [(a["status"], a["overdue"]) for a in meeting["actions"]] == [("completed", True)]
    assert escalation["escalation"]["stage"] == 2 and escalation["escalation"]["status"] == "resolved"
    assert escalation["closed"] is True and escalation["closed_reason"] == "escalation_resolved"

    async def invitations():  # the outbox sends on its own schedule, a moment after the event
        return list(settings.mail_dir.glob("*.eml")) if settings.mail_dir.exists() else []

    await _until(invitations, lambda files: len(files) >= 3, what="three invitations")
    assert len(await invitations()) == 3  # requester + two invitees, one message each

    # An auditor's verification from the CLI, as a separate process.
    verify = subprocess.run([sys.executable, "-m", "rethink.shared.cli", "audit", "verify", "--all"],
                            env=service_env(settings), capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout.strip() == f"{case_id}: intact (12 events)"


def test_a_case_goes_from_request_to_closure_across_four_service_processes(settings: Settings) -> None:
    try:
        with running_system(settings) as procs:
            assert all(p.poll() is None for p in procs.values())
            asyncio.run(_lifecycle(settings, procs))
    finally:
        asyncio.run(_drop_stream(settings))


async def _drop_stream(settings: Settings) -> None:
    nc = await nats.connect(settings.resolved_nats_url())
    for name in (settings.stream, settings.dead_letter_stream, settings.receipt_stream, settings.inbound_stream):
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(name)
    await nc.close()
