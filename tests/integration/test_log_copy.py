"""An auditor's copy of the log on a second nats-server: exported read-only, imported, audited there.

The source is the session's server with cases the real services wrote; the copy is a server
the test starts on its own folder, as an auditor would on their own machine.
"""

from __future__ import annotations

import json

import nats
import pytest
from sqlalchemy import select

from rethink.escalation.app import build as escalation
from rethink.intake.app import build as intake
from rethink.meeting.app import build as meeting
from rethink.scheduling.app import build as scheduling
from rethink.shared.cli.client import Client
from rethink.shared.cli.demo import drive
from rethink.shared.natsserver import EmbeddedNats, free_port
from rethink.shared.rebuild import projection_store
from rethink.shared.settings import SERVICES
from tests.integration.test_audit_history import rethink
from tests.support import ask, wait_for

pytestmark = pytest.mark.nats


@pytest.fixture
async def copy_server(tmp_path):
    server = EmbeddedNats(free_port(), tmp_path / "audit-copy").start()
    try:
        yield server.url
    finally:
        server.stop()


async def _caught_up(nc, subjects, js, stream) -> bool:
    last = (await js.stream_info(stream)).state.last_seq
    pings = [await ask(nc, subjects.query(n, "ping"), {}) for n in SERVICES]
    return all(p["last_applied_seq"] == last for p in pings)


def _rows(store):
    with store.engine.connect() as conn:
        return {name: sorted(map(tuple, conn.execute(select(table)).all()), key=repr)
                for name, table in sorted(store.metadata.tables.items())}


async def test_audits_on_an_imported_copy_match_production_and_never_touch_it(
        run_services, settings, nc, subjects, copy_server, monkeypatch, tmp_path):
    running = await run_services(intake, scheduling, meeting, escalation)
    async with Client(settings) as client:
        case_ids = await drive(client, lambda _: None)
    js = nc.jetstream()
    await wait_for(lambda: _caught_up(nc, subjects, js, settings.stream), what="projections caught up")
    for svc in running:
        await svc.stop()
    source_before = await js.stream_info(settings.stream)

    export = tmp_path / "log.jsonl"
    exported = await rethink(monkeypatch, settings, "audit", "export", "--out", str(export))
    assert exported.exit_code == 0, exported.output
    assert f"exported {source_before.state.messages} messages" in exported.stdout
    after = await js.stream_info(settings.stream)
    assert (after.state.messages, after.state.last_seq) == (source_before.state.messages, source_before.state.last_seq)

    # The log from the copy; the keys (and the record of each read) stay with production's key store.
    audit = settings.model_copy(update={"nats_url": copy_server, "state_dir": tmp_path / "auditor",
                                        "keys_nats_url": settings.nats_url})
    imported = await rethink(monkeypatch, audit, "audit", "import", str(export))
    assert imported.exit_code == 0, imported.output
    async with await nats.connect(copy_server) as copy_nc:
        copy_info = await copy_nc.jetstream().stream_info(audit.stream)
    assert (copy_info.state.first_seq, copy_info.state.last_seq, copy_info.state.messages) == (
        source_before.state.first_seq, source_before.state.last_seq, source_before.state.messages)

    # The same answers on the copy as on production.
    for case_id in case_ids:
        ours = await rethink(monkeypatch, audit, "audit", "history", case_id, "--format", "json")
        theirs = await rethink(monkeypatch, settings, "audit", "history", case_id, "--format", "json")
        assert ours.exit_code == 0 and json.loads(ours.stdout) == json.loads(theirs.stdout)
    verified = await rethink(monkeypatch, audit, "audit", "verify", "--all")
    assert verified.exit_code == 0 and verified.stdout.count(": intact") == len(case_ids)
    for service in SERVICES:
        target = f"sqlite:///{tmp_path / (service + '-from-copy.db')}"
        rebuilt = await rethink(monkeypatch, audit, "projections", "rebuild", service, "--into", target)
        assert rebuilt.exit_code == 0, rebuilt.output
        assert _rows(projection_store(service, target)) == _rows(projection_store(service, settings.db_url(service)))

    # It never writes into a stream that exists: not twice, and never into production.
    again = await rethink(monkeypatch, audit, "audit", "import", str(export))
    assert again.exit_code == 1 and "already exists" in again.stderr
    into_production = await rethink(monkeypatch, settings, "audit", "import", str(export))
    assert into_production.exit_code == 1 and "already exists" in into_production.stderr
    assert (await js.stream_info(settings.stream)).state.messages == source_before.state.messages


async def test_a_message_deleted_from_production_is_found_at_the_same_place_on_the_copy(
        event_log, settings, nc, copy_server, monkeypatch, tmp_path):
    from rethink.shared.envelope import new_case_id
    from rethink.shared.events import ActionCompleted, CaseClosed
    from tests.support import seed_case

    case_id = new_case_id()
    await seed_case(event_log, case_id, [ActionCompleted(action_id=f"A{i}", completed_on="2026-11-20")
                                         for i in range(3)] + [CaseClosed(reason="resolved_at_meeting")])
    history = await event_log.read_case(case_id)
    await nc.jetstream().delete_msg(settings.stream, history[1].seq)
    await nc.jetstream().delete_msg(settings.stream, history[-1].seq)  # the tail too
    on_production = await rethink(monkeypatch, settings, "audit", "verify", case_id, "--json")

    export = tmp_path / "log.jsonl"
    assert (await rethink(monkeypatch, settings, "audit", "export", "--out", str(export))).exit_code == 0
    audit = settings.model_copy(update={"nats_url": copy_server})
    imported = await rethink(monkeypatch, audit, "audit", "import", str(export))
    assert imported.exit_code == 0 and "2 deleted messages kept as gaps" in imported.stdout
    on_copy = await rethink(monkeypatch, audit, "audit", "verify", case_id, "--json")

    assert on_copy.exit_code == on_production.exit_code == 2
    assert json.loads(on_copy.stdout) == json.loads(on_production.stdout)
    assert json.loads(on_copy.stdout)[0]["breaks"][0]["kind"] == "removed"
    async with await nats.connect(copy_server) as copy_nc:
        info = await copy_nc.jetstream().stream_info(audit.stream, subjects_filter=">")
    assert info.state.last_seq == history[-1].seq and set(info.state.subjects or {}) == {
        f"{settings.subject_prefix}.events.{case_id}.ActionCompleted"}


@pytest.mark.parametrize("damage, says", [
    (lambda lines: lines[:-2] + lines[-1:], "truncated or edited"),  # a message dropped
    (lambda lines: lines[:-1], "incomplete"),  # the export died before its end line
    (lambda lines: [lines[0], lines[2], lines[1], *lines[3:]], "truncated or edited"),
    (lambda lines: ["{}\n"], "not an export file"),
])
async def test_a_damaged_export_is_refused_before_anything_is_written(
        event_log, settings, copy_server, monkeypatch, tmp_path, damage, says):
    from rethink.shared.envelope import new_case_id
    from rethink.shared.events import ActionCompleted
    from tests.support import seed_case

    await seed_case(event_log, new_case_id(), [ActionCompleted(action_id=f"A{i}", completed_on="2026-11-20")
                                               for i in range(3)])
    export = tmp_path / "log.jsonl"
    assert (await rethink(monkeypatch, settings, "audit", "export", "--out", str(export))).exit_code == 0
    export.write_text("".join(damage(export.read_text().splitlines(keepends=True))))

    audit = settings.model_copy(update={"nats_url": copy_server})
    result = await rethink(monkeypatch, audit, "audit", "import", str(export))
    assert result.exit_code == 1 and says in result.stderr
    async with await nats.connect(copy_server) as copy_nc:
        with pytest.raises(nats.js.errors.NotFoundError):
            await copy_nc.jetstream().stream_info(audit.stream)
