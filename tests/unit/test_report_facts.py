"""The console's reports fold each case's events into a few facts and keep those, not the events."""

from __future__ import annotations

import dataclasses
from datetime import date

from pydantic import BaseModel

from rethink.console.reports import CaseFacts, Period, build, fold
from rethink.shared.cli import report
from rethink.shared.envelope import Recorded
from tests.unit.test_projection_batches import events

PERIOD = Period(date(2026, 1, 1), date(2027, 12, 31))
TODAY = date(2026, 12, 22)  # one action overdue, one not yet due


def test_facts_folded_a_few_events_at_a_time_give_the_reports_of_the_whole_log_at_once():
    log = events()
    whole = build(fold({}, log), PERIOD, (), TODAY)
    for size in (1, 3, 7):
        cases: dict[str, CaseFacts] = {}
        for i in range(0, len(log), size):  # as the console tops up, read by read
            fold(cases, log[i:i + size])
        assert build(cases, PERIOD, (), TODAY) == whole
    figures = {t.slug: t.rows for t in whole}
    assert figures["outcomes"] != [[label, 0] for label, _ in figures["outcomes"]]  # something was counted
    assert any(row[1] for row in figures["actions"]) and figures["escalations"] and figures["by-agency"]


def test_the_actions_and_stages_are_counted_as_the_auditors_report_counts_them():
    log = events()
    cases = fold({}, log)
    for case_id, facts in cases.items():
        history = [r for r in log if r.envelope.case_id == case_id]
        assert facts.actions.lines(TODAY) == report.actions(history, today=TODAY)
        assert facts.stages.lines(TODAY) == report.escalation_stages(history, today=TODAY)
        # Asked again for another day, the fold answers for that day: nothing was left marked.
        assert facts.actions.lines(date(2027, 6, 1)) == report.actions(history, today=date(2027, 6, 1))
    assert any(facts.actions.lines(TODAY) for facts in cases.values())
    assert any(facts.stages.lines(TODAY) for facts in cases.values())


def _held(value: object, seen: set[int]) -> list[object]:
    """Every object reachable from ``value`` through fields, lists, tuples, sets and dicts."""
    if id(value) in seen or isinstance(value, (str, bytes, int, float, bool, type(None), date)):
        return []
    seen.add(id(value))
    out = [value]
    if isinstance(value, dict):
        children = list(value.values())
    elif isinstance(value, (list, tuple, set, frozenset)):
        children = list(value)
    elif dataclasses.is_dataclass(value):  # slots, most of them: no __dict__
        children = [getattr(value, f.name) for f in dataclasses.fields(value)]
    else:
        children = list(vars(value).values()) if hasattr(value, "__dict__") else []
    for child in children:
        out += _held(child, seen)
    return out


def test_the_facts_hold_no_event_nor_any_part_of_one():
    cases = fold({}, events())
    held = _held(cases, set())
    assert not [type(o).__name__ for o in held if isinstance(o, (Recorded, BaseModel))]
    assert len(held) > 3 * len(cases)  # the walk did reach into the facts
