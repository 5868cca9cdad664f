"""The auditor's case report: chronology, state as of a moment, and the JSON/CSV/HTML exports (no server)."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser

import pytest

from rethink.shared.cli import report, report_html
from rethink.shared.envelope import Origin, Recorded, stamp
from rethink.shared.events import (
    ActionCompleted,
    ActionItem,
    ActionOverdue,
    ActionRecorded,
    Attendee,
    CaseClosed,
    ChecksConfirmed,
    EscalationRaised,
    EscalationResolved,
    EscalationStageAdvanced,
    EscalationTrigger,
    FacilitatorAssigned,
    MeetingHeld,
    MeetingMode,
    MeetingScheduled,
    Person,
    Perspective,
    RequestSubmitted,
    Stages,
)
from tests.support import recorded, request_payload

CASE = "RT-ABCDEFGHJK"
HOSTILE = '<script>alert("x")</script>'
OWNER = Person(name="Alex Social", agency="Children's Social Care", email="sw@council.example.org")
HEALTH = Person(name="Jo Health", agency="Community Health", email="hv@health.example.org")


def at(day: int, hour: int = 9, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def submitted(**overrides) -> RequestSubmitted:
    fields = {k: v for k, v in request_payload(**overrides).items() if k != "immediate_risk"}
    return RequestSubmitted.model_validate(fields)


def item(action_id: str, due: date, owner: Person = OWNER, description: str = "Share the attendance plan.") -> ActionItem:
    return ActionItem(action_id=action_id, description=description, owner=owner, due_date=due)


def held(*items: ActionItem, learning: str = "Talk earlier.") -> MeetingHeld:
    return MeetingHeld(
        meeting_id="M-1", held_at=at(10, 10), attendees=[Attendee(name="Jo Health", agency="Community Health")],
        stages=Stages(strengths="Engaged parent.", impact="Missed school.", ways_forward="Joint visit.",
                      learning=learning, perspectives=[Perspective(professional="Jo Health", agency="Community Health",
                                                                   feelings="Worried.", needs="A shared plan.")]),
        outcome="partly_resolved", actions=list(items))


def late(payload, seq: int, occurred: datetime, recorded_at: datetime, actor: str = "test") -> Recorded:
    """An event that happened at ``occurred`` but reached the log only at ``recorded_at``."""
    env = stamp(payload, CASE, Origin("meeting", actor, uuid.uuid4()), occurred, recorded_at, uuid.uuid4())
    return Recorded(envelope=env, seq=seq, payload=payload)


A1, A2 = item("M-1-A1", date(2026, 3, 17)), item("M-1-A2", date(2026, 3, 20), owner=HEALTH)


def whole_case() -> list[Recorded]:
    """A case from request to closure through a two-stage escalation; A1's completion reached the log late."""
    steps = [
        (submitted(), at(2), "intake"),
        (ChecksConfirmed(checks=submitted().checks), at(2, 10), "intake"),
        (FacilitatorAssigned(facilitator_id="F-1", facilitator_name="Fran Facilitator",
                             facilitator_email="fran@pscp.example.org"), at(2, 11), "scheduling"),
        (MeetingScheduled(meeting_id="M-1", facilitator_id="F-1", starts_at=at(10, 10), duration_minutes=90,
                          mode=MeetingMode.VIRTUAL, invitees=[OWNER, HEALTH]), at(3), "scheduling"),
        (held(A1, A2), at(10, 12), "meeting"),
        (ActionRecorded(action_id=A1.action_id, meeting_id="M-1", description=A1.description, owner=A1.owner,
                        due_date=A1.due_date), at(10, 12), "meeting"),
        (ActionRecorded(action_id=A2.action_id, meeting_id="M-1", description=A2.description, owner=A2.owner,
                        due_date=A2.due_date), at(10, 12), "meeting"),
    ]
    history = [recorded(p, case_id=CASE, seq=i + 1, producer=producer, at=when)
               for i, (p, when, producer) in enumerate(steps)]
    history.append(late(ActionCompleted(action_id=A1.action_id, completed_on=date(2026, 3, 16)), 8,
                        occurred=at(16), recorded_at=at(18)))
    later = [
        (ActionOverdue(action_id=A2.action_id, due_date=A2.due_date, as_of=date(2026, 3, 21)), at(21, 6), "meeting"),
        (EscalationRaised(escalation_id="E-1", trigger=EscalationTrigger.ACTION_OVERDUE, stage=1,
                          stage_name="Practitioner to practitioner", holder="Practitioners", deadline=date(2026, 3, 25),
                          reason="A2 overdue."), at(21, 7), "escalation"),
        (EscalationStageAdvanced(escalation_id="E-1", from_stage=1, stage=2, stage_name="Manager to manager",
                                 holder="Team managers", deadline=date(2026, 4, 1), reason="Still stuck."),
         at(27), "escalation"),
        (EscalationResolved(escalation_id="E-1", stage=2, resolution="Joint plan agreed."), at(30), "escalation"),
        (CaseClosed(reason="escalation_resolved"), at(30), "escalation"),
    ]
    history += [recorded(p, case_id=CASE, seq=9 + i, producer=producer, at=when)
                for i, (p, when, producer) in enumerate(later)]
    return history


# --- parsing the moment and the case id ----------------------------------------------------------

def test_a_date_alone_means_the_end_of_that_day_in_utc():
    assert report.parse_as_of("2026-03-17") == datetime(2026, 3, 17, 23, 59, 59, 999999, tzinfo=UTC)


def test_a_time_with_an_offset_is_converted_to_utc():
    assert report.parse_as_of("2026-03-17T10:00:00+01:00") == at(17, 9)
    assert report.parse_as_of("2026-03-17T09:00:00Z") == at(17, 9)


@pytest.mark.parametrize("text, says", [("2026-03-17T10:00:00", "no UTC offset"), ("yesterday", "not a date"),
                                        ("2026-13-01", "not a date")])
def test_an_as_of_without_offset_or_not_a_time_is_refused_with_an_example(text, says):
    with pytest.raises(ValueError, match=says) as exc:
        report.parse_as_of(text)
    assert "2026-03-01T17:00:00+00:00" in str(exc.value)


@pytest.mark.parametrize("case_id", ["RT-ABCDEFGHJK", "RT-2345672345"])
def test_a_case_id_is_accepted_as_given(case_id):
    assert report.check_case_id(case_id) == case_id


@pytest.mark.parametrize("case_id", ["*", ">", "RT-ABCDEFGHJ*", "RT-ABCDEFGHJK.>", "rt-abcdefghjk", ""])
def test_a_case_id_that_could_widen_the_subject_filter_is_refused(case_id):
    with pytest.raises(ValueError, match="not a case id"):
        report.check_case_id(case_id)


# --- the chronology ------------------------------------------------------------------------------

def test_the_chronology_lists_every_event_in_stream_order_with_who_when_and_what_changed():
    rows = report.chronology(whole_case())

    assert [r.seq for r in rows] == list(range(1, 14))
    first = rows[0]
    assert (first.type, first.producer, first.actor) == ("RequestSubmitted", "intake", "test")
    assert first.occurred_at == first.recorded_at == at(2)
    assert first.summary.startswith("request for CSC-2026-0042 (disagreement)")
    assert rows[7].type == "ActionCompleted" and rows[7].recorded_at == at(18) and rows[7].occurred_at == at(16)
    assert rows[-1].summary == "case closed (escalation_resolved)"
    assert not any(r.late for r in rows)


def test_as_of_keeps_what_had_occurred_by_then_and_marks_what_was_recorded_after_it():
    rows = report.chronology(whole_case(), as_of=at(17))

    assert [r.seq for r in rows] == list(range(1, 9))
    assert [r.seq for r in rows if r.late] == [8]


def test_as_of_before_the_request_shows_nothing_and_a_case_not_yet_requested():
    assert report.chronology(whole_case(), as_of=at(1)) == []
    assert report.case_state(whole_case(), as_of=at(1))["status"] == "not yet requested"


def test_a_naive_as_of_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        report.chronology(whole_case(), as_of=datetime(2026, 3, 17))


# --- the state as of a moment --------------------------------------------------------------------

@pytest.mark.parametrize("as_of, status", [
    (at(2, 9), "awaiting checks"),
    (at(2, 10), "checks confirmed"),
    (at(4), "meeting scheduled"),
    (at(12), "meeting held (partly_resolved)"),
    (at(22), "escalation stage 1"),
    (at(28), "escalation stage 2"),
    (at(31), "closed"),
])
def test_the_status_follows_the_case_through_its_life(as_of, status):
    assert report.case_state(whole_case(), as_of=as_of)["status"] == status


def test_a_request_without_the_checks_is_awaiting_them():
    no = {"answer": False}
    history = [recorded(submitted(checks={"raised_with_network": no, "conversation_had": no,
                                          "hips_policy_considered": no}), case_id=CASE, at=at(2))]
    state = report.case_state(history)
    assert state["status"] == "awaiting checks"
    assert state["case_reference"] == "CSC-2026-0042"


def test_the_state_as_of_a_day_shows_open_actions_and_none_overdue_before_their_due_dates():
    state = report.case_state(whole_case(), as_of=report.parse_as_of("2026-03-17"))

    assert state["as_of"] == "2026-03-17T23:59:59.999999+00:00"
    assert state["open_actions"] == [A2.action_id]  # A1's completion had occurred, though recorded later
    assert state["overdue_actions"] == []
    assert state["recorded_late"] == 1
    assert state["events"] == 8
    assert state["facilitator_id"] == "F-1"


def test_an_open_action_past_its_due_day_is_overdue_as_of_then_even_before_it_was_reported():
    state = report.case_state(whole_case(), as_of=report.parse_as_of("2026-03-21T00:00:00+00:00"))
    assert state["overdue_actions"] == [A2.action_id]
    assert state["escalation"] is None  # raised at 07:00 that day


def test_an_action_due_on_the_as_of_day_is_not_yet_overdue():
    assert report.case_state(whole_case(), as_of=report.parse_as_of("2026-03-20"))["overdue_actions"] == []


def test_the_open_escalation_is_shown_with_its_holder_and_deadline():
    state = report.case_state(whole_case(), as_of=at(28))
    assert state["escalation"] == {"escalation_id": "E-1", "stage": 2, "stage_name": "Manager to manager",
                                   "holder": "Team managers", "deadline": "2026-04-01"}


def test_a_closed_case_has_its_reason_and_no_open_escalation():
    state = report.case_state(whole_case())
    assert (state["status"], state["closed_reason"], state["escalation"]) == ("closed", "escalation_resolved", None)
    assert state["as_of"] is None


def test_without_as_of_overdue_is_judged_by_today_or_else_only_by_what_was_reported():
    up_to_meeting = whole_case()[:7]
    assert report.case_state(up_to_meeting)["overdue_actions"] == []
    assert report.case_state(up_to_meeting, today=date(2026, 3, 18))["overdue_actions"] == [A1.action_id]
    assert report.case_state(whole_case()[:9])["overdue_actions"] == [A2.action_id]  # ActionOverdue recorded


def test_actions_are_known_from_the_meeting_before_their_action_recorded_events():
    lines = report.actions(whole_case()[:5])
    assert [(a.action_id, a.owner_agency, a.due_date) for a in lines] == [
        (A1.action_id, "Children's Social Care", date(2026, 3, 17)), (A2.action_id, "Community Health", date(2026, 3, 20))]


def test_each_action_has_owner_due_and_completed_dates_and_a_status():
    lines = {a.action_id: a for a in report.actions(whole_case())}
    assert lines[A1.action_id].completed_on == date(2026, 3, 16)
    assert (lines[A1.action_id].status, lines[A1.action_id].overdue) == ("completed", False)
    assert (lines[A2.action_id].status, lines[A2.action_id].overdue) == ("overdue", True)


def test_an_action_completed_after_its_due_date_stays_marked_overdue():
    history = whole_case()[:7] + [recorded(ActionCompleted(action_id=A1.action_id, completed_on=date(2026, 3, 19)),
                                           case_id=CASE, seq=8, at=at(19))]
    line = report.actions(history)[0]
    assert (line.status, line.overdue) == ("completed late (was overdue)", True)


def test_each_escalation_stage_records_its_holder_deadline_and_when_and_how_it_moved_on():
    first, second = report.escalation_stages(whole_case())

    assert (first.stage, first.holder, first.deadline) == (1, "Practitioners", date(2026, 3, 25))
    assert (first.entered_at, first.left_at, first.moved) == (at(21, 7), at(27), "advanced to stage 2")
    assert first.past_deadline  # moved on the 27th, two days after its deadline
    assert (second.entered_at, second.left_at, second.moved) == (at(27), at(30), "resolved")
    assert not second.past_deadline


def test_an_open_stage_is_past_deadline_when_the_as_of_day_is_after_it():
    [stage] = report.escalation_stages(whole_case(), as_of=report.parse_as_of("2026-03-26"))
    assert (stage.left_at, stage.moved, stage.past_deadline) == (None, "open", True)


def test_timings_run_from_request_to_the_meeting_held_and_from_it_to_closure():
    t = report.timings(whole_case())
    assert t["request_to_meeting"] == (at(2), at(10, 10), timedelta(days=8, hours=1))
    assert t["meeting_to_resolution"] == (at(10, 10), at(30), timedelta(days=19, hours=23))
    assert report.timings(whole_case(), as_of=at(12))["meeting_to_resolution"] is None


@pytest.mark.parametrize("td, text", [(timedelta(days=8, hours=1), "8 days 1 hour"),
                                      (timedelta(minutes=61), "1 hour 1 minute"),
                                      (timedelta(seconds=20), "under a minute"),
                                      (timedelta(hours=-2), "-2 hours")])
def test_durations_read_as_days_hours_and_minutes(td, text):
    assert report.duration(td) == text


# --- JSON and CSV --------------------------------------------------------------------------------

def test_json_is_a_list_of_events_with_ids_times_people_summary_data_and_late_flag():
    parsed = json.loads(report.to_json(report.chronology(whole_case(), as_of=at(17))))

    assert len(parsed) == 8
    assert set(parsed[0]) == {"seq", "event_id", "type", "occurred_at", "recorded_at", "producer", "actor",
                              "correlation_id", "causation_id", "summary", "data", "late", "schema_version",
                              "stored_data"}
    assert parsed[0]["occurred_at"] == "2026-03-02T09:00:00+00:00"
    assert parsed[0]["data"]["case_reference"] == "CSC-2026-0042"
    assert (parsed[0]["schema_version"], parsed[0]["stored_data"]) == (1, None)  # read as written: nothing upcast
    assert [e["seq"] for e in parsed if e["late"]] == [8]
    assert parsed[7]["recorded_at"] == "2026-03-18T09:00:00+00:00"


def test_csv_has_a_header_and_one_row_per_event_in_order():
    rows = list(csv.reader(io.StringIO(report.to_csv(report.chronology(whole_case(), as_of=at(17))))))

    assert rows[0] == ["seq", "occurred_at", "recorded_at", "type", "producer", "actor", "summary", "event_id", "late"]
    assert [r[0] for r in rows[1:]] == [str(n) for n in range(1, 9)]
    assert rows[8][1:4] == ["2026-03-16T09:00:00+00:00", "2026-03-18T09:00:00+00:00", "ActionCompleted"]
    assert rows[8][-1] == "true" and rows[1][-1] == "false"


@pytest.mark.parametrize("actor", ['=HYPERLINK("http://evil.example.org","x")', "+1+1", "-1+1", "@SUM(A1)"])
def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_defused(actor):
    history = [late(ChecksConfirmed(checks=submitted().checks), 1, at(2), at(2), actor=actor)]
    [header, row] = list(csv.reader(io.StringIO(report.to_csv(report.chronology(history)))))
    assert row[header.index("actor")] == "'" + actor


# --- the HTML report -----------------------------------------------------------------------------

class Page(HTMLParser):
    """What a browser would build: elements with their attributes, and the visible text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.section: str | None = None
        self.rows: dict[str | None, int] = {}  # table body rows per section
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "section":
            self.section = dict(attrs).get("id")
        elif tag == "td" and self.tags[-2][0] == "tr":
            self.rows[self.section] = self.rows.get(self.section, 0) + 1

    def handle_data(self, data):
        self.text.append(data)

    def ids(self) -> set[str]:
        return {a["id"] for _, a in self.tags if a.get("id")}

    def with_class(self, cls: str) -> list[dict]:
        return [a for _, a in self.tags if cls in (a.get("class") or "").split()]

    @property
    def visible(self) -> str:
        return " ".join(" ".join(self.text).split())


def hostile_case() -> list[Recorded]:
    """Agencies' data carrying markup: in free text, an agency name and an actor."""
    rogue = Person(name="Rogue", agency=f"Agency {HOSTILE}", email="rogue@agency.example.org")
    bad = item("M-1-A1", date(2026, 3, 17), owner=rogue, description=f"Do it {HOSTILE}")
    history = whole_case()[:4]
    history.append(late(held(bad, learning=f"Learn {HOSTILE}"), 5, at(10, 12), at(10, 12), actor=f"x{HOSTILE}"))
    return history


def test_the_html_report_is_one_page_with_the_case_its_timeline_timings_actions_and_escalation():
    text = report_html.to_html(report.build_report(CASE, whole_case(), today=date(2026, 4, 2)))
    page = Page(text)

    assert text.startswith("<!DOCTYPE html>")
    assert {"state", "timings", "actions", "escalation", "timeline"} <= page.ids()
    assert CASE in page.visible and "case reference CSC-2026-0042" in page.visible
    assert "Request to meeting 8 days 1 hour" in page.visible
    assert "Meeting to resolution 19 days 23 hours" in page.visible
    assert "Practitioners" in page.visible and "Team managers" in page.visible
    assert "advanced to stage 2" in page.visible and "past deadline" in page.visible
    assert page.rows == {"timeline": 13, "actions": 2, "escalation": 2}


def test_overdue_actions_stand_out_by_class_and_by_the_word_overdue():
    page = Page(report_html.to_html(report.build_report(CASE, whole_case(), today=date(2026, 4, 2))))

    flagged = page.with_class("overdue")
    assert len(flagged) == 2  # action A2, and escalation stage 1 which moved after its deadline
    assert "overdue" in page.visible
    assert "Community Health" in page.visible and "2026-03-20" in page.visible


def test_the_html_report_as_of_a_moment_marks_events_recorded_late_and_shows_the_state_then():
    page = Page(report_html.to_html(report.build_report(CASE, whole_case(), as_of=at(17))))

    assert len(page.with_class("late")) == 1
    assert "recorded late" in page.visible
    assert "status meeting held (partly_resolved)" in page.visible
    assert "as of 2026-03-17T09:00:00+00:00" in page.visible
    assert "Meeting to resolution not resolved" in page.visible


def test_the_html_report_is_self_contained_and_printable():
    text = report_html.to_html(report.build_report(CASE, whole_case()))
    page = Page(text)

    assert {t for t, _ in page.tags} & {"script", "link", "img", "iframe", "object"} == set()
    assert not [a for _, a in page.tags if a.get("src") or a.get("href")]
    assert "@media print" in text and "<style>" in text


def test_every_value_in_the_html_report_is_escaped():
    text = report_html.to_html(report.build_report(CASE, hostile_case()))
    page = Page(text)

    assert "<script" not in text.lower()
    assert "script" not in {t for t, _ in page.tags}
    assert "&lt;script&gt;" in text
    # Shown, as text: the action agreed, its owner agency and the actor.
    assert f"Do it {HOSTILE}" in page.visible
    assert f"Agency {HOSTILE}" in page.visible
    assert f"x{HOSTILE}" in page.visible
    # The meeting's free text (stages) is not copied into the report at all.
    assert "Learn" not in page.visible


def test_the_terminal_table_shows_markup_and_escape_sequences_from_agencies_literally():
    history = [late(ChecksConfirmed(checks=submitted().checks), 1, at(2), at(2), actor="[red]x[/red]\x1b[2J")]
    text = report.table_text(report.build_report(CASE, history), width=200)

    assert "[red]x[/red]" in text
    assert "\x1b" not in text
    assert "status" in text and "checks confirmed" in text
    assert "late" not in text  # without --as-of nothing can be late


def test_the_terminal_table_as_of_a_moment_marks_late_events():
    text = report.table_text(report.build_report(CASE, whole_case(), as_of=at(17)), width=240)
    [line] = [ln for ln in text.splitlines() if "ActionCompleted" in ln]
    assert "recorded late" in line
    assert re.search(r"status\s+meeting held \(partly_resolved\)", text)
