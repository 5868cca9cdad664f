"""`rethink audit search`: which cases match what an auditor asks, summarised from the log.

It reads every case's history (cost grows with the log), which suits occasional audit
questions; a reporting projection is the answer for dashboards.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from rethink.shared.envelope import Recorded
from rethink.shared.events import (
    EscalationRaised,
    EscalationStageAdvanced,
    MeetingHeld,
    RequestSubmitted,
)

from .report import actions, case_state


@dataclass(frozen=True)
class CaseSummary:
    case_id: str
    agency: str | None
    case_reference: str | None
    requested_on: str | None
    status: str
    outcome: str | None
    highest_stage: int | None
    overdue_actions: int  # overdue now or completed late
    closed: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Criteria:
    agency: str | None = None
    since: date | None = None
    until: date | None = None
    outcome: str | None = None
    overdue: bool = False
    stage: int | None = None


def summarise(case_id: str, history: list[Recorded], today: date | None = None) -> CaseSummary:
    request = next((r for r in history if isinstance(r.payload, RequestSubmitted)), None)
    outcomes = [r.payload.outcome.value for r in history if isinstance(r.payload, MeetingHeld)]
    stages = [r.payload.stage for r in history if isinstance(r.payload, EscalationRaised | EscalationStageAdvanced)]
    state = case_state(history, today=today)
    # Drift counts whether or not the action was done since: overdue now, or completed late.
    drifted = sum(1 for a in actions(history, today=today) if a.overdue or a.reported_overdue)
    return CaseSummary(
        case_id=case_id,
        agency=request.envelope.producer if request else None,
        case_reference=state["case_reference"],
        requested_on=request.envelope.occurred_at.date().isoformat() if request else None,
        status=state["status"],
        outcome=outcomes[-1] if outcomes else None,
        highest_stage=max(stages) if stages else None,
        overdue_actions=drifted,
        closed=state["status"] == "closed",
    )


def matches(s: CaseSummary, c: Criteria) -> bool:
    requested = date.fromisoformat(s.requested_on) if s.requested_on else None
    return all((
        c.agency is None or (s.agency or "").casefold() == c.agency.casefold(),
        c.since is None or (requested is not None and requested >= c.since),
        c.until is None or (requested is not None and requested <= c.until),
        c.outcome is None or s.outcome == c.outcome,
        not c.overdue or s.overdue_actions > 0,
        c.stage is None or (s.highest_stage or 0) >= c.stage,
    ))
