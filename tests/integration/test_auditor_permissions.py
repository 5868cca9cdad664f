"""The auditor's NATS user reads the log and nothing else: enforced by a real nats-server."""

from __future__ import annotations

import contextlib
import uuid

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.js import api

from rethink.shared.access import AccessLog
from rethink.shared.audit import verify_chain
from rethink.shared.auth import Registry, url_with
from rethink.shared.bootstrap import bootstrap
from rethink.shared.consumer import MAX_IN_HAND
from rethink.shared.envelope import new_case_id
from rethink.shared.eventlog import EventLog, Subjects
from rethink.shared.events import ActionCompleted
from rethink.shared.keystore import KeyStoreUnavailable, KvKeyStore
from rethink.shared.natsserver import EmbeddedNats, free_port
from rethink.shared.privacy import personal_data
from tests.support import Refusals, seed_case

pytestmark = pytest.mark.nats




REFUSED = (nats.errors.TimeoutError, nats.js.errors.Error, nats.errors.Error)


@pytest.fixture
async def secured(settings, tmp_path):
    registry = Registry(tmp_path / "auth", settings)
    users = registry.ensure_core()
    port = free_port()
    server = EmbeddedNats(port, tmp_path / "js", extra_args=["-c", str(registry.config_file)]).start()
    clients = {}
    refusals = Refusals()
    try:
        for name, password in users.items():
            clients[name] = await nats.connect(url_with(name, password, port=port), error_cb=refusals.record,
                                               max_reconnect_attempts=1)
        subjects = Subjects(settings.subject_prefix)
        await bootstrap(clients["rethink-services"].jetstream(), settings)
        case_id = new_case_id()
        services_js = clients["rethink-services"].jetstream()
        services_log = EventLog(services_js, settings.stream, subjects, personal=personal_data(services_js, settings))
        await seed_case(services_log, case_id, [ActionCompleted(action_id=f"A{i}", completed_on="2026-11-20")
                                                for i in range(3)])
        clients["refusals"] = refusals
        clients["auditor_settings"] = settings.model_copy(update={"nats_url": url_with("auditor", users["auditor"],
                                                                                       port=port)})
        auditor_js = clients["auditor"].jetstream(timeout=1)
        yield clients, case_id, services_log, EventLog(auditor_js, settings.stream, subjects,
                                                       personal=personal_data(auditor_js, settings))
    finally:
        for c in clients.values():
            with contextlib.suppress(Exception, AttributeError):
                await c.close()
        server.stop()


async def test_the_auditor_reads_and_verifies_every_case(secured):
    _, case_id, _, auditor_log = secured
    assert await auditor_log.case_ids() == [case_id]
    history = await auditor_log.read_case(case_id)
    assert [r.payload.action_id for r in history] == ["A0", "A1", "A2"]
    assert verify_chain(case_id, history).intact


async def test_the_auditor_anchors_and_verifies_every_case_in_one_read_of_the_log(secured):
    from rethink.shared.cli.chains import heads, verify_all
    from rethink.shared.cli.client import Client

    clients, case_id, services_log, _ = secured
    async with Client(clients["auditor_settings"]) as auditor:
        anchors = await heads(auditor, "2026-11-27T10:00:00+00:00")
        [report] = await verify_all(auditor, anchors)
    assert anchors[case_id].seq == (await services_log.read_case(case_id))[-1].seq
    assert report.case_id == case_id and report.intact and report.events == 3
    assert not clients["refusals"].seen


async def test_the_auditor_can_export_the_whole_log_for_a_copy_of_its_own(secured, settings, tmp_path):
    from rethink.shared.logcopy import export_log, read_export

    clients, case_id, services_log, _ = secured
    done = await export_log(clients["auditor"].jetstream(timeout=2), settings, tmp_path / "log.jsonl")
    _, messages = read_export(tmp_path / "log.jsonl")
    assert done.messages == len(messages) == 3
    assert [m["seq"] for m in messages] == [r.seq for r in await services_log.read_case(case_id)]
    assert not clients["refusals"].seen


async def test_the_auditor_cannot_append_to_the_log(secured, settings):
    clients, case_id, services_log, auditor_log = secured
    last = (await services_log.read_case(case_id))[-1]
    forged = last.envelope.model_copy(update={"event_id": uuid.uuid4()})
    # A well-formed append that the services' user could make (right sequence, right chain):
    # only the server's permissions stop it.
    with pytest.raises(REFUSED):
        await auditor_log.append(case_id, [forged], expected_last_seq=last.seq, after=last)
    with pytest.raises(REFUSED):
        await clients["auditor"].jetstream(timeout=1).publish(
            Subjects(settings.subject_prefix).event(case_id, "CaseClosed"), b"{}", stream=settings.stream)
    assert len(await services_log.read_case(case_id)) == 3
    assert clients["refusals"].violation(f"{settings.subject_prefix}.events.{case_id}")


async def test_the_auditor_cannot_delete_or_purge_anything(secured, settings):
    clients, case_id, services_log, _ = secured
    first = (await services_log.read_case(case_id))[0]
    js = clients["auditor"].jetstream(timeout=1)
    with pytest.raises(REFUSED):
        await js.delete_msg(settings.stream, first.seq)
    with pytest.raises(REFUSED):
        await js.delete_stream(settings.stream)
    assert len(await services_log.read_case(case_id)) == 3
    assert clients["refusals"].violation("STREAM.MSG.DELETE") and clients["refusals"].violation("STREAM.DELETE")


async def test_the_auditor_cannot_take_events_from_a_services_durable_consumer(secured, settings):
    clients, _, _, _ = secured
    services_js = clients["rethink-services"].jetstream()
    before = (await services_js.consumer_info(settings.stream, "intake")).num_pending
    auditor_js = clients["auditor"].jetstream(timeout=1)
    with pytest.raises(REFUSED):
        sub = await auditor_js.pull_subscribe_bind("intake", settings.stream)
        await sub.fetch(1, timeout=1)
    with pytest.raises(REFUSED):
        await auditor_js.delete_consumer(settings.stream, "intake")
    with pytest.raises(REFUSED):
        await auditor_js.add_consumer(settings.stream, api.ConsumerConfig(durable_name="intake", max_ack_pending=500,
                                                                          ack_policy=api.AckPolicy.EXPLICIT))
    after = await services_js.consumer_info(settings.stream, "intake")
    assert after.num_pending == before == 3 and after.config.max_ack_pending == MAX_IN_HAND
    refusals = clients["refusals"]
    assert refusals.violation("CONSUMER.MSG.NEXT") and refusals.violation("CONSUMER.DELETE")
    assert refusals.violation("CONSUMER.DURABLE.CREATE") or refusals.violation("CONSUMER.CREATE")


async def test_the_same_append_succeeds_for_the_services_user(secured):
    """The control for the test above: the append itself is valid."""
    _, case_id, services_log, _ = secured
    last = (await services_log.read_case(case_id))[-1]
    forged = last.envelope.model_copy(update={"event_id": uuid.uuid4()})
    await services_log.append(case_id, [forged], expected_last_seq=last.seq, after=last)
    assert len(await services_log.read_case(case_id)) == 4


async def test_the_auditor_reads_personal_fields_and_records_the_read_but_cannot_make_or_destroy_keys(
        secured, settings):
    clients, case_id, services_log, auditor_log = secured
    await seed_case(services_log, case_id, [ActionCompleted(action_id="A9", completed_on="2026-11-21",
                                                            note="visited at home")])
    assert (await auditor_log.read_case(case_id))[-1].payload.note == "visited at home"
    auditor_js = clients["auditor"].jetstream(timeout=1)
    access = AccessLog(auditor_js, settings)
    await access.record(case_id, "auditor", "audit history", "annual audit")
    assert [r.reason for r in await access.list(case_id)] == ["annual audit"]

    services_keys = KvKeyStore(clients["rethink-services"].jetstream(), settings.keys_bucket)
    key = await services_keys.get(case_id)
    auditor_keys = KvKeyStore(auditor_js, settings.keys_bucket)
    assert await auditor_keys.get(case_id) == key  # reading is allowed
    other = new_case_id()
    with pytest.raises(KeyStoreUnavailable):
        await auditor_keys.create(other)
    with pytest.raises(KeyStoreUnavailable):
        await auditor_keys.destroy(case_id)
    assert await services_keys.get(other) is None and await services_keys.get(case_id) == key
    assert clients["refusals"].violation(f"$kv.{settings.keys_bucket}")
