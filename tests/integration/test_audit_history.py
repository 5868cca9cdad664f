"""`rethink audit history` against a real JetStream: a case read costs that case's events, not the log's.

Also runs the command end to end (HTML file, JSON with --as-of, one-line errors).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from typer.testing import CliRunner

from rethink.shared.cli import main
from rethink.shared.clock import SystemClock
from rethink.shared.commands import envelopes
from rethink.shared.envelope import Origin, new_case_id, stamp
from rethink.shared.eventlog import EventLog, Subjects
from rethink.shared.events import (
    ActionCompleted,
    ActionItem,
    Attendee,
    ChecksConfirmed,
    MeetingHeld,
    MeetingMode,
    MeetingScheduled,
    Person,
    Perspective,
    RequestSubmitted,
    Stages,
)
from tests.support import request_payload, seed_case

pytestmark = pytest.mark.nats

HOSTILE = "<script>alert('x')</script>"
OWNER = Person(name="Alex Social", agency="Children's Social Care", email="sw@council.example.org")


def submitted() -> RequestSubmitted:
    return RequestSubmitted.model_validate({k: v for k, v in request_payload().items() if k != "immediate_risk"})


def completed(n: int) -> ActionCompleted:
    return ActionCompleted(action_id=f"A{n}", completed_on=date(2026, 3, 2))


@dataclass
class ReadSpy:
    """What one read_case asked of the server, seen through its pull subscription."""

    filter_subject: str | None = None
    pending_at_start: int | None = None
    fetched: list[int] = field(default_factory=list)  # stream seqs of the messages delivered to us
    consumer_delivered: int | None = None  # the server's own count of messages this consumer delivered
    last_stream_seq: int | None = None


def spied_jetstream(nc, spy: ReadSpy):
    """A JetStream context whose pull subscriptions report their filter, pending count and deliveries."""
    js = nc.jetstream()
    real_pull_subscribe_bind = js.pull_subscribe_bind

    async def pull_subscribe_bind(*args: Any, **kwargs: Any):  # read_case binds to the consumer it made
        sub = await real_pull_subscribe_bind(*args, **kwargs)
        info = await sub.consumer_info()
        spy.filter_subject, spy.pending_at_start = info.config.filter_subject, info.num_pending
        real_fetch = sub.fetch

        async def fetch(*a: Any, **kw: Any):
            msgs = await real_fetch(*a, **kw)
            spy.fetched += [m.metadata.sequence.stream for m in msgs]
            after = await sub.consumer_info()
            spy.consumer_delivered, spy.last_stream_seq = after.delivered.consumer_seq, after.delivered.stream_seq
            return msgs

        sub.fetch = fetch
        return sub

    js.pull_subscribe_bind = pull_subscribe_bind
    return js


async def test_reading_one_case_delivers_only_that_cases_events_however_big_the_log(nc, settings, stream):
    """The measure: what the server hands the reader, not wall-clock time.

    2,000 events of 100 other cases are interleaved with the target's 5 (one target event after
    every 20 other cases, so its events are spread across the whole stream). read_case makes an
    ephemeral consumer; we check (1) its filter is the target case's subjects, so the server
    selects the messages, (2) the server counts 5 pending for it at the start, (3) exactly 5
    messages arrive at the client, and (4) the server's own delivered counter for the consumer
    is 5 and stops at the target's last sequence. Nothing of the other 2,000 events is sent
    and filtered client-side; how the server finds the 5 is its per-subject index.
    """
    subjects = Subjects(settings.subject_prefix)
    writer = EventLog(nc.jetstream(), settings.stream, subjects, personal=None)
    origin = Origin("test", "test", uuid.uuid4())
    target = new_case_id()
    target_seqs: list[int] = []
    last_target_seq = 0

    async def other_case() -> None:
        case_id = new_case_id()
        await writer.append(case_id, envelopes([completed(n) for n in range(20)], case_id, origin, SystemClock(),
                                               None), expected_last_seq=0)

    for n in range(5):
        await asyncio.gather(*(other_case() for _ in range(20)))
        [last_target_seq] = await writer.append(target, envelopes([completed(n)], target, origin, SystemClock(), None),
                                                expected_last_seq=last_target_seq)
        target_seqs.append(last_target_seq)

    info = await nc.jetstream().stream_info(settings.stream)
    assert info.state.messages == 2005
    assert target_seqs[-1] == 2005 and target_seqs[0] == 401  # spread across the whole log

    spy = ReadSpy()
    history = await EventLog(spied_jetstream(nc, spy), settings.stream, subjects, personal=None).read_case(target)

    assert [r.seq for r in history] == target_seqs
    assert [r.payload.action_id for r in history] == [f"A{n}" for n in range(5)]
    assert spy.filter_subject == subjects.case(target)
    assert spy.pending_at_start == 5
    assert spy.fetched == target_seqs
    assert (spy.consumer_delivered, spy.last_stream_seq) == (5, target_seqs[-1])


# --- the command end to end ----------------------------------------------------------------------

class Sections(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.tags: set[str] = set()
        self.classes: list[str] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        self.ids += [a["id"]] if a.get("id") else []
        self.classes += (a.get("class") or "").split()

    def handle_data(self, data):
        self.text.append(data)

    @property
    def visible(self) -> str:
        return " ".join(" ".join(self.text).split())


async def seed_hostile_case(event_log: EventLog) -> tuple[str, datetime]:
    """A case up to a held meeting whose agreed action and learning carry markup; the action was
    completed on day 6 but that reached the log only on day 8. Returns the case id and day 0."""
    case_id = new_case_id()
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=10)
    origin = Origin("meeting", f"facilitator{HOSTILE}@pscp.example.org", uuid.uuid4())
    action = ActionItem(action_id="M-1-A1", description=f"Share the plan {HOSTILE}", owner=OWNER,
                        due_date=(t0 + timedelta(days=4)).date())
    meeting = MeetingHeld(
        meeting_id="M-1", held_at=t0 + timedelta(days=2), attendees=[Attendee(name="Jo Health", agency="Community Health")],
        stages=Stages(strengths="Engaged.", impact="Missed school.", ways_forward="Joint visit.", learning=HOSTILE,
                      perspectives=[Perspective(professional="Jo Health", agency="Community Health", feelings="Worried.",
                                                needs="A plan.")]),
        outcome="partly_resolved", actions=[action])
    steps = [
        (submitted(), t0, t0),
        (ChecksConfirmed(checks=submitted().checks), t0 + timedelta(hours=1), t0 + timedelta(hours=1)),
        (MeetingScheduled(meeting_id="M-1", facilitator_id="F-1", starts_at=t0 + timedelta(days=2), duration_minutes=90,
                          mode=MeetingMode.VIRTUAL, invitees=[OWNER]), t0 + timedelta(days=1), t0 + timedelta(days=1)),
        (meeting, t0 + timedelta(days=2, hours=2), t0 + timedelta(days=2, hours=2)),
        (ActionCompleted(action_id="M-1-A1", completed_on=(t0 + timedelta(days=6)).date()),
         t0 + timedelta(days=6), t0 + timedelta(days=8)),
    ]
    envs = [stamp(p, case_id, origin, occurred, recorded, uuid.uuid4()) for p, occurred, recorded in steps]
    await event_log.append(case_id, envs, expected_last_seq=0)
    return case_id, t0


async def rethink(monkeypatch, settings, *args: str):
    """Run the CLI in a worker thread: it runs its own event loop, as it does for a person."""
    monkeypatch.setattr(main, "settings", lambda: settings)
    return await asyncio.to_thread(CliRunner().invoke, main.app, list(args))


async def test_the_html_report_is_written_to_a_file_with_every_section_and_hostile_text_escaped(
        event_log, settings, monkeypatch, tmp_path):
    case_id, _ = await seed_hostile_case(event_log)
    target = tmp_path / "report.html"

    result = await rethink(monkeypatch, settings, "audit", "history", case_id, "--format", "html", "--output", str(target))

    assert result.exit_code == 0, result.output
    text = target.read_text(encoding="utf-8")
    page = Sections(text)
    assert {"state", "timings", "actions", "escalation", "timeline"} <= set(page.ids)
    assert "script" not in page.tags and "<script" not in text
    assert "&lt;script&gt;" in text
    assert f"Share the plan {HOSTILE}" in page.visible
    assert "overdue" in page.classes and "completed late (was overdue)" in page.visible
    assert "Request to meeting 2 days" in page.visible
    assert case_id in page.visible and "CSC-2026-0042" in page.visible
    assert f"wrote {target}" in result.stderr


async def test_json_as_of_a_moment_shows_what_had_occurred_and_flags_what_was_recorded_late(
        event_log, settings, monkeypatch):
    case_id, t0 = await seed_hostile_case(event_log)
    as_of = (t0 + timedelta(days=7)).isoformat()

    result = await rethink(monkeypatch, settings, "audit", "history", case_id, "--format", "json", "--as-of", as_of)

    assert result.exit_code == 0, result.output
    events = json.loads(result.stdout)
    assert [e["type"] for e in events] == ["RequestSubmitted", "ChecksConfirmed", "MeetingScheduled", "MeetingHeld",
                                           "ActionCompleted"]
    assert [e["late"] for e in events] == [False, False, False, False, True]
    assert events[4]["recorded_at"] == (t0 + timedelta(days=8)).isoformat()


async def test_the_table_as_of_before_the_late_event_occurred_leaves_it_out_and_shows_the_state_then(
        event_log, settings, monkeypatch):
    case_id, t0 = await seed_hostile_case(event_log)

    result = await rethink(monkeypatch, settings, "audit", "history", case_id,
                           "--as-of", (t0 + timedelta(days=5)).date().isoformat())

    assert result.exit_code == 0, result.output
    assert "(4 events, as of" in result.stdout
    assert "ActionCompleted" not in result.stdout
    assert "meeting held (partly_resolved)" in result.stdout
    # Due on day 4 and not completed by the end of day 5 (its completion on day 6 is not yet in view).
    assert re.search(r"overdue actions\s+M-1-A1", result.stdout)


@pytest.mark.parametrize("args, says", [
    (["RT-AAAAAAAAAA"], "no events for case RT-AAAAAAAAAA"),
    (["RT-AAAAAAAAAA.>"], "is not a case id"),
    (["RT-AAAAAAAAAA", "--as-of", "2026-03-01T10:00"], "has no UTC offset"),
    (["RT-AAAAAAAAAA", "--format", "pdf"], "use one of table, json, csv, html"),
])
async def test_an_unknown_case_or_bad_option_is_one_line_on_stderr_and_a_failing_exit(
        settings, stream, monkeypatch, args, says):
    result = await rethink(monkeypatch, settings, "audit", "history", *args)

    assert result.exit_code == 1
    assert says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


async def test_audit_search_finds_cases_by_agency_and_overdue_actions_from_the_log(event_log, settings, monkeypatch):
    case_id, _ = await seed_hostile_case(event_log)
    from tests.support import request_payload, seed_case

    other = "RT-BBBBBBBBBB"
    data = request_payload()
    data.pop("immediate_risk")
    from rethink.shared.events import RequestSubmitted

    await seed_case(event_log, other, [RequestSubmitted.model_validate(data)], producer="health-trust")

    result = await rethink(monkeypatch, settings, "audit", "search", "--overdue", "--json")
    assert result.exit_code == 0, result.output
    assert [row["case_id"] for row in json.loads(result.stdout)] == [case_id]

    result = await rethink(monkeypatch, settings, "audit", "search", "--agency", "health-trust", "--json")
    assert [row["case_id"] for row in json.loads(result.stdout)] == [other]

    result = await rethink(monkeypatch, settings, "audit", "search", "--outcome", "maybe")
    assert result.exit_code == 1 and "--outcome must be" in result.stderr


async def test_audit_search_reads_the_log_once_and_needs_no_key(event_log, settings, monkeypatch, nc):
    """One pass over the log, nothing opened: with the key store gone and reading a case forbidden,
    the search still finds each case by what it asks. Its reading until the twelfth round read every
    case's history opened, so it failed here."""
    case_id, _ = await seed_hostile_case(event_log)
    other = new_case_id()
    await seed_case(event_log, other, [submitted()], producer="health-trust")
    await nc.jetstream().delete_stream(f"KV_{settings.keys_bucket}")  # every case's key, gone

    async def no_case_reads(*_: Any) -> None:
        raise AssertionError("the search read a case on its own")
    monkeypatch.setattr(EventLog, "read_case", no_case_reads)
    monkeypatch.setattr(EventLog, "read_sealed", no_case_reads)

    result = await rethink(monkeypatch, settings, "audit", "search", "--overdue", "--json")
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert (row["case_id"], row["agency"], row["outcome"], row["overdue_actions"]) == (
        case_id, "meeting", "partly_resolved", 1)
    assert row["case_reference"] == "CSC-2026-0042" and HOSTILE not in result.stdout

    result = await rethink(monkeypatch, settings, "audit", "search", "--agency", "health-trust", "--json")
    assert [(r["case_id"], r["status"]) for r in json.loads(result.stdout)] == [(other, "awaiting checks")]
    assert result.stderr == ""

    result = await rethink(monkeypatch, settings, "audit", "search", "--agency", "health-trust")
    assert result.exit_code == 0 and "1 of 2 cases match" in result.stdout and other in result.stdout


async def test_audit_search_leaves_out_an_unreadable_event_and_says_so(event_log, settings, monkeypatch, nc):
    case_id, _ = await seed_hostile_case(event_log)
    broken = new_case_id()
    await seed_case(event_log, broken, [submitted()], producer="health-trust")
    ack = await nc.jetstream().publish(Subjects(settings.subject_prefix).event(broken, "MeetingHeld"), b"{not json")

    result = await rethink(monkeypatch, settings, "audit", "search", "--json")
    assert result.exit_code == 0, result.output
    assert [r["case_id"] for r in json.loads(result.stdout)] == sorted([case_id, broken])
    assert f"1 event could not be read and was left out (seq {ack.seq})" in result.stderr

    result = await rethink(monkeypatch, settings, "audit", "search", "--agency", "health-trust", "--json")
    assert [(r["case_id"], r["status"]) for r in json.loads(result.stdout)] == [(broken, "awaiting checks")]


async def test_audit_verify_reports_each_case_and_fails_when_a_chain_is_broken(event_log, settings, monkeypatch, nc):
    case_id, _ = await seed_hostile_case(event_log)
    result = await rethink(monkeypatch, settings, "audit", "verify", case_id)
    assert result.exit_code == 0 and result.stdout.strip().startswith(f"{case_id}: intact")

    history = await event_log.read_case(case_id)
    await nc.jetstream().delete_msg(settings.stream, history[1].seq)
    result = await rethink(monkeypatch, settings, "audit", "verify", "--all", "--json")
    assert result.exit_code == 2
    [report] = json.loads(result.stdout)
    assert report["intact"] is False and report["breaks"][0]["kind"] == "removed"
    assert report["breaks"][0]["seq"] == history[2].seq


async def test_audit_anchor_then_verify_with_anchors_catches_a_removed_last_event(event_log, settings, monkeypatch,
                                                                                  nc, tmp_path):
    case_id, _ = await seed_hostile_case(event_log)
    keygen = await rethink(monkeypatch, settings, "audit", "keygen", "--out-dir", str(tmp_path / "keys"))
    assert keygen.exit_code == 0, keygen.output
    private, public = tmp_path / "keys" / "anchor-signing.pem", tmp_path / "keys" / "anchor-signing.pub.pem"
    unsigned = await rethink(monkeypatch, settings, "audit", "anchor", "--out", str(tmp_path))
    assert unsigned.exit_code == 1 and "anchors are signed" in unsigned.stderr
    assert list(tmp_path.glob("anchors-*.json")) == []

    # Scheduled runs name each file by its time: --out is a folder.
    result = await rethink(monkeypatch, settings, "audit", "anchor", "--out", str(tmp_path), "--key", str(private))
    assert result.exit_code == 0, result.output
    [anchors] = tmp_path.glob("anchors-*.json")
    assert json.loads(anchors.read_text())["cases"][case_id]["seq"] > 0
    verify = ("audit", "verify", "--all", "--anchors", str(anchors), "--public-key", str(public))
    assert (await rethink(monkeypatch, settings, *verify)).exit_code == 0

    history = await event_log.read_case(case_id)
    await nc.jetstream().delete_msg(settings.stream, history[-1].seq)
    plain = await rethink(monkeypatch, settings, "audit", "verify", case_id)
    assert plain.exit_code == 0  # a chain alone cannot see it
    anchored = await rethink(monkeypatch, settings, *verify)
    assert anchored.exit_code == 2 and f"{case_id}: BROKEN at seq {history[-1].seq}" in anchored.stdout
    assert "removed" in anchored.stdout

    # Whoever removed it also "fixes" the anchors file to the new head: the signature gives it away.
    document = json.loads(anchors.read_text())
    document["cases"][case_id].update(event_id=str(history[-2].envelope.event_id), digest=history[-2].digest,
                                      seq=history[-2].seq)
    anchors.write_text(json.dumps(document))
    rewritten = await rethink(monkeypatch, settings, *verify)
    assert rewritten.exit_code == 2 and "signature does not match: it was changed after it was signed" in rewritten.stderr
    assert rewritten.stdout == ""

    no_key = await rethink(monkeypatch, settings, "audit", "verify", "--all", "--anchors", str(anchors))
    assert no_key.exit_code == 1 and "--public-key" in no_key.stderr
    anchors.write_text("[]")
    bad = await rethink(monkeypatch, settings, *verify)
    assert bad.exit_code == 1 and "not an anchors file" in bad.stderr
