"""Escalation's own view: each case's escalation, the stages it went through, and closure.

Free text (reasons, resolutions) stays in the log only: the view holds what a list of
escalations needs, and nothing personal.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Date,
    Integer,
    MetaData,
    String,
    Table,
    select,
)

from rethink.shared.envelope import Recorded
from rethink.shared.events import (
    CaseClosed,
    EscalationRaised,
    EscalationResolved,
    EscalationStageAdvanced,
    RequestSubmitted,
)
from rethink.shared.folding import row_insert, row_update, row_upsert
from rethink.shared.projection import UtcDateTime, Write, checkpoint_table, iso

metadata = MetaData()
checkpoint_table(metadata)

cases = Table(
    "escalation_cases",
    metadata,
    Column("case_id", String(16), primary_key=True),
    Column("closed", Boolean, nullable=False, default=False),
    Column("closed_reason", String(40)),
    Column("closed_at", UtcDateTime()),
)
escalations = Table(
    "escalation_escalations",
    metadata,
    Column("case_id", String(16), primary_key=True),
    Column("escalation_id", String(16), primary_key=True),
    Column("trigger", String(32), nullable=False),
    Column("stage", Integer, nullable=False),
    Column("stage_name", String(200), nullable=False),
    Column("holder", String(200), nullable=False),
    Column("deadline", Date, nullable=False, index=True),
    Column("status", String(16), nullable=False, index=True),
    Column("raised_at", UtcDateTime(), nullable=False),
    Column("resolved_at", UtcDateTime()),
)
stages = Table(
    "escalation_stages",
    metadata,
    Column("case_id", String(16), primary_key=True),
    Column("escalation_id", String(16), primary_key=True),
    Column("stage", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("holder", String(200), nullable=False),
    Column("deadline", Date, nullable=False),
    Column("entered_at", UtcDateTime(), nullable=False),
)




HANDLES = frozenset({"RequestSubmitted", "EscalationRaised", "EscalationStageAdvanced", "EscalationResolved",
                     "CaseClosed"})  # the types that change this view
# The types whose writes read none of their personal fields (this view holds nothing personal): a
# rebuild decodes them without opening any (``ProjectionStore.unopened``).
UNOPENED = HANDLES


class _Statements:
    """Built once per dialect (SQLite and PostgreSQL each have their own ``INSERT … ON CONFLICT``)."""

    def __init__(self, dialect: str) -> None:
        # A batch folds a case's close into its opening, an escalation's changes into its insert (``folding``).
        self.open_case = row_upsert(cases, dialect)
        self.close_case = row_upsert(cases, dialect, ["closed", "closed_reason", "closed_at"])
        self.raise_ = row_insert(escalations)
        self.advance = row_update(escalations)
        self.resolve = row_update(escalations, status="resolved")
        self.enter_stage = stages.insert()


_statements = functools.cache(_Statements)  # built once per dialect, on first use (no work at import)


def plan(dialect: str, r: Recorded) -> Iterable[Write]:
    e, env = r.payload, r.envelope
    s, case_id, at = _statements(dialect), env.case_id, env.occurred_at
    scope = (case_id,)
    if isinstance(e, RequestSubmitted):
        yield s.open_case, {"case_id": case_id, "closed": False}, scope
    elif isinstance(e, EscalationRaised):
        yield s.raise_, {
            "case_id": case_id, "escalation_id": e.escalation_id, "trigger": e.trigger.value, "stage": e.stage,
            "stage_name": e.stage_name, "holder": e.holder, "deadline": e.deadline, "status": "open",
            "raised_at": at, "resolved_at": None}, scope
        yield _enter_stage(s, case_id, e, at)
    elif isinstance(e, EscalationStageAdvanced):
        yield s.advance, {"k_case_id": case_id, "k_escalation_id": e.escalation_id, "stage": e.stage,
                          "stage_name": e.stage_name, "holder": e.holder, "deadline": e.deadline}, scope
        yield _enter_stage(s, case_id, e, at)
    elif isinstance(e, EscalationResolved):
        yield s.resolve, {"k_case_id": case_id, "k_escalation_id": e.escalation_id, "resolved_at": at}, scope
    elif isinstance(e, CaseClosed):
        # A case closed before this service saw it submitted still gets its row.
        yield s.close_case, {"case_id": case_id, "closed": True, "closed_reason": e.reason, "closed_at": at}, scope


def _enter_stage(s: _Statements, case_id: str, e: EscalationRaised | EscalationStageAdvanced, at: datetime) -> Write:
    return s.enter_stage, {
        "case_id": case_id, "escalation_id": e.escalation_id, "stage": e.stage, "name": e.stage_name,
        "holder": e.holder, "deadline": e.deadline, "entered_at": at}, (case_id,)


def _summary(row: Any) -> dict[str, Any]:
    return {
        "case_id": row["case_id"], "escalation_id": row["escalation_id"], "trigger": row["trigger"],
        "stage": row["stage"], "stage_name": row["stage_name"], "holder": row["holder"],
        "deadline": row["deadline"].isoformat(), "status": row["status"],
        "raised_at": iso(row["raised_at"]), "resolved_at": iso(row["resolved_at"]),
    }


def case_view(conn: Connection, case_id: str) -> dict[str, Any] | None:
    case = conn.execute(select(cases).where(cases.c.case_id == case_id)).mappings().first()
    if case is None:
        return None
    latest = conn.execute(
        select(escalations).where(escalations.c.case_id == case_id)
        .order_by(escalations.c.raised_at.desc(), escalations.c.escalation_id.desc()).limit(1)
    ).mappings().first()
    escalation = None
    if latest is not None:
        escalation = _summary(latest)
        del escalation["case_id"]
        history = conn.execute(
            select(stages).where((stages.c.case_id == case_id) & (stages.c.escalation_id == latest["escalation_id"]))
            .order_by(stages.c.stage)
        ).mappings()
        escalation["stages"] = [
            {"stage": s["stage"], "name": s["name"], "holder": s["holder"], "deadline": s["deadline"].isoformat(),
             "entered_at": iso(s["entered_at"])}
            for s in history
        ]
    return {
        "case_id": case_id, "escalation": escalation, "closed": bool(case["closed"]),
        "closed_reason": case["closed_reason"], "closed_at": iso(case["closed_at"]),
    }


def list_view(conn: Connection, open_only: bool, due_by: date | None, limit: int) -> list[dict[str, Any]]:
    """Escalations, soonest deadline first; ``due_by`` keeps those due on or before it (overdue included)."""
    q = select(escalations)
    if open_only:
        q = q.where(escalations.c.status == "open")
    if due_by is not None:
        q = q.where(escalations.c.deadline <= due_by)
    rows = conn.execute(q.order_by(escalations.c.deadline, escalations.c.case_id).limit(limit)).mappings()
    return [_summary(r) for r in rows]
