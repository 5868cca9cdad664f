"""Intake's own view: each request, who sent it, and whether its checks are complete."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    MetaData,
    String,
    Table,
    Text,
    select,
)

from rethink.shared.envelope import Recorded
from rethink.shared.events import ChecksConfirmed, RequestSubmitted
from rethink.shared.folding import row_insert, row_update
from rethink.shared.projection import UtcDateTime, Write, checkpoint_table, iso

metadata = MetaData()
checkpoint_table(metadata)
requests = Table(
    "intake_requests",
    metadata,
    Column("case_id", String(16), primary_key=True),
    Column("agency", String(120), nullable=False),
    Column("request_id", String(100)),
    Column("case_reference", String(64), nullable=False),
    Column("reason", String(20), nullable=False),
    Column("agencies", Text, nullable=False),
    Column("status", String(20), nullable=False),
    Column("missing_checks", Text, nullable=False),
    Column("submitted_at", UtcDateTime(), nullable=False),
    Column("confirmed_at", UtcDateTime()),
)


HANDLES = frozenset({"RequestSubmitted", "ChecksConfirmed"})  # the types that change this view
# The types whose writes read none of their personal fields (a request's people, description and
# notes stay in the log): a rebuild decodes them without opening any (``ProjectionStore.unopened``).
UNOPENED = HANDLES

# A confirmation in the same batch as its request goes into the request's insert (``folding``).
_submit = row_insert(requests)
_confirm = row_update(requests, status="checks_confirmed", missing_checks="[]")  # and confirmed_at


def plan(dialect: str, r: Recorded) -> Iterable[Write]:
    e, env = r.payload, r.envelope
    scope = (env.case_id,)
    if isinstance(e, RequestSubmitted):
        yield _submit, {
            "case_id": env.case_id, "agency": env.producer, "request_id": e.request_id,
            "case_reference": e.case_reference, "reason": e.reason.value, "agencies": json.dumps(e.agencies),
            "status": "awaiting_checks", "missing_checks": json.dumps(e.checks.missing()),
            "submitted_at": env.occurred_at, "confirmed_at": None}, scope
    elif isinstance(e, ChecksConfirmed):
        yield _confirm, {"k_case_id": env.case_id, "confirmed_at": env.occurred_at}, scope


def case_view(conn: Connection, case_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(requests).where(requests.c.case_id == case_id)).mappings().first()
    if row is None:
        return None
    return {
        "case_id": row["case_id"], "agency": row["agency"], "case_reference": row["case_reference"],
        "reason": row["reason"], "agencies": json.loads(row["agencies"]), "status": row["status"],
        "missing_checks": json.loads(row["missing_checks"]),
        "submitted_at": iso(row["submitted_at"]),
        "confirmed_at": iso(row["confirmed_at"]),
    }


def list_view(conn: Connection, status: str | None, limit: int, agency: str | None = None) -> list[dict[str, Any]]:
    q = select(requests.c.case_id, requests.c.agency, requests.c.case_reference, requests.c.status,
               requests.c.reason, requests.c.missing_checks, requests.c.submitted_at)
    if status:
        q = q.where(requests.c.status == status)
    if agency:
        q = q.where(requests.c.agency == agency)
    rows = conn.execute(q.order_by(requests.c.submitted_at).limit(limit)).mappings()
    return [{**r, "missing_checks": json.loads(r["missing_checks"]), "submitted_at": iso(r["submitted_at"])}
            for r in rows]
