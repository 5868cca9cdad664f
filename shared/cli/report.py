"""An auditor's report of one case from its events: chronology, state as of a moment, exports.

Pure: everything here takes the case's history (``list[Recorded]``, stream order) and returns
rows, a small state summary or text (JSON, CSV, one self-contained HTML page). No I/O and no
clock: the caller passes ``as_of`` (domain time) and ``today`` (for overdue when no ``as_of``).

"As of" is domain time: an event belongs to the case as it stood at T when it *occurred* by
T. One that occurred by T but was recorded after T is kept and marked ``late``: the network
could not have known it at T, which is exactly what an auditor needs to see.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from rethink.shared.envelope import CASE_ID_PATTERN, Recorded
from rethink.shared.events import (
    ActionCompleted,
    ActionOverdue,
    ActionRecorded,
    CaseClosed,
    ChecksConfirmed,
    EscalationRaised,
    EscalationResolved,
    EscalationStageAdvanced,
    Event,
    FacilitatorAssigned,
    MeetingCancelled,
    MeetingHeld,
    MeetingRescheduled,
    MeetingScheduled,
    RequestSubmitted,
)

from .render import summary

FORMATS = ("table", "json", "csv", "html")
CSV_COLUMNS = ("seq", "occurred_at", "recorded_at", "type", "producer", "actor", "summary", "event_id", "late")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


# --- inputs --------------------------------------------------------------------------------------

def check_case_id(case_id: str) -> str:
    # The id goes into a subject filter: a wildcard ('*', '>') would read other cases.
    if not re.fullmatch(CASE_ID_PATTERN, case_id):
        raise ValueError(f"{case_id!r} is not a case id (RT- and ten capital letters or digits 2-7)")
    return case_id


def parse_as_of(text: str) -> datetime:
    """ISO 8601 with an offset, or a date alone meaning the end of that day (UTC)."""
    value = text.strip()
    hint = "use a date (2026-03-01) or a date and time with offset (2026-03-01T17:00:00+00:00)"
    try:
        if _DATE_ONLY.match(value):
            return datetime.combine(date.fromisoformat(value), time.max, tzinfo=UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--as-of {text!r} is not a date or time: {hint}") from None
    if moment.tzinfo is None:
        raise ValueError(f"--as-of {text!r} has no UTC offset, so the moment is ambiguous: {hint}")
    return moment.astimezone(UTC)


# --- the chronology ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    seq: int
    event_id: str
    type: str
    occurred_at: datetime
    recorded_at: datetime
    producer: str
    actor: str
    correlation_id: str
    causation_id: str | None
    summary: str
    data: dict[str, Any]  # as read today: upcast to the current model when written at an older version
    late: bool = False
    schema_version: int = 1  # the version it was written at
    stored_data: dict[str, Any] | None = None  # what the log holds, when upcasting changed it

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "event_id": self.event_id, "type": self.type,
                "occurred_at": iso_utc(self.occurred_at), "recorded_at": iso_utc(self.recorded_at),
                "producer": self.producer, "actor": self.actor, "correlation_id": self.correlation_id,
                "causation_id": self.causation_id, "summary": self.summary, "late": self.late,
                "schema_version": self.schema_version, "data": self.data, "stored_data": self.stored_data}


def visible(history: list[Recorded], as_of: datetime | None = None) -> list[Recorded]:
    """The events that had occurred by ``as_of`` (all of them without one), in stream order."""
    if as_of is None:
        return list(history)
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    return [r for r in history if r.envelope.occurred_at <= as_of]


def chronology(history: list[Recorded], as_of: datetime | None = None) -> list[Row]:
    rows = []
    for r in visible(history, as_of):
        env = r.shown  # personal fields in clear (or erased), never ciphertext
        upcast = env.schema_version != r.payload.schema_version
        rows.append(Row(
            seq=r.seq, event_id=str(env.event_id), type=r.type, occurred_at=env.occurred_at.astimezone(UTC),
            recorded_at=env.recorded_at.astimezone(UTC), producer=env.producer, actor=env.actor,
            correlation_id=str(env.correlation_id),
            causation_id=str(env.causation_id) if env.causation_id else None,
            summary=summary(r), data=r.payload.model_dump(mode="json") if upcast else env.data,
            late=as_of is not None and env.recorded_at > as_of,
            schema_version=env.schema_version, stored_data=env.data if upcast else None,
        ))
    return rows


# --- what the events add up to -------------------------------------------------------------------

@dataclass(slots=True)  # many are held: one per action of every case, in the console's reports
class ActionLine:
    action_id: str
    description: str
    owner_agency: str
    due_date: date
    completed_on: date | None = None
    reported_overdue: bool = False
    overdue: bool = False

    @property
    def status(self) -> str:
        if self.completed_on is not None:
            return "completed late (was overdue)" if self.overdue else "completed"
        return "overdue" if self.overdue else "open"


@dataclass(slots=True)
class StageLine:
    escalation_id: str
    stage: int
    stage_name: str
    holder: str
    deadline: date
    entered_at: datetime
    left_at: datetime | None = None
    moved: str = "open"
    past_deadline: bool = False


def _reference_day(as_of: datetime | None, today: date | None) -> date | None:
    # Overdue is judged by whole days, like the meeting service's check (UTC dates).
    return as_of.astimezone(UTC).date() if as_of is not None else today


class ActionFold:
    """``actions`` one event at a time: what a case's events have said of its actions so far.

    The console's reports keep one per case instead of the case's events (``rethink.console.reports``)."""

    def __init__(self) -> None:
        self._found: dict[str, ActionLine] = {}

    def add(self, e: Event) -> None:
        # The meeting agrees the actions; ActionRecorded (same ids) follows as a reaction, so
        # either is enough to know an action exists as of a moment between the two.
        items = e.actions if isinstance(e, MeetingHeld) else [e] if isinstance(e, ActionRecorded) else []
        for a in items:
            if a.action_id not in self._found:
                self._found[a.action_id] = ActionLine(a.action_id, a.description, a.owner.agency, a.due_date)
        if isinstance(e, ActionCompleted) and e.action_id in self._found:
            self._found[e.action_id].completed_on = e.completed_on
        elif isinstance(e, ActionOverdue) and e.action_id in self._found:
            self._found[e.action_id].reported_overdue = True

    def lines(self, day: date | None) -> list[ActionLine]:
        """Each action, overdue judged by ``day``: new lines, so the fold can be asked again for another day."""
        out = []
        for a in self._found.values():
            if a.completed_on is not None:
                overdue = a.completed_on > a.due_date
            else:
                overdue = a.reported_overdue or (day is not None and a.due_date < day)
            out.append(replace(a, overdue=overdue))
        return out


def actions(history: list[Recorded], as_of: datetime | None = None, today: date | None = None) -> list[ActionLine]:
    """Each agreed action with owner, due and completed dates; overdue by the reference day."""
    fold = ActionFold()
    for r in visible(history, as_of):
        fold.add(r.payload)
    return fold.lines(_reference_day(as_of, today))


class StageFold:
    """``escalation_stages`` one event at a time (see ``ActionFold``)."""

    def __init__(self) -> None:
        self._lines: list[StageLine] = []
        self._current: dict[str, StageLine] = {}

    def add(self, r: Recorded) -> None:
        e = r.payload
        if isinstance(e, (EscalationStageAdvanced, EscalationResolved)) and e.escalation_id in self._current:
            line = self._current.pop(e.escalation_id)
            line.left_at = r.envelope.occurred_at.astimezone(UTC)
            line.moved = f"advanced to stage {e.stage}" if isinstance(e, EscalationStageAdvanced) else "resolved"
        if isinstance(e, (EscalationRaised, EscalationStageAdvanced)):
            line = StageLine(e.escalation_id, e.stage, e.stage_name, e.holder, e.deadline,
                             r.envelope.occurred_at.astimezone(UTC))
            self._current[e.escalation_id] = line
            self._lines.append(line)

    def lines(self, day: date | None) -> list[StageLine]:
        """Each stage, its deadline judged by ``day`` while it is open: new lines, as ``ActionFold.lines``."""
        out = []
        for line in self._lines:
            moved_on = line.left_at.date() if line.left_at else day
            out.append(replace(line, past_deadline=moved_on is not None and moved_on > line.deadline))
        return out


def escalation_stages(history: list[Recorded], as_of: datetime | None = None,
                      today: date | None = None) -> list[StageLine]:
    """Each escalation stage: holder, deadline, when it was entered and when (and how) it moved on."""
    fold = StageFold()
    for r in visible(history, as_of):
        fold.add(r)
    return fold.lines(_reference_day(as_of, today))


def timings(history: list[Recorded], as_of: datetime | None = None) -> dict[str, Any]:
    """Request -> first meeting held -> case closed, each as (start, end, duration) or None.

    Both spans use the first meeting, so together they are the whole time from request to
    resolution.
    """
    requested = held = closed = None
    for r in visible(history, as_of):
        e = r.payload
        if isinstance(e, RequestSubmitted) and requested is None:
            requested = r.envelope.occurred_at.astimezone(UTC)
        elif isinstance(e, MeetingHeld) and held is None:
            held = e.held_at.astimezone(UTC)
        elif isinstance(e, CaseClosed) and closed is None:
            closed = r.envelope.occurred_at.astimezone(UTC)

    def span(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime, timedelta] | None:
        return (start, end, end - start) if start and end else None

    return {"request_to_meeting": span(requested, held), "meeting_to_resolution": span(held, closed)}


NOT_REQUESTED = "not yet requested"


def status_after(status: str, e: Event) -> str:
    """The case's status once ``e`` has happened (``status`` before it): one line of words."""
    match e:
        case RequestSubmitted():
            return "awaiting checks"
        case ChecksConfirmed():
            return "checks confirmed"
        case MeetingScheduled() | MeetingRescheduled():
            return "meeting scheduled"
        case MeetingCancelled():
            return "meeting cancelled"
        case MeetingHeld():
            return f"meeting held ({e.outcome.value})"
        case EscalationRaised() | EscalationStageAdvanced():
            return f"escalation stage {e.stage}"
        case EscalationResolved():
            return "escalation resolved"
        case CaseClosed():
            return "closed"
    return status


def case_state(history: list[Recorded], as_of: datetime | None = None, today: date | None = None) -> dict[str, Any]:
    """The case as it stood at ``as_of`` (now, without one), in a few plain values."""
    seen = visible(history, as_of)
    status, reference, facilitator, closed_reason = NOT_REQUESTED, None, None, None
    for r in seen:
        e = r.payload
        status = status_after(status, e)
        match e:
            case RequestSubmitted():
                reference = e.case_reference
            case FacilitatorAssigned():
                facilitator = e.facilitator_id
            case CaseClosed():
                closed_reason = e.reason
    lines = actions(history, as_of, today)
    open_stage = next((s for s in reversed(escalation_stages(history, as_of, today)) if s.left_at is None), None)
    return {
        "as_of": iso_utc(as_of) if as_of else None,
        "status": status,
        "case_reference": reference,
        "closed_reason": closed_reason,
        "facilitator_id": facilitator,
        "events": len(seen),
        "recorded_late": sum(1 for r in seen if as_of is not None and r.envelope.recorded_at > as_of),
        "open_actions": [a.action_id for a in lines if a.completed_on is None],
        "overdue_actions": [a.action_id for a in lines if a.completed_on is None and a.overdue],
        "escalation": None if open_stage is None else {
            "escalation_id": open_stage.escalation_id, "stage": open_stage.stage,
            "stage_name": open_stage.stage_name, "holder": open_stage.holder,
            "deadline": open_stage.deadline.isoformat()},
    }


@dataclass(frozen=True)
class Report:
    case_id: str
    as_of: datetime | None
    rows: list[Row]
    state: dict[str, Any]
    actions: list[ActionLine] = field(default_factory=list)
    stages: list[StageLine] = field(default_factory=list)
    timings: dict[str, Any] = field(default_factory=dict)


def build_report(case_id: str, history: list[Recorded], as_of: datetime | None = None,
                 today: date | None = None) -> Report:
    return Report(case_id, as_of, chronology(history, as_of), case_state(history, as_of, today),
                  actions(history, as_of, today), escalation_stages(history, as_of, today), timings(history, as_of))


# --- exports -------------------------------------------------------------------------------------

def to_json(rows: list[Row]) -> str:
    return json.dumps([r.as_dict() for r in rows], indent=2) + "\n"


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def to_csv(rows: list[Row]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)  # RFC 4180: quoted as needed, CRLF line ends
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow([_cell(v) for v in (r.seq, iso_utc(r.occurred_at), iso_utc(r.recorded_at), r.type, r.producer,
                                            r.actor, r.summary, r.event_id, "true" if r.late else "false")])
    return buf.getvalue()


def to_table(report: Report) -> Group:
    title = f"History of {report.case_id} ({len(report.rows)} events"
    title += f", as of {iso_utc(report.as_of)})" if report.as_of else ")"
    table = Table(title=title)
    as_of = report.as_of is not None  # "late" only means something against an as-of time
    for col in ("seq", "occurred at (UTC)", "recorded at (UTC)", "event", "producer", "actor", "what changed",
                *(["late"] if as_of else [])):
        table.add_column(col, overflow="fold")
    for r in report.rows:
        cells = [r.seq, short_time(r.occurred_at), short_time(r.recorded_at), r.type, r.producer, r.actor, r.summary]
        cells += ["recorded late" if r.late else ""] if as_of else []
        table.add_row(*map(_text, cells), style="yellow" if r.late else None)
    state = Table(title="State" + (f" as of {iso_utc(report.as_of)}" if report.as_of else ""), show_header=False,
                  box=None, title_justify="left")
    state.add_column(style="bold")
    state.add_column(overflow="fold")
    for key, value in state_lines(report.state):
        state.add_row(key, _text(value))
    return Group(table, state)


def table_text(report: Report, width: int = 160) -> str:
    """The table as plain text, for a file."""
    console = Console(file=io.StringIO(), width=width, color_system=None, record=True)
    console.print(to_table(report))
    return console.export_text()


def _text(value: object) -> Text:
    """Literal text for the terminal: no rich markup, no escape sequences from agencies' data."""
    return Text(_CONTROL.sub("\ufffd", str(value)))


def state_lines(state: dict[str, Any]) -> list[tuple[str, str]]:
    esc = state["escalation"]
    return [
        ("status", state["status"] + (f" ({state['closed_reason']})" if state["closed_reason"] else "")),
        ("case reference", state["case_reference"] or "-"),
        ("open actions", ", ".join(state["open_actions"]) or "none"),
        ("overdue actions", ", ".join(state["overdue_actions"]) or "none"),
        ("escalation", f"{esc['escalation_id']} stage {esc['stage']} {esc['stage_name']}, held by {esc['holder']}, "
                       f"due {esc['deadline']}" if esc else "none open"),
        ("events", f"{state['events']}" + (f", {state['recorded_late']} recorded late" if state["recorded_late"] else "")),
    ]


# --- HTML: one self-contained page to open or print ----------------------------------------------

def duration(td: timedelta) -> str:
    sign, td = ("-", -td) if td < timedelta(0) else ("", td)
    minutes = int(td.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    parts = [f"{n} {unit}{'s' if n != 1 else ''}" for n, unit in ((days, "day"), (hours, "hour"), (mins, "minute")) if n]
    return sign + (" ".join(parts) if parts else "under a minute")


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def short_time(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}"
