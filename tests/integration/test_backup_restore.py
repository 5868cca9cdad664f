"""The backup and restore docs/operations.md describes, done as an operator would after losing everything.

Back up: the event log with `rethink audit export`, then the data keys that unlock its
personal fields with `rethink keys export`, the email outbox with `pg_dump` (the
projections need no backup: they are rebuilt from the log). Lose it all: a new, empty
nats-server, and every service's schema dropped. Restore: `rethink audit import`, `pg_restore`
the outbox, `rethink bootstrap`, `rethink keys import`, `rethink projections rebuild` each service, start the
services. Then every case reads as before, nothing is written or sent twice, and new work
carries on from the restored log.
"""

from __future__ import annotations

import shutil
import subprocess

import nats
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from rethink.escalation.app import build as escalation
from rethink.intake.app import build as intake
from rethink.meeting.app import build as meeting
from rethink.scheduling.app import build as scheduling
from rethink.shared.cli.client import Client
from rethink.shared.cli.demo import drive
from rethink.shared.migrations import DATABASES
from rethink.shared.natsserver import EmbeddedNats, free_port
from rethink.shared.runtime import RunningService
from rethink.shared.settings import SERVICES
from tests.integration.test_audit_history import rethink
from tests.integration.test_log_copy import _caught_up
from tests.support import request_payload, wait_for

pytestmark = [pytest.mark.nats, pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("pg_dump") is None, reason="pg_dump is not installed")]

FACTORIES = (intake, scheduling, meeting, escalation)


def libpq(url: str) -> str:
    """pg_dump's URL: the SQLAlchemy one without the driver."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def answers(settings, case_ids: list[str]) -> dict:
    async with Client(settings) as client:
        views = {(svc, case_id): await client.query(svc, "case", {"case_id": case_id})
                 for svc in SERVICES for case_id in case_ids}
        views["notifications"] = await client.query("scheduling", "notifications", {"limit": 1000})
    return views


async def start_all(settings) -> list[RunningService]:
    running = []
    for factory in FACTORIES:
        svc = RunningService(factory, settings)
        await svc.start()
        running.append(svc)
    return running


async def stop_all(running: list[RunningService]) -> None:
    for svc in running:
        await svc.stop()


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_a_lost_system_is_restored_from_the_log_export_and_the_outbox_dump(
        backend, run_services, settings, nc, subjects, monkeypatch, tmp_path):
    # --- a working system with three whole cases and their emails sent
    running = await run_services(*FACTORIES)
    async with Client(settings) as client:
        case_ids = await drive(client, lambda _: None)
    js = nc.jetstream()
    await wait_for(lambda: _caught_up(nc, subjects, js, settings.stream), what="projections caught up")
    await wait_for(lambda: answers(settings, []),
                   lambda v: v["notifications"]["counts"] and set(v["notifications"]["counts"]) == {"sent"},
                   what="every email sent")
    before = await answers(settings, case_ids)
    log_before = (await js.stream_info(settings.stream)).state
    for svc in running:
        await svc.stop()

    # --- back up
    export = tmp_path / "log.jsonl"
    exported = await rethink(monkeypatch, settings, "audit", "export", "--out", str(export))
    assert exported.exit_code == 0, exported.output
    keys = tmp_path / "keys.jsonl"  # after the log: every case in the export has its key in here
    kept = await rethink(monkeypatch, settings, "keys", "export", "--out", str(keys))
    assert kept.exit_code == 0 and "exported 3 keys" in kept.stdout, kept.output
    url = settings.database_url["outbox"]
    dump = tmp_path / "outbox.dump"
    subprocess.run(["pg_dump", "--format=custom", f"--schema={settings.database_schema['outbox']}",
                    f"--file={dump}", libpq(url)], check=True, timeout=60)

    # --- lose everything: a new, empty NATS; every schema gone
    engine = create_engine(url)
    with engine.begin() as conn:
        for db in DATABASES:
            conn.execute(text(f'DROP SCHEMA "{settings.database_schema[db]}" CASCADE'))
    server = EmbeddedNats(free_port(), tmp_path / "new-nats").start()
    restored = settings.model_copy(update={"nats_url": server.url, "state_dir": tmp_path / "new-state"})
    again: list[RunningService] = []
    try:
        # --- restore, in the documented order
        imported = await rethink(monkeypatch, restored, "audit", "import", str(export))
        assert imported.exit_code == 0, imported.output
        subprocess.run(["pg_restore", f"--dbname={libpq(url)}", str(dump)], check=True, timeout=60)
        booted = await rethink(monkeypatch, restored, "bootstrap")
        assert booted.exit_code == 0, booted.output
        assert "outbox: already at" in booted.stdout, booted.stdout  # the restored outbox kept as it was
        unlocked = await rethink(monkeypatch, restored, "keys", "import", str(keys))
        assert unlocked.exit_code == 0 and "imported 3 keys" in unlocked.stdout, unlocked.output
        for service in SERVICES:
            rebuilt = await rethink(monkeypatch, restored, "projections", "rebuild", service)
            assert rebuilt.exit_code == 0, rebuilt.output
            assert "swapped in" in rebuilt.stdout

        again = await start_all(restored)
        async with await nats.connect(server.url) as new_nc:
            new_js = new_nc.jetstream()
            await wait_for(lambda: _caught_up(new_nc, subjects, new_js, restored.stream),
                           what="the restored services to catch up")
            after = await answers(restored, case_ids)
            assert after == before  # every case reads as it did, and the outbox is as it was: nothing resent
            state = (await new_js.stream_info(restored.stream)).state
            assert (state.first_seq, state.last_seq, state.messages) == (
                log_before.first_seq, log_before.last_seq, log_before.messages)  # no reaction written twice

            # New work carries on after the restored log.
            async with Client(restored) as client:
                reply = await client.agency_command("northside-school", "submit", request_payload())
            assert reply["status"] == "accepted", reply
            assert (await new_js.stream_info(restored.stream)).state.last_seq > log_before.last_seq
    finally:
        await stop_all(again)
        server.stop()
        engine.dispose()


async def test_a_key_backup_that_is_cut_short_or_disagrees_with_the_store_is_refused(
        stream, settings, nc, monkeypatch, tmp_path):
    kv = await nc.jetstream().key_value(settings.keys_bucket)
    await kv.create("RT-AAAAAAAAAA", b"key-one")
    backup = tmp_path / "keys.jsonl"
    assert (await rethink(monkeypatch, settings, "keys", "export", "--out", str(backup))).exit_code == 0

    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(backup.read_text().splitlines()[:-1]) + "\n")  # the end line lost
    refused = await rethink(monkeypatch, settings, "keys", "import", str(cut))
    assert refused.exit_code == 1 and "not a whole key backup" in refused.stderr

    again = await rethink(monkeypatch, settings, "keys", "import", str(backup))  # the same key: nothing to do
    assert again.exit_code == 0 and "imported 0 keys" in again.stdout and "1 were there already" in again.stdout
    await kv.purge("RT-AAAAAAAAAA")
    await kv.create("RT-AAAAAAAAAA", b"another-key")
    clash = await rethink(monkeypatch, settings, "keys", "import", str(backup))
    assert clash.exit_code == 1 and "different key" in clash.stderr
    assert (await kv.get("RT-AAAAAAAAAA")).value == b"another-key"  # never overwritten
