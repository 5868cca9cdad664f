"""The partnership's figures for a period, folded from the event log.

Pure: the whole log (``Recorded`` events, stream order) and a period in, tables out. Each table
is what the page shows, what its chart draws and what its CSV holds, so the three always agree.
Per-case facts (actions, escalation stages) come from the auditor's report
(``rethink.shared.cli.report``), so the console and the CLI count the same way.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Container, Iterable
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


def by_case(log: Iterable[Recorded]) -> dict[str, list[Recorded]]:
    cases: dict[str, list[Recorded]] = defaultdict(list)
    for r in log:
        cases[r.envelope.case_id].append(r)
    return cases


def build(log: Iterable[Recorded], period: Period, holidays: Container[date], today: date) -> list[Table]:
    cases = by_case(log)
    return [by_agency(cases, period), to_meeting(cases, period, holidays), outcomes(cases, period),
            actions_on_time(cases, period, today), escalation_stages(cases, period, holidays, today),
            learning_themes(cases, period)]


def _request(history: list[Recorded]) -> tuple[Recorded, RequestSubmitted] | None:
    return next(((r, r.payload) for r in history if isinstance(r.payload, RequestSubmitted)), None)


def by_agency(cases: dict[str, list[Recorded]], period: Period) -> Table:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for history in cases.values():
        found = _request(history)
        if found and period.holds(found[0].envelope.occurred_at):
            # The producer is the agency the request came from, stamped by intake from the subject.
            counts[found[0].envelope.producer][found[1].reason.value] += 1
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


def to_meeting(cases: dict[str, list[Recorded]], period: Period, holidays: Container[date]) -> Table:
    days: list[int] = []
    for history in cases.values():
        found = _request(history)
        held = next((r.payload for r in history if isinstance(r.payload, MeetingHeld)), None)
        if found and held and period.holds(held.held_at):
            asked = found[0].envelope.occurred_at.astimezone(LONDON).date()
            days.append(working_days_between(asked, held.held_at.astimezone(LONDON).date(), holidays))
    t = Table("to-meeting", "Working days from request to meeting",
              "First meetings held in the period, by the working days (England and Wales) since the request.",
              ["Working days", "Meetings"])
    for low, high, label in DAY_BANDS:
        t.rows.append([label, sum(1 for d in days if d >= low and (high is None or d <= high))])
    if days:
        t.note = (f"{len(days)} meeting{'s' if len(days) != 1 else ''}: median {statistics.median(days):g} working days, "
                  f"shortest {min(days)}, longest {max(days)}.")
    return t


def outcomes(cases: dict[str, list[Recorded]], period: Period) -> Table:
    counts: Counter[str] = Counter()
    for history in cases.values():
        for r in history:
            if isinstance(r.payload, MeetingHeld) and period.holds(r.payload.held_at):
                counts[r.payload.outcome.value] += 1
    t = Table("outcomes", "Outcomes", "Meetings held in the period, by outcome.", ["Outcome", "Meetings"])
    t.rows = [[label, counts[key]] for key, label in OUTCOMES.items()]
    return t


def actions_on_time(cases: dict[str, list[Recorded]], period: Period, today: date) -> Table:
    """Actions due in the period, judged as they stand today."""
    counts: Counter[str] = Counter()
    for history in cases.values():
        for a in report.actions(history, today=today):
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


def escalation_stages(cases: dict[str, list[Recorded]], period: Period, holidays: Container[date],
                      today: date) -> Table:
    entered: Counter[int] = Counter()
    names: dict[int, str] = {}
    spent: dict[int, list[int]] = defaultdict(list)
    missed: Counter[int] = Counter()
    for history in cases.values():
        for s in report.escalation_stages(history, today=today):
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


def learning_themes(cases: dict[str, list[Recorded]], period: Period, top: int = 10) -> Table:
    words: Counter[str] = Counter()
    for history in cases.values():
        for r in history:
            if isinstance(r.payload, MeetingHeld) and period.holds(r.payload.held_at):
                seen = {w.strip("'-") for w in WORD.findall(r.payload.stages.learning.lower())}
                words.update(w for w in seen if w not in STOPWORDS)  # once per meeting: how many meetings
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
