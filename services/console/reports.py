"""The partnership's figures for a period, folded from the event log.

Pure: each case's events fold, one at a time, into the few facts the reports read (``CaseFacts``:
its request, its meetings held, its actions, its escalation stages), and a period's tables are
built from those facts. The console keeps the facts, not the events: what it holds grows with the
cases, by under 2 KB each, not with the log (it held every event, personal fields opened: 1.5 GB
for a region's year, ``tests.benchmarks.console_reads``). Each table is what the page
shows, what its chart draws and what its CSV holds, so the three always agree. Actions and
escalation stages are folded as the auditor's report folds them (``rethink.shared.cli.report``),
so the console and the CLI count the same way.
"""

from __future__ import annotations

import re
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from rethink.shared.cli import report
from rethink.shared.envelope import Recorded
from rethink.shared.events import MeetingHeld, RequestSubmitted
from rethink.shared.workdays import is_working_day

LONDON = ZoneInfo("Europe/London")
REASONS = {"disagreement": "Disagreement", "stuckness": "Stuckness", "both": "Both"}
OUTCOMES = {"resolved": "Resolved", "partly_resolved": "Partly resolved", "unresolved": "Unresolved"}
DAY_BANDS = ((0, 5, "0 to 5"), (6, 10, "6 to 10"), (11, 20, "11 to 20"), (21, None, "21 or more"))
# Words that say nothing about a theme; what is left, counted across the period's learning, shows
# what recurs. A simple, explainable count, not a classifier.
STOPWORDS = frozenset("""a about after again all also an and any are as at be been before being between both but by
can could did do does doing done each for from had has have having he her here him his how i if in into is it its
itself just me more most my no not now of on once only or other our out over own same she should so some such than
that the their them then there these they this those through to too under until up very was we were what when where
which while who why will with would you your more less much many get got one two three""".split())


@dataclass(frozen=True)
class Period:
    start: date  # first day, inclusive
    end: date  # last day, inclusive

    def holds(self, moment: datetime | date) -> bool:
        day = moment.astimezone(LONDON).date() if isinstance(moment, datetime) else moment
        return self.start <= day <= self.end

    @property
    def label(self) -> str:
        return f"{self.start:%-d %B %Y} to {self.end:%-d %B %Y}"


@dataclass
class Table:
    slug: str
    title: str
    description: str
    columns: list[str]
    rows: list[list[str | int]] = field(default_factory=list)
    chart_column: int | None = 1  # the numeric column the chart draws, against the first column
    note: str = ""

    @property
    def chart(self) -> list[tuple[str, int]]:
        if self.chart_column is None:
            return []
        return [(str(r[0]), int(r[self.chart_column])) for r in self.rows if isinstance(r[self.chart_column], int)]


def working_days_between(start: date, end: date, holidays: Container[date]) -> int:
    """Working days after ``start`` up to and including ``end`` (a meeting the next working day is 1)."""
    days, day = 0, start
    while day < end:
        day += timedelta(days=1)
        days += is_working_day(day, holidays)
    return days


@dataclass(frozen=True, slots=True)
class HeldMeeting:
    held_on: date  # in London, where the period's days are counted
    outcome: str
    words: frozenset[str]  # the learning's words, each once, filler left out (learning themes)


@dataclass(slots=True)
class CaseFacts:
    """What the reports read of one case, folded from its events in stream order."""

    requested: tuple[date, str, str] | None = None  # the day (London), the agency (the producer), the reason
    meetings: list[HeldMeeting] = field(default_factory=list)
    actions: report.ActionFold = field(default_factory=report.ActionFold)
    stages: report.StageFold = field(default_factory=report.StageFold)

    def add(self, r: Recorded) -> None:
        e = r.payload
        if isinstance(e, RequestSubmitted) and self.requested is None:
            # The producer is the agency the request came from, stamped by intake from the subject.
            self.requested = _day(r.envelope.occurred_at), r.envelope.producer, e.reason.value
        elif isinstance(e, MeetingHeld):
            self.meetings.append(HeldMeeting(_day(e.held_at), e.outcome.value, learning_words(e.stages.learning)))
        self.actions.add(e)
        self.stages.add(r)


# The types the facts are folded from, by the name their subject ends in (the rest are not read);
# of those, the ones whose personal fields the facts read (the learning's words), opened with the
# case's key. The others are read with each personal field erased: no key fetched, nothing decrypted.
READS = frozenset({"RequestSubmitted", "MeetingHeld", "ActionRecorded", "ActionCompleted", "ActionOverdue",
                   "EscalationRaised", "EscalationStageAdvanced", "EscalationResolved"})
OPENS = frozenset({"MeetingHeld"})


def _day(moment: datetime) -> date:
    return moment.astimezone(LONDON).date()


def learning_words(text: str) -> frozenset[str]:
    # Interned: the same words recur across a partnership's meetings, and each is held once.
    return frozenset(sys.intern(w) for w in {w.strip("'-") for w in WORD.findall(text.lower())}
                     if w not in STOPWORDS)


def fold(cases: dict[str, CaseFacts], events: Iterable[Recorded]) -> dict[str, CaseFacts]:
    """Add these events (stream order) to each one's case; returns ``cases``."""
    for r in events:
        facts = cases.get(r.envelope.case_id)
        if facts is None:
            facts = cases[r.envelope.case_id] = CaseFacts()
        facts.add(r)
    return cases


def build(cases: Mapping[str, CaseFacts], period: Period, holidays: Container[date], today: date) -> list[Table]:
    facts = list(cases.values())
    return [by_agency(facts, period), to_meeting(facts, period, holidays), outcomes(facts, period),
            actions_on_time(facts, period, today), escalation_stages(facts, period, holidays, today),
            learning_themes(facts, period)]


def by_agency(cases: Iterable[CaseFacts], period: Period) -> Table:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for c in cases:
        if c.requested and period.holds(c.requested[0]):
            _, agency, reason = c.requested
            counts[agency][reason] += 1
    t = Table("by-agency", "Re-thinks by agency and reason",
              "Requests made in the period, by the requesting agency and the reason given.",
              ["Agency", "Total", *REASONS.values()])
    for agency in sorted(counts, key=lambda a: (-sum(counts[a].values()), a)):
        c = counts[agency]
        t.rows.append([agency, sum(c.values()), *(c[k] for k in REASONS)])
    if t.rows:
        t.rows.append(["All agencies", sum(int(r[1]) for r in t.rows),
                       *(sum(int(r[i]) for r in t.rows) for i in range(2, 2 + len(REASONS)))])
        t.chart_column = 1
    return t


def to_meeting(cases: Iterable[CaseFacts], period: Period, holidays: Container[date]) -> Table:
    days: list[int] = []
    for c in cases:
        held = c.meetings[0] if c.meetings else None
        if c.requested and held and period.holds(held.held_on):
            days.append(working_days_between(c.requested[0], held.held_on, holidays))
    t = Table("to-meeting", "Working days from request to meeting",
              "First meetings held in the period, by the working days (England and Wales) since the request.",
              ["Working days", "Meetings"])
    for low, high, label in DAY_BANDS:
        t.rows.append([label, sum(1 for d in days if d >= low and (high is None or d <= high))])
    if days:
        t.note = (f"{len(days)} meeting{'s' if len(days) != 1 else ''}: median {statistics.median(days):g} working days, "
                  f"shortest {min(days)}, longest {max(days)}.")
    return t


def outcomes(cases: Iterable[CaseFacts], period: Period) -> Table:
    counts: Counter[str] = Counter(m.outcome for c in cases for m in c.meetings if period.holds(m.held_on))
    t = Table("outcomes", "Outcomes", "Meetings held in the period, by outcome.", ["Outcome", "Meetings"])
    t.rows = [[label, counts[key]] for key, label in OUTCOMES.items()]
    return t


def actions_on_time(cases: Iterable[CaseFacts], period: Period, today: date) -> Table:
    """Actions due in the period, judged as they stand today."""
    counts: Counter[str] = Counter()
    for c in cases:
        for a in c.actions.lines(today):
            if not period.holds(a.due_date):
                continue
            if a.completed_on is not None:
                counts["on time" if a.completed_on <= a.due_date else "late"] += 1
            else:
                counts["overdue" if a.due_date < today else "open"] += 1
    t = Table("actions", "Actions completed on time", "Actions due in the period, as they stand today.",
              ["Actions", "Number"])
    t.rows = [["Completed on time", counts["on time"]], ["Completed late", counts["late"]],
              ["Not completed, overdue", counts["overdue"]], ["Not completed, not yet due", counts["open"]]]
    done = counts["on time"] + counts["late"]
    if done:
        t.note = f"{round(100 * counts['on time'] / done)}% of the completed actions were completed on time."
    return t


def escalation_stages(cases: Iterable[CaseFacts], period: Period, holidays: Container[date],
                      today: date) -> Table:
    entered: Counter[int] = Counter()
    names: dict[int, str] = {}
    spent: dict[int, list[int]] = defaultdict(list)
    missed: Counter[int] = Counter()
    for c in cases:
        for s in c.stages.lines(today):
            if not period.holds(s.entered_at):
                continue
            entered[s.stage] += 1
            names.setdefault(s.stage, s.stage_name)
            left = s.left_at.astimezone(LONDON).date() if s.left_at else today
            spent[s.stage].append(working_days_between(s.entered_at.astimezone(LONDON).date(), left, holidays))
            missed[s.stage] += s.past_deadline
    t = Table("escalations", "Escalations by stage and time spent at each",
              "Escalation stages entered in the period; time is counted in working days up to when the stage "
              "moved on, or to today for a stage still open.",
              ["Stage", "Entered", "Median working days at the stage", "Longest", "Deadline missed"])
    t.rows = [[f"{stage}: {names[stage]}", entered[stage], f"{statistics.median(spent[stage]):g}",
               max(spent[stage]), missed[stage]] for stage in sorted(entered)]
    return t


WORD = re.compile(r"[a-z][a-z'-]{2,}")


def learning_themes(cases: Iterable[CaseFacts], period: Period, top: int = 10) -> Table:
    # Each word once per meeting (``learning_words``): the count is of meetings.
    words: Counter[str] = Counter(w for c in cases for m in c.meetings if period.holds(m.held_on) for w in m.words)
    t = Table("learning", "Learning themes",
              "Words that recur in the learning recorded at stage 5 of the meetings held in the period, by the "
              "number of meetings whose learning uses them.", ["Word", "Meetings"])
    t.rows = [[w, n] for w, n in sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))[:top] if n > 1]
    if not t.rows and words:
        t.note = "No word recurs across meetings in this period yet."
    return t


def default_period(today: date) -> Period:
    """The last twelve months, ending today."""
    try:
        start = today.replace(year=today.year - 1) + timedelta(days=1)
    except ValueError:  # 29 February
        start = today.replace(year=today.year - 1, day=28) + timedelta(days=1)
    return Period(start, today)
