"""`rethink audit search`: which cases match what an auditor asks, summarised from the log.

The log is read once, in order, as a rebuild reads it (``scan_log``), and each event is folded
into its case's summary (``CaseFold``) and let go: what is kept grows with the cases, not with
the log. No summary field is personal, so no event is opened: nothing is decrypted and no key is
fetched, and an auditor can search with no access to the key store. Until the twelfth round of
the performance work it read each case's history in turn, opened: a consumer made, read and
deleted per case, and every case's key fetched (~65 s behind a region's year of 25,000 cases,
docs/performance.md). The cost still grows with the log; a reporting projection would be the
answer for dashboards.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from nats.js import JetStreamContext

from rethink.shared.envelope import InvalidEvent, Recorded
from rethink.shared.eventlog import EventLog, Subjects
from rethink.shared.events import (
    ActionCompleted,
    ActionOverdue,
    ActionRecorded,
    CaseClosed,
    ChecksConfirmed,
    EscalationRaised,
    EscalationResolved,
    EscalationStageAdvanced,
    MeetingCancelled,
    MeetingHeld,
    MeetingRescheduled,
    MeetingScheduled,
    RequestSubmitted,
)
from rethink.shared.rebuild import scan_log
from rethink.shared.settings import Settings

from .report import NOT_REQUESTED, ActionFold, status_after

# The types a summary reads (a status, the request, an outcome, a stage, an action); the others are
# not decoded. ``tests/unit/test_audit_search.py`` checks that leaving them out changes no summary.
READS = frozenset(t.__name__ for t in (
    RequestSubmitted, ChecksConfirmed, MeetingScheduled, MeetingRescheduled, MeetingCancelled, MeetingHeld,
    ActionRecorded, ActionCompleted, ActionOverdue, EscalationRaised, EscalationStageAdvanced,
    EscalationResolved, CaseClosed))


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


class CaseFold:
    """One case's summary, an event at a time, in the case's order (``summarise`` folds a whole history)."""

    __slots__ = ("agency", "requested_on", "reference", "status", "outcome", "highest_stage", "actions")

    def __init__(self) -> None:
        self.agency: str | None = None
        self.requested_on: str | None = None
        self.reference: str | None = None
        self.status = NOT_REQUESTED
        self.outcome: str | None = None
        self.highest_stage: int | None = None
        self.actions = ActionFold()

    def add(self, r: Recorded) -> None:
        e = r.payload
        self.status = status_after(self.status, e)
        self.actions.add(e)
        match e:
            case RequestSubmitted():
                if self.requested_on is None:  # who asked, and when: the first request
                    self.agency = r.envelope.producer
                    self.requested_on = r.envelope.occurred_at.date().isoformat()
                self.reference = e.case_reference  # as the case's history shows it: the latest
            case MeetingHeld():
                self.outcome = e.outcome.value
            case EscalationRaised() | EscalationStageAdvanced():
                self.highest_stage = max(self.highest_stage or 0, e.stage)

    def summary(self, case_id: str, today: date | None = None) -> CaseSummary:
        # Drift counts whether or not the action was done since: overdue now, or completed late.
        drifted = sum(1 for a in self.actions.lines(today) if a.overdue or a.reported_overdue)
        return CaseSummary(case_id, self.agency, self.reference, self.requested_on, self.status, self.outcome,
                           self.highest_stage, drifted, self.status == "closed")


def summarise(case_id: str, history: list[Recorded], today: date | None = None) -> CaseSummary:
    fold = CaseFold()
    for r in history:
        fold.add(r)
    return fold.summary(case_id, today)


@dataclass
class Found:
    cases: list[CaseSummary]  # by case id
    searched: int  # cases in the log
    unreadable: list[int] = field(default_factory=list)  # seqs of events that could not be decoded, left out


async def search(js: JetStreamContext, settings: Settings, criteria: Criteria, today: date | None = None) -> Found:
    """The cases of the whole log (as it stands when asked) that match ``criteria``."""
    folds: dict[str, CaseFold] = {}
    unreadable: list[int] = []
    async with contextlib.aclosing(scan_log(js, settings.stream, Subjects(settings.subject_prefix))) as scan:
        async for batch in scan:
            for seq, case_id, kind, data in batch:
                fold = folds.get(case_id)
                if fold is None:  # a case with any event is searched, as its history would be
                    fold = folds[case_id] = CaseFold()
                if kind not in READS:
                    continue
                try:
                    fold.add(EventLog.decode_unopened(data, seq, kind))
                except InvalidEvent:
                    unreadable.append(seq)  # the services skip (and park) these too
    summaries = (folds[case_id].summary(case_id, today) for case_id in sorted(folds))
    return Found([s for s in summaries if matches(s, criteria)], len(folds), unreadable)


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
