"""`rethink demo`: three realistic cases through a fresh embedded system, then their chronologies.

Runs its own nats-server on a free port with a fresh state folder, so it never disturbs a
system started with `rethink up`. All people are fictional, all addresses example.org.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console

from rethink.shared.audit import verify_chain
from rethink.shared.envelope import Recorded
from rethink.shared.natsserver import free_port
from rethink.shared.settings import Settings

from . import render
from .client import Client, CliError
from .supervisor import console_url, running_system, watch
from .views import case_state

LONDON = ZoneInfo("Europe/London")
YES = {"answer": True}


def _person(name: str, agency: str, email: str) -> dict[str, str]:
    return {"name": name, "agency": agency, "email": email}


def request(case_reference: str, reason: str, description: str, hips_considered: bool = True) -> dict[str, Any]:
    return {
        "immediate_risk": False,
        "case_reference": case_reference,
        "requester": {**_person("Priya Example", "Northside School Trust", "dsl@northside-school.example.org"),
                      "role": "Designated safeguarding lead"},
        "agencies": ["Northside School Trust", "Children's Social Care", "Community Health", "Police"],
        "reason": reason,
        "description": description,
        "invitees": [
            _person("Sam Example", "Children's Social Care", "sam.worker@council.example.org"),
            _person("Jo Example", "Community Health", "health.visitor@nhs-trust.example.org"),
            _person("DC Lee Example", "Police", "safeguarding.unit@police.example.org"),
        ],
        "checks": {
            "raised_with_network": YES,
            "conversation_had": {"answer": True, "note": "Discussed at the core group on 3 November."},
            "hips_policy_considered": {"answer": hips_considered,
                                       **({} if hips_considered else {"note": "Not yet read the policy."})},
        },
    }


def meeting_record(outcome: str, actions: list[tuple[str, dict[str, str], date]]) -> dict[str, Any]:
    return {
        "held_at": datetime.now(LONDON).isoformat(),
        "attendees": [
            {"name": "Priya Example", "agency": "Northside School Trust", "role": "DSL"},
            {"name": "Sam Example", "agency": "Children's Social Care", "role": "Social worker"},
            {"name": "Jo Example", "agency": "Community Health", "role": "Health visitor"},
        ],
        "stages": {
            "strengths": "Attendance has improved this term; the family engage well with the health visitor.",
            "perspectives": [
                {"professional": "Priya Example", "agency": "Northside School Trust",
                 "feelings": "Worried and unheard", "needs": "To know the plan addresses neglect at home"},
                {"professional": "Sam Example", "agency": "Children's Social Care",
                 "feelings": "Stretched", "needs": "Clear evidence shared before the next review"},
            ],
            "impact": "The disagreement has delayed the review of the plan by six weeks.",
            "ways_forward": "Share chronologies; agree one lead professional; review at the next core group.",
            "learning": "Disagreement is resolved faster when chronologies are shared before meetings.",
        },
        "outcome": outcome,
        "actions": [{"description": d, "owner": o, "due_date": due.isoformat()} for d, o, due in actions],
    }


async def _history_until(client: Client, case_id: str, done: Callable[[list[Recorded]], bool],
                         what: str, timeout: float = 30.0) -> list[Recorded]:
    deadline = time.monotonic() + timeout
    while True:
        history = await client.history(case_id)
        if done(history):
            return history
        if time.monotonic() > deadline:
            raise CliError(f"demo: {case_id} did not reach '{what}' within {timeout}s")
        await asyncio.sleep(0.1)


def has(event_type: str, count: int = 1) -> Callable[[list[Recorded]], bool]:
    return lambda h: sum(r.type == event_type for r in h) >= count


def _tomorrow_at(hour: int) -> str:
    day = datetime.now(LONDON).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, hour, 0, tzinfo=LONDON).isoformat()


async def drive(client: Client, say: Callable[[str], None]) -> list[str]:
    """The three cases. Returns their case ids in order."""
    today = datetime.now(LONDON).date()
    owner_csc = _person("Sam Example", "Children's Social Care", "sam.worker@council.example.org")
    owner_health = _person("Jo Example", "Community Health", "health.visitor@nhs-trust.example.org")

    # 1. Resolved at the meeting; both actions completed; the case closes.
    a = await client.agency_command("northside-school", "submit", request(
        "CSC-2026-0142", "disagreement",
        "School and children's social care disagree whether the plan addresses neglect at home."))
    say(f"case 1 {a['case_id']}: request accepted, checks {a['checks']}")
    await _history_until(client, a["case_id"], has("FacilitatorAssigned"), "facilitator assigned")
    await client.command("scheduling", "schedule", {"case_id": a["case_id"], "starts_at": _tomorrow_at(10),
                                                   "duration_minutes": 90, "mode": "in_person",
                                                   "venue": "Room 2, Civic Offices (example)", "actor": "facilitator"})
    rec = await client.command("meeting", "record", {"case_id": a["case_id"], "actor": "facilitator", **meeting_record(
        "resolved", [("Share the school's attendance chronology with social care", owner_csc, today + timedelta(days=5)),
                     ("Book a joint home visit", owner_health, today + timedelta(days=10))])})
    await _history_until(client, a["case_id"], has("ActionRecorded", 2), "actions recorded")
    for action_id in rec["action_ids"]:
        await client.command("meeting", "complete_action", {"case_id": a["case_id"], "action_id": action_id,
                                                            "actor": "owner"})
    await _history_until(client, a["case_id"], has("CaseClosed"), "case closed")
    say(f"case 1 {a['case_id']}: resolved at the meeting, actions complete, closed")

    # 2. Waiting on checks: the requester is guided back to the lowest level first.
    b = await client.agency_command("community-health", "submit", request(
        "NHS-HV-7781", "stuckness", "The plan has drifted for three months with no review.", hips_considered=False))
    say(f"case 2 {b['case_id']}: accepted, waiting on checks {b['missing_checks']}: {b['next_steps']}")

    # 3. Unresolved meeting and an overdue action: escalated through two stages, then resolved.
    c = await client.agency_command("police", "submit", request(
        "POL-CR-55120", "both", "Police and social care disagree on the threshold for a strategy discussion."))
    await _history_until(client, c["case_id"], has("FacilitatorAssigned"), "facilitator assigned")
    await client.command("scheduling", "schedule", {"case_id": c["case_id"], "starts_at": _tomorrow_at(14),
                                                   "duration_minutes": 60, "mode": "virtual",
                                                   "venue": "https://meet.example.org/rethink", "actor": "facilitator"})
    due = today + timedelta(days=2)
    await client.command("meeting", "record", {"case_id": c["case_id"], "actor": "facilitator", **meeting_record(
        "unresolved", [("Convene a strategy discussion", owner_csc, due)])})
    await _history_until(client, c["case_id"], has("EscalationRaised"), "escalation raised")
    await _history_until(client, c["case_id"], has("ActionRecorded"), "action recorded")
    # The overdue check normally runs on the meeting service's clock; here it is run as at
    # the day after the due date, as a partnership would in a drill.
    await client.command("meeting", "check_overdue", {"as_of": (due + timedelta(days=1)).isoformat(),
                                                      "actor": "overdue-check drill"})
    await _history_until(client, c["case_id"], has("ActionOverdue"), "action overdue")
    await client.command("escalation", "advance", {"case_id": c["case_id"], "actor": "csc-team-manager",
                                                   "reason": "Stage 1 deadline passed and the action is overdue."})
    await client.command("escalation", "resolve", {"case_id": c["case_id"], "actor": "police-di",
                                                   "resolution": "Managers agreed a strategy discussion this week."})
    await _history_until(client, c["case_id"], has("CaseClosed"), "case closed")
    say(f"case 3 {c['case_id']}: unresolved meeting, overdue action, escalated to stage 2, resolved, closed")
    return [a["case_id"], b["case_id"], c["case_id"]]


def console_lines(settings: Settings, passwords: dict[str, str] | None = None) -> list[str]:
    """Where the web console is, and who can sign in to it (with the demo's passwords, when given)."""
    from rethink.console.accounts import Accounts
    from rethink.console.users import ROLE_NAMES

    url = console_url(settings)
    if url is None:
        return ["The web console is switched off (RETHINK_CONSOLE_PORT=0)."]
    lines = [f"Web console: {url}"]
    if settings.console_oidc_issuer:
        lines.append(f"  sign-in with OpenID Connect at {settings.console_oidc_issuer}")
    users = Accounts(settings.console_users_path).all()
    if not users:
        return [*lines, "  no local accounts yet: add one with `rethink users add NAME --role ROLE ...`"]
    lines.append("  sign in as" + (" (demo passwords, this run only):" if passwords else ":"))
    for u in users:
        where = f", {u.agency_name}" if u.agency_name else ""
        secret = f"  user {u.id}  password {passwords[u.id]}" if passwords and u.id in passwords else f"  user {u.id}"
        lines.append(f"  - {u.name}: {ROLE_NAMES[u.role].lower()}{where}{secret}")
    return lines


def demo_accounts(settings: Settings) -> dict[str, str]:
    """The demo people as local accounts, each with a fresh random password (printed, never stored plain)."""
    from rethink.console.accounts import Accounts
    from rethink.console.users import DEMO_USERS

    accounts = Accounts(settings.console_users_path)
    passwords = {u.id: secrets.token_urlsafe(12) for u in DEMO_USERS}
    for u in DEMO_USERS:
        accounts.add(u, passwords[u.id], replace=True)
    return passwords


def run_demo(settings: Settings, console: Console, keep_running: bool = False) -> None:
    state = settings.state_dir / "demo"
    shutil.rmtree(state, ignore_errors=True)
    # Its own ports, so it never disturbs a system started with `rethink up`.
    demo_settings = settings.model_copy(update={
        "state_dir": state, "nats_url": None, "embedded_nats_port": free_port(),
        "console_port": free_port() if settings.console_port else 0})
    console.print(f"Starting a fresh system in {state} ...")
    passwords = demo_accounts(demo_settings) if demo_settings.console_port else {}
    with running_system(demo_settings) as procs:
        for line in console_lines(demo_settings, passwords):
            console.print(line, highlight=False, soft_wrap=True)
        async def go() -> None:
            async with Client(demo_settings) as client:
                case_ids = await drive(client, console.print)
                for case_id in case_ids:
                    console.print()
                    console.print(render.history_table(case_id, await client.history(case_id)))
                    state_now = await case_state(client, case_id)
                    console.print(f"[bold]Now:[/bold] {_one_line(state_now)}", highlight=False)
                    chain = verify_chain(case_id, await client.history(case_id))
                    console.print(f"[bold]Hash chain:[/bold] {chain.one_line()}", highlight=False)
                await _emails_sent(client)
        asyncio.run(go())
        if demo_settings.mail_adapter == "eml":
            console.print(f"\nInvitations written as .eml files in {demo_settings.mail_dir}")
        else:
            console.print(f"\nInvitations sent through {demo_settings.smtp_host} (`rethink notifications list`)")
        if keep_running:
            for line in console_lines(demo_settings, passwords):
                console.print(line, highlight=False, soft_wrap=True)
            console.print("The demo system stays up until Ctrl-C.")
            watch(procs, demo_settings, console.print)
    if not keep_running:
        console.print("Run `rethink demo --keep-running` to browse these cases in the web console, or "
                      "`rethink up` to start the system yourself; `rethink --help` lists every step.")


async def _emails_sent(client: Client, timeout: float = 15.0) -> None:
    """The outbox sends on its own schedule: wait (briefly) until nothing is waiting, before stopping."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        counts = (await client.query("scheduling", "notifications", {"limit": 1})).get("counts", {})
        if not counts.get("pending") and not counts.get("sending"):
            return
        await asyncio.sleep(0.2)


def _one_line(state: dict[str, Any]) -> str:
    intake = state.get("intake") or {}
    esc = state.get("escalation") or {}
    meeting = (state.get("meeting") or {}).get("meeting") or {}
    parts = [f"request {intake.get('status')}"]
    if meeting:
        parts.append(f"meeting {meeting.get('status')} ({meeting.get('outcome') or 'not yet held'})")
    if esc.get("escalation"):
        e = esc["escalation"]
        parts.append(f"escalation stage {e['stage']} {e['status']}")
    parts.append("closed" if esc.get("closed") else "open")
    return ", ".join(parts)
