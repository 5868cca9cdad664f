"""Scheduling's own view: each case's facilitator and meeting, every facilitator's bookings, and
what reminders are needed for (open actions with owners and due dates, escalation stages with
holders and deadlines), from the events of the whole log that this service's consumer sees."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from datetime import datetime
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
    or_,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from rethink.shared.envelope import Recorded
from rethink.shared.events import (
    ERASED,
    FROM_LOG,
    ActionCompleted,
    ActionRecorded,
    CaseClosed,
    EscalationRaised,
    EscalationResolved,
    EscalationStageAdvanced,
    FacilitatorAssigned,
    MeetingCancelled,
    MeetingHeld,
    MeetingMode,
    MeetingRescheduled,
    MeetingScheduled,
    Person,
    PersonalDataErased,
    RequestSubmitted,
)
from rethink.shared.folding import row_insert, row_update, row_upsert
from rethink.shared.projection import UtcDateTime, Write, checkpoint_table

from .domain import Booking, Meeting
from .reminders import ActionItem, Item, MeetingItem, StageItem

ACTIVE = ("scheduled", "rescheduled")

metadata = MetaData()
checkpoint = checkpoint_table(metadata)
cases = Table(
    "scheduling_cases",
    metadata,
    Column("case_id", String(16), primary_key=True),
    Column("case_reference", String(64), nullable=False),
    Column("facilitator_id", String(40)),
    Column("facilitator_name", String(200)),
    Column("facilitator_email", String(320)),
    Column("closed", Boolean, nullable=False, default=False),
)
# The open cases, found without reading the closed ones: what the service reads on its live path
# (a facilitator's caseload, the reminders) must grow with the open work, not with the log.
# ``_OPEN`` is the one spelling of "open" the queries and the index share: a planner takes a
# partial index only for a query whose condition matches the index's.
_OPEN = cases.c.closed.is_(False)
Index("scheduling_cases_open", cases.c.facilitator_id, cases.c.case_id, sqlite_where=_OPEN, postgresql_where=_OPEN)
meetings = Table(
    "scheduling_meetings",
    metadata,
    Column("meeting_id", String(40), primary_key=True),
    Column("case_id", String(16), nullable=False, index=True),
    Column("facilitator_id", String(40), nullable=False),
    Column("starts_at", UtcDateTime(), nullable=False),  # stored in UTC
    Column("duration_minutes", Integer, nullable=False),
    Column("mode", String(20), nullable=False),
    Column("venue", Text),
    Column("status", String(20), nullable=False),
    Column("invitees", Text, nullable=False),  # JSON: kept so changes and cancellations reach the same people
    Column("seq", BigInteger, nullable=False),  # log position of the scheduling: orders a case's meetings
)
# The meetings still to happen (everyone's, or one facilitator's: the bookings a ``schedule``
# command checks), found without reading every meeting ever held. Status first: one index serves
# all three reads (everyone's are sorted by start afterwards, and they are only the active ones).
Index("scheduling_meetings_active", meetings.c.status, meetings.c.facilitator_id, meetings.c.starts_at)
# New tables rather than new columns, so a projection made before them still opens (create_all
# adds missing tables, not columns); `rethink projections rebuild scheduling` fills them from the log.
revisions = Table(
    "scheduling_meeting_revisions",
    metadata,
    Column("meeting_id", String(40), primary_key=True),
    Column("sequence", Integer, nullable=False),  # the iCalendar SEQUENCE of the last notice sent
)
actions = Table(
    "scheduling_actions",
    metadata,
    Column("case_id", String(16), primary_key=True),
    Column("action_id", String(60), primary_key=True),
    Column("meeting_id", String(40), nullable=False),
    Column("owner", Text, nullable=False),  # JSON Person
    Column("due_date", Date, nullable=False),
    Column("completed", Boolean, nullable=False, default=False),
)
erased = Table(  # cases whose personal data was erased: no more reminders, nobody left to send them to
    "scheduling_erased_cases",
    metadata,
    Column("case_id", String(16), primary_key=True),
)
escalations = Table(
    "scheduling_escalations",
    metadata,
    Column("case_id", String(16), primary_key=True),
    Column("escalation_id", String(40), primary_key=True),
    Column("stage", Integer, nullable=False),
    Column("stage_name", String(200), nullable=False),
    Column("holder", String(200), nullable=False),
    Column("deadline", Date, nullable=False),
    Column("resolved", Boolean, nullable=False, default=False),
)



HANDLES = frozenset({
    "RequestSubmitted", "FacilitatorAssigned", "MeetingScheduled", "MeetingRescheduled", "MeetingCancelled",
    "MeetingHeld", "ActionRecorded", "ActionCompleted", "EscalationRaised", "EscalationStageAdvanced",
    "EscalationResolved", "PersonalDataErased", "CaseClosed"})  # the types that change this view
# The types whose writes read none of their personal fields: a rebuild decodes them without opening
# any (``ProjectionStore.unopened``). A request gives only its reference, a held meeting only its id;
# the people this view keeps come from the assignment, the meetings and the actions.
UNOPENED = frozenset({"RequestSubmitted", "MeetingCancelled", "MeetingHeld", "ActionCompleted", "EscalationRaised",
                      "EscalationStageAdvanced", "EscalationResolved", "CaseClosed"})


class _Statements:
    """Built once per dialect: statement construction cost more than SQLite's execution of them."""

    def __init__(self, dialect: str) -> None:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        case = cases.c.case_id == bindparam("k_case_id")
        of_case = meetings.c.case_id == bindparam("k_case_id")
        # Rows made and changed by primary key: a rebuild's batch folds the changes into the inserts.
        self.submit = row_insert(cases)
        self.assign = row_update(cases)
        self.schedule = row_insert(meetings)
        self.first_revision = revisions.insert()
        self.change_meeting = row_update(meetings)
        revise = insert(revisions).values(sequence=1)
        # The next notice's SEQUENCE, in one statement: 1 for a meeting with no revision row yet.
        self.revise = revise.on_conflict_do_update(index_elements=["meeting_id"],
                                                   set_={"sequence": revisions.c.sequence + 1})
        self.record_action = row_insert(actions)
        self.complete_action = row_update(actions, completed=True)
        self.raise_ = row_insert(escalations)
        self.advance = row_update(escalations)
        self.resolve = row_update(escalations, resolved=True)
        self.erase_facilitator = cases.update().where(case, cases.c.facilitator_id.is_not(None)).values(
            facilitator_name=ERASED, facilitator_email=ERASED)
        self.erase_invitees = meetings.update().where(of_case).values(invitees="[]")
        self.erase_venues = meetings.update().where(of_case, meetings.c.venue.is_not(None)).values(venue=ERASED)
        self.erase_owners = actions.update().where(actions.c.case_id == bindparam("k_case_id")).values(
            owner=json.dumps({"name": ERASED, "agency": ERASED, "email": ERASED}))
        self.mark_erased = row_upsert(erased, dialect)
        self.close = row_update(cases, closed=True)
        # A closed case's unheld meeting will not take place: it must stop blocking the facilitator.
        # (``or_`` rather than ``in_``: an IN list is expanded per execution, which executemany refuses.)
        self.cancel_active = meetings.update().where(
            of_case, or_(*(meetings.c.status == status for status in ACTIVE))).values(status="cancelled")


_statements = functools.cache(_Statements)  # built once per dialect, on first use (no work at import)


def plan(dialect: str, r: Recorded) -> Iterable[Write]:
    """Scopes: the case; a meeting's rows also by its id (a meeting belongs to the case whose events name it)."""
    e, case_id, s = r.payload, r.envelope.case_id, _statements(dialect)
    scope = (case_id,)
    if isinstance(e, RequestSubmitted):
        # Every column: an assignment in the same batch goes into this insert (``folding``).
        yield s.submit, {"case_id": case_id, "case_reference": e.case_reference, "closed": False,
                         "facilitator_id": None, "facilitator_name": None, "facilitator_email": None}, scope
    elif isinstance(e, FacilitatorAssigned):
        yield s.assign, {"k_case_id": case_id, "facilitator_id": e.facilitator_id,
                         "facilitator_name": e.facilitator_name,
                         "facilitator_email": str(e.facilitator_email)}, scope
    elif isinstance(e, MeetingScheduled):
        m = (case_id, ("meeting", e.meeting_id))
        yield s.schedule, {
            "meeting_id": e.meeting_id, "case_id": case_id, "facilitator_id": e.facilitator_id,
            "starts_at": e.starts_at, "duration_minutes": e.duration_minutes, "mode": e.mode.value, "venue": e.venue,
            "status": "scheduled", "invitees": json.dumps([p.model_dump(mode="json") for p in e.invitees]),
            "seq": r.seq}, m
        yield s.first_revision, {"meeting_id": e.meeting_id, "sequence": 0}, m
    elif isinstance(e, MeetingRescheduled):
        m = (case_id, ("meeting", e.meeting_id))
        yield s.change_meeting, {"k_meeting_id": e.meeting_id, "starts_at": e.starts_at,
                                 "duration_minutes": e.duration_minutes, "mode": e.mode.value, "venue": e.venue,
                                 "status": "rescheduled"}, m
        yield s.revise, {"meeting_id": e.meeting_id}, m
    elif isinstance(e, MeetingCancelled):
        m = (case_id, ("meeting", e.meeting_id))
        yield s.change_meeting, {"k_meeting_id": e.meeting_id, "status": "cancelled"}, m
        yield s.revise, {"meeting_id": e.meeting_id}, m
    elif isinstance(e, ActionRecorded):
        yield s.record_action, {"case_id": case_id, "action_id": e.action_id, "meeting_id": e.meeting_id,
                                "owner": json.dumps(e.owner.model_dump(mode="json")), "due_date": e.due_date,
                                "completed": False}, scope
    elif isinstance(e, ActionCompleted):
        yield s.complete_action, {"k_case_id": case_id, "k_action_id": e.action_id}, scope
    elif isinstance(e, EscalationRaised):
        yield s.raise_, {"case_id": case_id, "escalation_id": e.escalation_id, "stage": e.stage,
                         "stage_name": e.stage_name, "holder": e.holder, "deadline": e.deadline,
                         "resolved": False}, scope
    elif isinstance(e, EscalationStageAdvanced):
        yield s.advance, {"k_case_id": case_id, "k_escalation_id": e.escalation_id, "stage": e.stage,
                          "stage_name": e.stage_name, "holder": e.holder, "deadline": e.deadline}, scope
    elif isinstance(e, EscalationResolved):
        yield s.resolve, {"k_case_id": case_id, "k_escalation_id": e.escalation_id}, scope
    elif isinstance(e, MeetingHeld):
        yield s.change_meeting, {"k_meeting_id": e.meeting_id, "status": "held"}, (case_id, ("meeting", e.meeting_id))
    elif isinstance(e, PersonalDataErased):
        # The log's copy is unreadable now; this copy goes too (see docs/privacy.md).
        yield s.erase_facilitator, {"k_case_id": case_id}, scope
        yield s.erase_invitees, {"k_case_id": case_id}, scope
        yield s.erase_venues, {"k_case_id": case_id}, scope
        yield s.erase_owners, {"k_case_id": case_id}, scope
        yield s.mark_erased, {"case_id": case_id}, scope
    elif isinstance(e, CaseClosed):
        yield s.close, {"k_case_id": case_id}, scope
        yield s.cancel_active, {"k_case_id": case_id}, scope


_APPLIED_UP_TO = select(checkpoint.c.last_seq).where(checkpoint.c.consumer == bindparam("consumer"))


def applied_up_to(conn: Connection, consumer: str) -> int:
    """The checkpoint, read on a connection the caller has open anyway (``ProjectionStore.last_seq`` opens one)."""
    return conn.execute(_APPLIED_UP_TO, {"consumer": consumer}).scalar() or 0


_LOAD = (select(cases.c.facilitator_id, func.count()).where(_OPEN, cases.c.facilitator_id.is_not(None))
         .group_by(cases.c.facilitator_id))


def load_by_facilitator(conn: Connection) -> dict[str, int]:
    """Each facilitator's open cases (a closed case is no longer anyone's work)."""
    return {fid: n for fid, n in conn.execute(_LOAD)}


# Built once: on every schedule command, building this SELECT cost more CPU than running it.
_BOOKINGS = select(meetings.c.meeting_id, meetings.c.case_id, meetings.c.starts_at, meetings.c.duration_minutes).where(
    meetings.c.facilitator_id == bindparam("facilitator_id"), meetings.c.status.in_(ACTIVE))


def bookings(conn: Connection, facilitator_id: str) -> list[Booking]:
    return [Booking(*row) for row in conn.execute(_BOOKINGS, {"facilitator_id": facilitator_id})]


def case_reference(conn: Connection, case_id: str) -> str | None:
    return conn.execute(select(cases.c.case_reference).where(cases.c.case_id == case_id)).scalar()


def facilitator(conn: Connection, case_id: str) -> dict[str, str] | None:
    row = conn.execute(select(cases).where(cases.c.case_id == case_id)).mappings().first()
    if row is None or row["facilitator_id"] is None:
        return None
    return {"id": row["facilitator_id"], "name": row["facilitator_name"], "email": row["facilitator_email"]}


# The people here were read from the log, and read back as the log is (``FROM_LOG``): an address
# refused as new input today (one the mail cannot carry) must not stop a change, a cancellation
# or the reminders; the notifier leaves it out instead.
def meeting_invitees(conn: Connection, meeting_id: str) -> list[Person]:
    raw = conn.execute(select(meetings.c.invitees).where(meetings.c.meeting_id == meeting_id)).scalar()
    return [Person.model_validate(p, context=FROM_LOG) for p in json.loads(raw)] if raw else []


def _meeting(row: Any) -> dict[str, Any]:
    return {
        "meeting_id": row["meeting_id"], "case_id": row["case_id"], "facilitator_id": row["facilitator_id"],
        "starts_at": row["starts_at"].isoformat(), "duration_minutes": row["duration_minutes"],
        "mode": row["mode"], "venue": row["venue"], "status": row["status"],
    }


def meeting(conn: Connection, meeting_id: str) -> Meeting | None:
    row = conn.execute(select(meetings).where(meetings.c.meeting_id == meeting_id)).mappings().first()
    if row is None:
        return None
    return Meeting(row["meeting_id"], row["facilitator_id"], row["starts_at"], row["duration_minutes"],
                   MeetingMode(row["mode"]), row["venue"])


def case_view(conn: Connection, case_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(cases).where(cases.c.case_id == case_id)).mappings().first()
    if row is None:
        return None
    latest = conn.execute(select(meetings).where(meetings.c.case_id == case_id)
                          .order_by(meetings.c.seq.desc()).limit(1)).mappings().first()
    meeting = None
    if latest is not None:
        meeting = {k: v for k, v in _meeting(latest).items() if k not in ("case_id", "facilitator_id")}
    return {"case_id": case_id, "case_reference": row["case_reference"], "closed": row["closed"],
            "facilitator": facilitator(conn, case_id), "meeting": meeting}


def active_meetings(conn: Connection, facilitator_id: str | None, limit: int,
                    starts_from: datetime | None = None, starts_before: datetime | None = None) -> list[dict[str, Any]]:
    # The reference is looked up for each meeting found (by the case's key), not joined: PostgreSQL
    # joined by hashing every case ever recorded.
    reference = select(cases.c.case_reference).where(cases.c.case_id == meetings.c.case_id).scalar_subquery()
    q = select(meetings, reference.label("case_reference")).where(meetings.c.status.in_(ACTIVE))
    if facilitator_id:
        q = q.where(meetings.c.facilitator_id == facilitator_id)
    if starts_from is not None:
        q = q.where(meetings.c.starts_at >= starts_from)
    if starts_before is not None:
        q = q.where(meetings.c.starts_at < starts_before)
    return [{**_meeting(r), "case_reference": r["case_reference"]}
            for r in conn.execute(q.order_by(meetings.c.starts_at).limit(limit)).mappings()]


def to_schedule(conn: Connection, facilitator_id: str | None, limit: int) -> list[dict[str, Any]]:
    """Open cases with a facilitator whose meeting is neither arranged nor held (none yet, or cancelled),
    by facilitator, then case."""
    # Asked of each open case's own meetings (EXISTS on their case_id index), not as a list of every
    # case that ever had a meeting, which grows with the log.
    arranged = select(meetings.c.case_id).where(meetings.c.case_id == cases.c.case_id,
                                                meetings.c.status.in_((*ACTIVE, "held")))
    q = select(cases).where(_OPEN, cases.c.facilitator_id.is_not(None), ~arranged.exists())
    if facilitator_id:
        q = q.where(cases.c.facilitator_id == facilitator_id)
    # In the index's order: by case id, SQLite (without statistics) walked every case to skip the sort.
    rows = conn.execute(q.order_by(cases.c.facilitator_id, cases.c.case_id).limit(limit)).mappings()
    return [{"case_id": r["case_id"], "case_reference": r["case_reference"],
             "facilitator": {"id": r["facilitator_id"], "name": r["facilitator_name"]}} for r in rows]


def revision(conn: Connection, meeting_id: str) -> int:
    """The SEQUENCE of the meeting's last calendar notice (0 if it was only scheduled)."""
    return conn.execute(select(revisions.c.sequence).where(revisions.c.meeting_id == meeting_id)).scalar() or 0


def _people(raw: str) -> tuple[Person, ...]:
    return tuple(Person.model_validate(p, context=FROM_LOG) for p in json.loads(raw))


_OPEN_CASES = select(cases).where(_OPEN, cases.c.case_id.not_in(select(erased.c.case_id)))
_IDS = bindparam("ids", expanding=True)
_MEETINGS_OF = select(meetings).where(meetings.c.case_id.in_(_IDS))
_OPEN_ACTIONS_OF = select(actions).where(actions.c.case_id.in_(_IDS), actions.c.completed.is_(False))
_OPEN_STAGES_OF = select(escalations).where(escalations.c.case_id.in_(_IDS), escalations.c.resolved.is_(False))
_IDS_AT_ONCE = 500  # well under any database's limit on bound parameters


def _of(conn: Connection, query: Any, case_ids: list[str]) -> list[Any]:
    """The rows of ``query`` for these cases, found by their ``case_id`` index, a few hundred cases a time.

    By case id, not by a join the planner may turn round into a scan of every case's rows."""
    return [row for i in range(0, len(case_ids), _IDS_AT_ONCE)
            for row in conn.execute(query, {"ids": case_ids[i:i + _IDS_AT_ONCE]}).mappings()]


_ASSIGNED_OF = select(cases.c.case_id, cases.c.facilitator_id).where(cases.c.case_id.in_(_IDS),
                                                                      cases.c.facilitator_id.is_not(None))


def assigned(conn: Connection, case_ids: Iterable[str]) -> dict[str, str]:
    """The facilitator who holds each of these cases, read by the cases' key; one with none is left out.

    The console narrows its work queue to one facilitator's cases with this: it used to replay the
    whole log into its memory for the same answer."""
    return {r["case_id"]: r["facilitator_id"] for r in _of(conn, _ASSIGNED_OF, list(dict.fromkeys(case_ids)))}


def reminder_items(conn: Connection) -> list[Item]:
    """Everything that may need a reminder: active meetings, open actions and open escalations of open cases.

    Read from the open cases out, so a year of closed ones behind them costs nothing here: the
    reminder job runs on the service's event loop (``tests/benchmarks/growth.py``)."""
    open_cases = {r["case_id"]: r for r in conn.execute(_OPEN_CASES).mappings()}
    ids = sorted(open_cases)
    latest_invitees: dict[str, tuple[Person, ...]] = {}
    items: list[Item] = []
    for m in sorted(_of(conn, _MEETINGS_OF, ids), key=lambda m: m["seq"]):
        invitees = latest_invitees[m["case_id"]] = _people(m["invitees"])
        case = open_cases[m["case_id"]]
        if m["status"] not in ACTIVE or case["facilitator_id"] is None:
            continue
        items.append(MeetingItem(m["case_id"], case["case_reference"], m["meeting_id"], m["starts_at"],
                                 m["duration_minutes"], MeetingMode(m["mode"]), m["venue"], invitees,
                                 case["facilitator_name"], case["facilitator_email"]))
    for a in _of(conn, _OPEN_ACTIONS_OF, ids):
        case = open_cases[a["case_id"]]
        items.append(ActionItem(a["case_id"], case["case_reference"], a["action_id"], a["meeting_id"],
                                Person.model_validate(json.loads(a["owner"]), context=FROM_LOG), a["due_date"],
                                case["facilitator_name"] or "", case["facilitator_email"] or ""))
    for s in _of(conn, _OPEN_STAGES_OF, ids):
        case = open_cases[s["case_id"]]
        people = list(latest_invitees.get(s["case_id"], ()))
        if case["facilitator_email"]:
            people.insert(0, Person.model_validate({"name": case["facilitator_name"], "agency": "Re-think facilitator",
                                                    "email": case["facilitator_email"]}, context=FROM_LOG))
        if people:
            items.append(StageItem(s["case_id"], case["case_reference"], s["escalation_id"], s["stage"],
                                   s["stage_name"], s["holder"], s["deadline"], tuple(people)))
    return items
