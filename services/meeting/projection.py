"""Meeting's own view: each case's meetings and the actions agreed at them.

Only this service reads these tables. Datetimes are stored in UTC (SQLite keeps no offset).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import date
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Date,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    func,
    select,
)

from rethink.shared.envelope import Recorded
from rethink.shared.events import (
    ERASED,
    ActionCompleted,
    ActionOverdue,
    ActionRecorded,
    MeetingCancelled,
    MeetingHeld,
    MeetingRescheduled,
    MeetingScheduled,
    PersonalDataErased,
)
from rethink.shared.folding import row_update, row_upsert
from rethink.shared.projection import Unread, UtcDateTime, Write, checkpoint_table, iso, repeatable

metadata = MetaData()
checkpoint_table(metadata)
cases = Table(
    "meeting_cases",
    metadata,
    Column("case_id", String(16), primary_key=True),
    Column("closed", Boolean, nullable=False),
)
meetings = Table(
    "meeting_meetings",
    metadata,
    Column("case_id", String(16), primary_key=True),
    Column("meeting_id", String(200), primary_key=True),
    Column("status", String(16), nullable=False),  # scheduled | rescheduled | cancelled | held
    Column("arranged_seq", BigInteger, nullable=False),  # orders a case's meetings: the latest is "the" meeting
    Column("starts_at", UtcDateTime()),
    Column("held_at", UtcDateTime()),
    Column("outcome", String(20)),
    Column("attendees", Integer),
)
actions = Table(
    "meeting_actions",
    metadata,
    Column("case_id", String(16), primary_key=True),
    Column("action_id", String(64), primary_key=True),
    Column("meeting_id", String(200), nullable=False),
    Column("recorded_seq", BigInteger, nullable=False),
    Column("description", Text, nullable=False),
    Column("owner_name", String(200), nullable=False),
    Column("owner_agency", String(120), nullable=False),
    Column("owner_email", String(320), nullable=False),
    Column("due_date", Date, nullable=False),
    Column("status", String(16), nullable=False),  # open | completed
    Column("completed_on", Date),
    Column("overdue_reported", Boolean, nullable=False),
    Column("overdue_as_of", Date),
    Index("meeting_actions_open_due", "status", "overdue_reported", "due_date"),
    Index("meeting_actions_owner", "owner_email"),
)



# The types whose payload this projection reads. Every other event of a case only gives the case
# its row (and CaseClosed closes it): the case id says all of that, so a rebuild need not decode
# them (``plan_unread``), and a RequestSubmitted's dozen sealed fields are the costliest to decode.
HANDLES = frozenset({"MeetingScheduled", "MeetingRescheduled", "MeetingCancelled", "MeetingHeld", "ActionRecorded",
                     "ActionCompleted", "ActionOverdue", "PersonalDataErased"})
# The types whose writes read none of their personal fields: a rebuild decodes them without opening
# any (``ProjectionStore.unopened``). Only an action's description and owner are written here; a
# MeetingHeld's fifteen or so sealed values (the stages, who attended) are counted, never read.
UNOPENED = HANDLES - {"ActionRecorded", "PersonalDataErased"}


class _Statements:
    """Built once per dialect: statement construction cost more than SQLite's execution of them.

    Upserts are one ``INSERT … ON CONFLICT`` statement (SQLite and PostgreSQL both have it): a
    read-then-write was two round trips to the database for every event. On conflict they set
    the columns named, to the values the insert carried (``excluded``). Every write of a row is a
    ``row_upsert`` or ``row_update``: a rebuild's batch folds a row's later writes into the one that
    made it (``folding``), so a case touched then closed, a meeting scheduled then held, an action
    recorded then completed each go as one row.
    """

    def __init__(self, dialect: str) -> None:
        # Every event of a case asks for its row; a batch needs to ask once per case (no write
        # deletes a case's row, and closing it is an update the touch leaves alone).
        self.touch_case = repeatable(row_upsert(cases, dialect))
        self.close_case = row_upsert(cases, dialect, ["closed"])
        self.schedule = row_upsert(meetings, dialect, ["status", "arranged_seq", "starts_at"])
        self.reschedule = row_upsert(meetings, dialect, ["status", "starts_at"])
        self.cancel = row_upsert(meetings, dialect, ["status"])
        self.hold = row_upsert(meetings, dialect, ["status", "held_at", "outcome", "attendees"])
        self.record = row_upsert(actions, dialect, [
            "meeting_id", "description", "owner_name", "owner_agency", "owner_email", "due_date"])
        self.complete = row_update(actions, status="completed")
        self.overdue = row_update(actions, overdue_reported=True)
        self.erase = actions.update().where(actions.c.case_id == bindparam("k_case_id")).values(
            description=ERASED, owner_name=ERASED, owner_email=ERASED)


_statements = functools.cache(_Statements)  # built once per dialect, on first use (no work at import)


def plan_unread(dialect: str, u: Unread) -> Iterable[Write]:
    """What any event writes to the case's row: from its case id and type alone."""
    s = _statements(dialect)
    if u.type == "CaseClosed":
        yield s.close_case, {"case_id": u.case_id, "closed": True}, (u.case_id,)
    else:  # every event of a case makes sure the case has its row
        yield s.touch_case, {"case_id": u.case_id, "closed": False}, (u.case_id,)


def plan(dialect: str, r: Recorded) -> Iterable[Write]:
    e, case_id, s = r.payload, r.envelope.case_id, _statements(dialect)
    scope = (case_id,)
    yield from plan_unread(dialect, Unread(r.seq, case_id, r.type))
    meeting = {"case_id": case_id, "meeting_id": getattr(e, "meeting_id", None)}
    if isinstance(e, MeetingScheduled):
        yield s.schedule, {**meeting, "status": "scheduled", "arranged_seq": r.seq, "starts_at": e.starts_at}, scope
    elif isinstance(e, MeetingRescheduled):
        yield s.reschedule, {**meeting, "arranged_seq": r.seq, "status": "rescheduled", "starts_at": e.starts_at}, scope
    elif isinstance(e, MeetingCancelled):
        yield s.cancel, {**meeting, "arranged_seq": r.seq, "status": "cancelled"}, scope
    elif isinstance(e, MeetingHeld):
        yield s.hold, {**meeting, "arranged_seq": r.seq, "status": "held", "held_at": e.held_at,
                       "outcome": e.outcome.value, "attendees": len(e.attendees)}, scope
    elif isinstance(e, ActionRecorded):
        yield s.record, {
            "case_id": case_id, "action_id": e.action_id, "recorded_seq": r.seq, "status": "open",
            "overdue_reported": False, "meeting_id": e.meeting_id, "description": e.description,
            "owner_name": e.owner.name, "owner_agency": e.owner.agency, "owner_email": str(e.owner.email),
            "due_date": e.due_date}, scope
    elif isinstance(e, ActionCompleted):
        yield s.complete, {"k_case_id": case_id, "k_action_id": e.action_id, "completed_on": e.completed_on}, scope
    elif isinstance(e, ActionOverdue):
        yield s.overdue, {"k_case_id": case_id, "k_action_id": e.action_id, "overdue_as_of": e.as_of}, scope
    elif isinstance(e, PersonalDataErased):
        # The log's copy is unreadable now; this copy goes too (see docs/privacy.md).
        yield s.erase, {"k_case_id": case_id}, scope


def _action(row: Any, with_case: bool = False) -> dict[str, Any]:
    out = {"case_id": row["case_id"]} if with_case else {}
    out |= {
        "action_id": row["action_id"], "meeting_id": row["meeting_id"], "description": row["description"],
        "owner": {"name": row["owner_name"], "agency": row["owner_agency"], "email": row["owner_email"]},
        "due_date": row["due_date"].isoformat(), "status": row["status"],
        "completed_on": row["completed_on"].isoformat() if row["completed_on"] else None,
        # True once reported overdue, and it stays true if the action is completed late: drift is history.
        "overdue": bool(row["overdue_reported"]),
    }
    return out


def case_view(conn: Connection, case_id: str) -> dict[str, Any] | None:
    case = conn.execute(select(cases).where(cases.c.case_id == case_id)).mappings().first()
    if case is None:
        return None
    m = conn.execute(select(meetings).where(meetings.c.case_id == case_id)
                     .order_by(meetings.c.arranged_seq.desc()).limit(1)).mappings().first()
    meeting = None if m is None else {
        "meeting_id": m["meeting_id"], "status": m["status"],
        "starts_at": iso(m["starts_at"]), "held_at": iso(m["held_at"]),
        "outcome": m["outcome"], "attendees": m["attendees"],
    }
    rows = conn.execute(select(actions).where(actions.c.case_id == case_id)
                        .order_by(actions.c.recorded_seq)).mappings()
    return {"case_id": case_id, "closed": bool(case["closed"]), "meeting": meeting,
            "actions": [_action(r) for r in rows]}


def list_view(conn: Connection, overdue_only: bool, owner_email: str | None, limit: int,
              open_cases_only: bool = False) -> list[dict[str, Any]]:
    q = select(actions)
    if open_cases_only:  # a closed case's open action is history, not work
        q = q.where(actions.c.case_id.in_(select(cases.c.case_id).where(cases.c.closed.is_(False))))
    if overdue_only:  # overdue now: reported overdue and still open
        q = q.where(actions.c.status == "open", actions.c.overdue_reported.is_(True))
    if owner_email:
        q = q.where(func.lower(actions.c.owner_email) == owner_email.lower())
    rows = conn.execute(q.order_by(actions.c.due_date, actions.c.case_id, actions.c.recorded_seq).limit(limit))
    return [_action(r, with_case=True) for r in rows.mappings()]


def overdue_candidates(conn: Connection, as_of: date) -> list[tuple[str, str, date]]:
    """Open actions past due and not yet reported: (case_id, action_id, due_date)."""
    q = (select(actions.c.case_id, actions.c.action_id, actions.c.due_date)
         .where(actions.c.status == "open", actions.c.overdue_reported.is_(False), actions.c.due_date < as_of)
         .order_by(actions.c.due_date, actions.c.case_id, actions.c.action_id))
    return [(r.case_id, r.action_id, r.due_date) for r in conn.execute(q)]
