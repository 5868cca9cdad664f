"""Scheduling's live reads (a facilitator's caseload, the reminders) are of the open work only.

The reminder job and each assignment run on the service's event loop; read as whole-table scans,
a year of closed cases made the reminder job take a second there (``tests.benchmarks.growth``).
"""

from __future__ import annotations

import json

from sqlalchemy import func, insert, select

from rethink.scheduling import projection as p
from rethink.scheduling.reminders import ActionItem, MeetingItem, StageItem
from rethink.shared.events import FROM_LOG, MeetingMode, Person
from tests.benchmarks.growth import _rows, fill


def _write(conn, rows: list[dict]) -> None:
    tables = {"case": p.cases, "meeting": p.meetings, "actions": p.actions, "escalation": p.escalations}
    for key, table in tables.items():
        values = [v for r in rows for v in (r[key] if isinstance(r[key], list) else [r[key]])]
        conn.execute(insert(table), values)


def _varied() -> tuple[list[dict], list[str]]:
    """Cases in every state the reminders tell apart; and the ids of those erased."""
    rows = [_rows(n, closed=False) for n in range(8)]
    rows[1]["case"]["facilitator_id"] = None  # not yet assigned: no meeting reminder, the stage still has people
    rows[2]["meeting"]["status"] = "held"  # held: no meeting reminder; its invitees still hear of the stage
    rows[3]["actions"][0]["completed"] = True  # one action done, one open
    rows[3]["escalation"]["resolved"] = True
    rows[4]["case"]["facilitator_email"] = None  # the stage reminds the invitees only
    rows[5]["case"]["closed"] = True  # closed, with an open action and stage: history, not work
    earlier = dict(rows[6]["meeting"], meeting_id="M-earlier", status="cancelled", seq=1,
                   invitees=json.dumps([{"name": "Someone Earlier", "agency": "School",
                                         "email": "earlier@school.example.org"}]))
    rows.append({"case": [], "meeting": earlier, "actions": [], "escalation": []})
    return rows, [rows[7]["case"]["case_id"]]


def _scan_of_every_row(conn) -> list:
    """The reminders' items as the service read them before: every row of every table, filtered here."""
    erased = {r.case_id for r in conn.execute(select(p.erased))}
    open_cases = {c["case_id"]: c for c in conn.execute(select(p.cases)).mappings()
                  if not c["closed"] and c["case_id"] not in erased}
    invitees: dict[str, tuple[Person, ...]] = {}
    items: list = []
    for m in conn.execute(select(p.meetings).order_by(p.meetings.c.seq)).mappings():
        people = tuple(Person.model_validate(x, context=FROM_LOG) for x in json.loads(m["invitees"]))
        invitees[m["case_id"]] = people
        case = open_cases.get(m["case_id"])
        if case and m["status"] in p.ACTIVE and case["facilitator_id"]:
            items.append(MeetingItem(m["case_id"], case["case_reference"], m["meeting_id"], m["starts_at"],
                                     m["duration_minutes"], MeetingMode(m["mode"]), m["venue"], people,
                                     case["facilitator_name"], case["facilitator_email"]))
    for a in conn.execute(select(p.actions)).mappings():
        case = open_cases.get(a["case_id"])
        if case and not a["completed"]:
            items.append(ActionItem(a["case_id"], case["case_reference"], a["action_id"], a["meeting_id"],
                                    Person.model_validate(json.loads(a["owner"]), context=FROM_LOG),
                                    a["due_date"], case["facilitator_name"] or "", case["facilitator_email"] or ""))
    for s in conn.execute(select(p.escalations)).mappings():
        case = open_cases.get(s["case_id"])
        if not case or s["resolved"]:
            continue
        people = ([Person.model_validate({"name": case["facilitator_name"], "agency": "Re-think facilitator",
                                          "email": case["facilitator_email"]}, context=FROM_LOG)]
                  if case["facilitator_email"] else [])
        people += invitees.get(s["case_id"], ())
        if people:
            items.append(StageItem(s["case_id"], case["case_reference"], s["escalation_id"], s["stage"],
                                   s["stage_name"], s["holder"], s["deadline"], tuple(people)))
    return items


def _key(item) -> tuple:
    return type(item).__name__, item.case_id, getattr(item, "action_id", ""), getattr(item, "meeting_id", "")


def test_the_reminders_items_are_what_a_scan_of_every_row_finds(projection_db, monkeypatch):
    monkeypatch.setattr(p, "_IDS_AT_ONCE", 3)  # the open cases read a few at a time, as a large caseload is
    store = projection_db("scheduling")
    rows, erased = _varied()
    with store.engine.begin() as conn:
        _write(conn, rows)
        conn.execute(insert(p.erased), [{"case_id": c} for c in erased])
    with store.engine.connect() as conn:
        found, expected = p.reminder_items(conn), _scan_of_every_row(conn)

    assert sorted(found, key=_key) == sorted(expected, key=_key)
    assert {type(i).__name__ for i in found} == {"MeetingItem", "ActionItem", "StageItem"}
    assert not {i.case_id for i in found} & {rows[5]["case"]["case_id"], *erased}  # closed and erased: none
    meetings = [i for i in found if isinstance(i, MeetingItem)]
    assert meetings == sorted(meetings, key=lambda i: int(i.case_id[3:]))  # in log order, as before
    stage_4 = next(i for i in found if isinstance(i, StageItem) and i.case_id == rows[4]["case"]["case_id"])
    assert [str(x.email) for x in stage_4.recipients] == [f"person{k}.case4@council.example.org" for k in range(5)]


def test_a_caseload_counts_open_cases_only(projection_db):
    store = projection_db("scheduling")
    with store.engine.begin() as conn:
        fill(conn, open_cases=7, closed_cases=40)
    with store.engine.connect() as conn:
        load = p.load_by_facilitator(conn)
        assigned_open = conn.execute(select(func.count()).select_from(p.cases).where(
            p.cases.c.closed.is_(False), p.cases.c.facilitator_id.is_not(None))).scalar()
    assert sum(load.values()) == assigned_open == 7


def test_the_facilitator_of_each_case_is_read_by_its_id(projection_db, monkeypatch):
    monkeypatch.setattr(p, "_IDS_AT_ONCE", 3)  # the ids asked go a few at a time, as the console's 2,000 do
    store = projection_db("scheduling")
    rows, _ = _varied()
    with store.engine.begin() as conn:
        _write(conn, rows)
    cases = [r["case"] for r in rows if r["case"]]
    unknown = "RT-ZZZZZZZZZZ"
    asked = [c["case_id"] for c in cases] + [cases[0]["case_id"], unknown]  # a repeat, and a case never recorded
    with store.engine.connect() as conn:
        found = p.assigned(conn, asked)
        everyone = {r.case_id: r.facilitator_id for r in conn.execute(select(p.cases))}

    assert found == {case_id: fac for case_id, fac in everyone.items() if fac is not None}
    assert rows[1]["case"]["case_id"] not in found  # not yet assigned: no facilitator to name
    assert found[rows[5]["case"]["case_id"]] == rows[5]["case"]["facilitator_id"]  # a closed case still has one
    assert len(set(found.values())) > 1


def _sqlite_steps(engine, read) -> int:
    """SQLite's virtual-machine steps for one read: rows visited show here, whatever the clock says."""
    with engine.connect() as conn:
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0  # carry on

        raw = conn.connection.driver_connection
        raw.set_progress_handler(count, 10)
        try:
            read(conn)
        finally:
            raw.set_progress_handler(None, 0)
    return steps[0]


def test_the_live_reads_cost_the_same_behind_50_or_2000_closed_cases(tmp_path):
    """On SQLite, counted in steps; PostgreSQL's side is timed by ``python -m tests.benchmarks.growth --postgres``."""
    from rethink.shared.migrations import target_for, upgrade
    from rethink.shared.settings import Settings

    steps: dict[int, dict[str, int]] = {}
    for closed in (50, 2000):
        target = target_for(Settings(state_dir=tmp_path / str(closed)), "scheduling")
        upgrade(target)
        with target.engine.begin() as conn:
            fill(conn, open_cases=30, closed_cases=closed)
        steps[closed] = {name: _sqlite_steps(target.engine, read) for name, read in {
            "reminders": p.reminder_items, "caseload": p.load_by_facilitator,
            "to schedule": lambda c: p.to_schedule(c, None, 100),
            "one facilitator's to schedule": lambda c: p.to_schedule(c, "fac-2", 100),
            "meetings to come": lambda c: p.active_meetings(c, None, 100),
            "one facilitator's meetings to come": lambda c: p.active_meetings(c, "fac-2", 100),
            "one facilitator's bookings": lambda c: p.bookings(c, "fac-2"),
            "the facilitators of 30 cases": lambda c: p.assigned(c, [f"RT-{n:010d}" for n in range(30)]),
            "every case (the control)": lambda c: c.execute(select(p.cases.c.case_reference)).all()}.items()}
        target.engine.dispose()

    small, large = steps[50], steps[2000]
    assert large.pop("every case (the control)") > 20 * small.pop("every case (the control)")  # steps see rows
    grew = {name: round(large[name] / small[name], 2) for name in small if large[name] > 1.1 * small[name]}
    assert grew == {}, steps
