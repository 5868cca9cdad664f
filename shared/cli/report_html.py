"""The auditor's HTML report: one self-contained, printable file; every value escaped."""

from __future__ import annotations

import html

from .report import Report, duration, iso_utc, short_time, state_lines

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; color: #111; margin: 2rem auto; max-width: 75rem; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #999; }
table { border-collapse: collapse; width: 100%; } th, td { border: 1px solid #bbb; padding: .3rem .4rem; text-align: left;
  vertical-align: top; } th { background: #eee; } dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
dt { font-weight: 600; } dd { margin: 0; } .id { font: 11px monospace; color: #555; word-break: break-all; }
.overdue { background: #fde2e2; } .overdue .flag { font-weight: 700; color: #a00; }
.late { background: #fff4cc; } .marker { font-weight: 700; border: 1px solid currentColor; padding: 0 .2rem; }
.meta { color: #444; }
@media print {
  @page { size: A4 landscape; margin: 12mm; }
  body { margin: 0; max-width: none; font-size: 10pt; }
  thead { display: table-header-group; } tr { break-inside: avoid; } h2 { break-after: avoid; }
  .overdue, .late { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""


def _e(value: object) -> str:
    """Every value is escaped: event data comes from agencies' systems and may be hostile."""
    return html.escape("" if value is None else str(value), quote=True)


def _table(headers: list[str], rows: list[tuple[str, list[str]]]) -> str:
    """``rows`` are (css class, already-escaped cells)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join((f'<tr class="{cls}">' if cls else "<tr>") + "".join(f"<td>{c}</td>" for c in cells) + "</tr>\n"
                   for cls, cells in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>"


def _timeline(report: Report) -> str:
    rows = []
    for r in report.rows:
        late = ' <span class="marker">recorded late</span>' if r.late else ""
        rows.append(("late" if r.late else "", [
            _e(r.seq), _e(short_time(r.occurred_at)), _e(short_time(r.recorded_at)) + late,
            f'{_e(r.type)}<div class="id">{_e(r.event_id)}</div>', _e(r.producer), _e(r.actor), _e(r.summary)]))
    if not rows:
        return "<p>No events had occurred by then.</p>"
    return _table(["Seq", "Occurred (UTC)", "Recorded (UTC)", "Event", "Producer", "Actor", "What changed"], rows)


def _timings(report: Report) -> str:
    def line(label: str, key: str, missing: str) -> str:
        span = report.timings.get(key)
        if span is None:
            return f"<dt>{_e(label)}</dt><dd>{_e(missing)}</dd>"
        start, end, took = span
        return f"<dt>{_e(label)}</dt><dd>{_e(duration(took))} ({_e(short_time(start))} to {_e(short_time(end))} UTC)</dd>"

    return ("<dl>" + line("Request to meeting", "request_to_meeting", "no meeting held")
            + line("Meeting to resolution", "meeting_to_resolution", "not resolved") + "</dl>")


def _actions(report: Report) -> str:
    if not report.actions:
        return "<p>No actions agreed.</p>"
    rows = [("overdue" if a.overdue else "", [
        _e(a.action_id), _e(a.description), _e(a.owner_agency), _e(a.due_date.isoformat()),
        _e(a.completed_on.isoformat() if a.completed_on else "not completed"),
        f'<span class="flag">{_e(a.status)}</span>' if a.overdue else _e(a.status)]) for a in report.actions]
    return _table(["Action", "Agreed", "Owner agency", "Due", "Completed", "Status"], rows)


def _stages(report: Report) -> str:
    if not report.stages:
        return "<p>No escalation.</p>"
    rows = [("overdue" if s.past_deadline else "", [
        _e(s.escalation_id), _e(f"{s.stage} {s.stage_name}"), _e(s.holder), _e(s.deadline.isoformat()),
        _e(short_time(s.entered_at)), _e(short_time(s.left_at) if s.left_at else "not yet"),
        _e(s.moved) + (' <span class="flag">past deadline (overdue)</span>' if s.past_deadline else "")])
        for s in report.stages]
    return _table(["Escalation", "Stage", "Holder", "Deadline", "Entered (UTC)", "Moved on (UTC)", "How"], rows)


def to_html(report: Report) -> str:
    state = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in state_lines(report.state))
    when = f"as of {iso_utc(report.as_of)} (domain time)" if report.as_of else "as of its latest event"
    seqs = f"stream sequences {report.rows[0].seq} to {report.rows[-1].seq}" if report.rows else "no events"
    title = f"Case history {report.case_id}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<header>
<h1>{_e(title)}</h1>
<p class="meta">Case {_e(report.case_id)} &middot; case reference {_e(report.state["case_reference"] or "unknown")}
&middot; {_e(when)} &middot; {len(report.rows)} events, {_e(seqs)}</p>
</header>
<section id="state"><h2>State {_e(when)}</h2><dl>{state}</dl></section>
<section id="timings"><h2>Timings</h2>{_timings(report)}</section>
<section id="actions"><h2>Actions</h2>{_actions(report)}</section>
<section id="escalation"><h2>Escalation</h2>{_stages(report)}</section>
<section id="timeline"><h2>Timeline</h2>{_timeline(report)}</section>
<footer><p class="meta">Read from the event log. Times are UTC. "Recorded late": the event had occurred by the
as-of time but was written to the log after it, so the network could not have known it then.</p></footer>
</body>
</html>
"""


# --- formatting ----------------------------------------------------------------------------------
