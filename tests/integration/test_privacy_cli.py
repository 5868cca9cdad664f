"""The CLI's side of personal data: access records, erase, the retention sweep, a missing key store."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from nats.js.errors import APIError
from typer.testing import CliRunner

from rethink.shared.cli import main
from rethink.shared.envelope import Origin, new_case_id, stamp
from rethink.shared.eventlog import EventLog
from rethink.shared.events import ERASED, ActionCompleted, CaseClosed
from tests.support import calls_to, seed_case

pytestmark = pytest.mark.nats


async def rethink(monkeypatch, settings, *args: str):
    """Run the CLI in a worker thread: it runs its own event loop, as it does for a person."""
    monkeypatch.setattr(main, "settings", lambda: settings)
    return await asyncio.to_thread(CliRunner().invoke, main.app, list(args))


async def private_case(event_log, note: str) -> str:
    case_id = new_case_id()
    await seed_case(event_log, case_id, [ActionCompleted(action_id="A1", completed_on="2026-11-20", note=note)],
                    actor="jo.health@health.example.org")
    return case_id


async def closed_case(event_log, closed_at: datetime, note: str) -> str:
    case_id = new_case_id()
    origin = Origin("meeting", "facilitator@example.org", uuid.uuid4())
    envs = [stamp(ActionCompleted(action_id="A1", completed_on=closed_at.date(), note=note), case_id, origin,
                  closed_at, closed_at, uuid.uuid4()),
            stamp(CaseClosed(reason="resolved_at_meeting"), case_id, origin, closed_at, closed_at, uuid.uuid4())]
    await event_log.append(case_id, envs, expected_last_seq=0)
    return case_id


async def test_each_read_through_the_cli_is_recorded_with_who_when_how_and_why(event_log, settings, monkeypatch):
    case_id = await private_case(event_log, "home visit notes")
    reader = settings.model_copy(update={"user": "auditor.a@partnership.example.org"})
    history = await rethink(monkeypatch, reader, "case", "history", case_id, "--json", "--reason", "annual audit")
    assert history.exit_code == 0, history.output
    assert "home visit notes" in history.output and "jo.health@health.example.org" in history.output
    report = await rethink(monkeypatch, settings, "audit", "history", case_id, "--format", "json")
    assert report.exit_code == 0, report.output

    listed = await rethink(monkeypatch, settings, "audit", "access", case_id, "--json")
    assert listed.exit_code == 0, listed.output
    records = json.loads(listed.output)
    assert [(r["what"], r["reason"]) for r in records] == [("case history", "annual audit"),
                                                           ("audit history", "(no reason given)")]
    assert records[0]["who"] == "auditor.a@partnership.example.org"
    assert records[1]["who"].startswith("os:")  # no RETHINK_USER: the OS user
    assert all(datetime.fromisoformat(r["at"]) <= datetime.now(UTC) for r in records)
    other = await rethink(monkeypatch, settings, "audit", "access", new_case_id(), "--json")
    assert json.loads(other.output) == []  # each case's records are its own


async def test_access_records_cannot_be_deleted_or_purged(event_log, settings, monkeypatch, nc):
    case_id = await private_case(event_log, "a note")
    assert (await rethink(monkeypatch, settings, "case", "history", case_id)).exit_code == 0
    js = nc.jetstream()
    with pytest.raises(APIError):
        await js.delete_msg(settings.access_stream, 1)
    with pytest.raises(APIError):
        await js.purge_stream(settings.access_stream)
    assert (await js.stream_info(settings.access_stream)).state.messages == 1


async def test_erase_from_the_cli_leaves_the_history_readable_erased_and_the_chain_intact(
        event_log, settings, monkeypatch):
    case_id = await private_case(event_log, "home visit notes")
    erased = await rethink(monkeypatch, settings, "privacy", "erase", case_id, "--reason", "retention schedule")
    assert erased.exit_code == 0, erased.output
    assert "recorded PersonalDataErased; key destroyed" in erased.output

    report = await rethink(monkeypatch, settings, "audit", "history", case_id, "--format", "json")
    assert report.exit_code == 0, report.output
    assert "home visit notes" not in report.output and "jo.health" not in report.output
    assert ERASED in report.output and '"enc"' not in report.output and "enc:v1" not in report.output
    assert "retention schedule" in report.output  # the erasure itself stays readable: who, when, why
    verify = await rethink(monkeypatch, settings, "audit", "verify", case_id)
    assert verify.exit_code == 0 and "intact (2 events)" in verify.output
    again = await rethink(monkeypatch, settings, "privacy", "erase", case_id, "--reason", "retention schedule")
    assert again.exit_code == 0 and "erasure already recorded" in again.output


async def test_the_sweep_lists_closed_cases_past_retention_and_erases_them_only_with_apply(
        event_log, settings, monkeypatch):
    now = datetime.now(UTC)
    old = await closed_case(event_log, now - timedelta(days=366 * 7), "old notes")
    recent = await closed_case(event_log, now - timedelta(days=365), "recent notes")
    still_open = await private_case(event_log, "open notes")

    dry = await rethink(monkeypatch, settings, "privacy", "sweep", "--json")
    assert dry.exit_code == 0, dry.output
    actions = {i["case_id"]: i["action"] for i in json.loads(dry.output)}
    assert actions == {old: "due", recent: "kept", still_open: "kept"}
    assert (await event_log.read_case(old))[0].payload.note == "old notes"  # a dry run erases nothing

    applied = await rethink(monkeypatch, settings, "privacy", "sweep", "--apply")
    assert applied.exit_code == 0, applied.output
    assert "1 of 3 cases erased" in applied.output and old in applied.output
    assert (await event_log.read_case(old))[0].payload.note == ERASED
    assert (await event_log.read_case(old))[-1].payload.reason == "retention: 6 years after the case closed"
    assert (await event_log.read_case(recent))[0].payload.note == "recent notes"
    assert (await event_log.read_case(still_open))[0].payload.note == "open notes"

    shorter = settings.model_copy(update={"retention_years": 1})
    again = json.loads((await rethink(monkeypatch, shorter, "privacy", "sweep", "--json")).output)
    assert {i["case_id"]: i["action"] for i in again} == {old: "already erased", recent: "due", still_open: "kept"}


async def test_the_sweep_reads_the_log_once_and_reads_only_the_cases_it_erases_on_their_own(
        event_log, settings, monkeypatch):
    now = datetime.now(UTC)
    old = await closed_case(event_log, now - timedelta(days=366 * 7), "old notes")
    kept = [await closed_case(event_log, now - timedelta(days=365), "recent notes"),
            await private_case(event_log, "open notes")]
    read_alone = calls_to(monkeypatch, EventLog, "read_sealed")
    dry = await rethink(monkeypatch, settings, "privacy", "sweep", "--json")
    assert dry.exit_code == 0, dry.output
    assert sorted(i["case_id"] for i in json.loads(dry.output)) == sorted([old, *kept])
    assert read_alone == []
    applied = await rethink(monkeypatch, settings, "privacy", "sweep", "--apply")
    assert applied.exit_code == 0 and "1 of 3 cases erased" in applied.output
    assert set(read_alone) == {old}  # the erasure reads its case, to chain its record onto it


async def test_the_sweep_stops_at_a_case_with_an_unreadable_event_and_says_what_is_wrong(
        event_log, settings, monkeypatch, nc):
    case_id = await private_case(event_log, "a note")
    await nc.jetstream().publish(event_log.subjects.event(case_id, "CaseClosed"), b"{not json",
                                 stream=settings.stream)
    result = await rethink(monkeypatch, settings, "privacy", "sweep")
    assert result.exit_code == 1 and "not an event envelope" in result.stderr


async def test_without_its_key_store_the_cli_refuses_to_show_a_case_in_one_line(event_log, settings, monkeypatch):
    case_id = await private_case(event_log, "home visit notes")
    cut_off = settings.model_copy(update={"keys_bucket": f"GONE{uuid.uuid4().hex[:8]}"})
    for args in (("audit", "history", case_id), ("case", "history", case_id, "--json")):
        result = await rethink(monkeypatch, cut_off, *args)
        assert result.exit_code == 1
        assert "key store" in result.output and "run `rethink bootstrap`" in result.output
        assert ERASED not in result.output and "enc" not in result.output.replace("rethink", "")
    verify = await rethink(monkeypatch, cut_off, "audit", "verify", case_id)
    assert verify.exit_code == 0 and "intact" in verify.output  # the chain needs no key
