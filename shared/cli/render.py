"""How the CLI shows things to people: rich tables, and a plain JSON form for scripts."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rethink.shared.envelope import Recorded
from rethink.shared.events import (
    ActionCompleted,
    ActionOverdue,
    ActionRecorded,
    CaseClosed,
    ChecksConfirmed,
    EscalationRaised,
    EscalationResolved,
    EscalationStageAdvanced,
    FacilitatorAssigned,
    MeetingCancelled,
    MeetingHeld,
    MeetingRescheduled,
    MeetingScheduled,
    RequestSubmitted,
)


def summary(r: Recorded) -> str:
    """One line saying what the event changed, without free text about the family."""
    e = r.payload
    match e:
        case RequestSubmitted():
            missing = e.checks.missing()
            return (f"request for {e.case_reference} ({e.reason.value}), {len(e.invitees)} invitees, "
                    f"checks {'complete' if not missing else 'missing: ' + ', '.join(missing)}")
        case ChecksConfirmed():
            return "all three checks confirmed"
        case FacilitatorAssigned():
            return f"facilitator {e.facilitator_id} assigned"
        case MeetingScheduled():
            return f"meeting {e.meeting_id} at {e.starts_at:%Y-%m-%d %H:%M %Z} ({e.mode.value}, {e.duration_minutes} min)"
        case MeetingRescheduled():
            return f"meeting {e.meeting_id} moved to {e.starts_at:%Y-%m-%d %H:%M %Z}"
        case MeetingCancelled():
            return f"meeting {e.meeting_id} cancelled"
        case MeetingHeld():
            return f"meeting held: {e.outcome.value}, {len(e.attendees)} attendees, {len(e.actions)} actions"
        case ActionRecorded():
            return f"action {e.action_id} for {e.owner.agency}, due {e.due_date}"
        case ActionCompleted():
            return f"action {e.action_id} completed on {e.completed_on}"
        case ActionOverdue():
            return f"action {e.action_id} overdue (due {e.due_date})"
        case EscalationRaised():
            return f"escalation {e.escalation_id} raised ({e.trigger.value}): stage {e.stage} {e.stage_name}, due {e.deadline}"
        case EscalationStageAdvanced():
            return f"escalation advanced to stage {e.stage} {e.stage_name}, due {e.deadline}"
        case EscalationResolved():
            return f"escalation resolved at stage {e.stage}"
        case CaseClosed():
            return f"case closed ({e.reason})"
    return r.type


def history_table(case_id: str, history: list[Recorded]) -> Table:
    table = Table(title=f"History of {case_id} ({len(history)} events)", show_lines=False)
    for col in ("seq", "occurred at (UTC)", "event", "producer", "actor", "what changed"):
        table.add_column(col, overflow="fold")
    for r in history:
        env = r.shown
        # Producers' strings are shown as text, never interpreted as rich markup.
        table.add_row(str(r.seq), f"{env.occurred_at:%Y-%m-%d %H:%M:%S}", r.type, escape(env.producer),
                      escape(env.actor), escape(summary(r)))
    return table


def history_json(history: list[Recorded]) -> str:
    return json.dumps([{"seq": r.seq, **json.loads(r.shown.model_dump_json())} for r in history], indent=2)


def print_json(console: Console, data: Any) -> None:
    console.print_json(json.dumps(data, default=str))
