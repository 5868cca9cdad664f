"""Agencies' NATS users, enforced by a real nats-server started with the generated config."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal

import nats
import nats.errors
import pytest

from rethink.intake.app import build as intake
from rethink.shared.auth import Registry, inbox_prefix, url_with
from rethink.shared.bootstrap import bootstrap
from rethink.shared.natsserver import EmbeddedNats, free_port
from rethink.shared.runtime import RunningService
from tests.support import Refusals, request_payload, wait_for

pytestmark = pytest.mark.nats




class Secured:
    def __init__(self, settings, tmp_path):
        self.settings = settings
        self.registry = Registry(tmp_path / "auth", settings)
        self.core = self.registry.ensure_core()
        self.agencies = {name: self.registry.add_agency(name) for name in ("police", "school")}
        self.port = free_port()
        self.server = EmbeddedNats(self.port, tmp_path / "js", extra_args=["-c", str(self.registry.config_file)])
        self.clients: list[nats.NATS] = []

    async def connect(self, name: str, password: str, refusals: Refusals | None = None, **kw) -> nats.NATS:
        nc = await nats.connect(url_with(name, password, port=self.port), max_reconnect_attempts=1,
                                allow_reconnect=False, error_cb=(refusals or Refusals()).record, **kw)
        self.clients.append(nc)
        return nc

    async def agency(self, name: str, refusals: Refusals | None = None) -> nats.NATS:
        return await self.connect(name, self.agencies[name], refusals, inbox_prefix=inbox_prefix(name))

    async def messages(self) -> int:
        return (await self.services.jetstream().stream_info(self.settings.stream)).state.messages


@pytest.fixture
async def secured(settings, tmp_path):
    s = Secured(settings, tmp_path)
    s.server.start()
    service = None
    try:
        s.services = await s.connect("rethink-services", s.core["rethink-services"])
        await bootstrap(s.services.jetstream(), settings)
        service_settings = settings.model_copy(update={"nats_url": url_with(
            "rethink-services", s.core["rethink-services"], port=s.port)})
        service = RunningService(intake, service_settings)
        await service.start()
        yield s
    finally:
        if service is not None:
            await service.stop()
        for nc in s.clients:
            with contextlib.suppress(Exception):
                await nc.close()
        s.server.stop()


def submit_subject(settings, agency: str) -> str:
    return f"{settings.subject_prefix}.intake.{agency}.submit"


async def _submit(nc, subject: str, timeout: float = 5) -> dict:
    async def attempt():
        try:
            return json.loads((await nc.request(subject, json.dumps(request_payload()).encode(),
                                                timeout=timeout)).data)
        except nats.errors.NoRespondersError:
            return None

    return await wait_for(attempt, what="intake to answer")


async def test_an_agency_submits_as_itself_and_reads_its_own_receipt(secured, settings):
    police = await secured.agency("police")
    receipt = await _submit(police, submit_subject(settings, "police"))
    assert receipt["status"] == "accepted"
    assert await secured.messages() >= 1


async def test_an_agency_cannot_publish_as_another_agency(secured, settings):
    refusals = Refusals()
    police = await secured.agency("police", refusals)
    await _submit(police, submit_subject(settings, "police"))  # intake is up and answering
    # RequestSubmitted, then intake's ChecksConfirmed: let the log settle before comparing.
    before = await wait_for(secured.messages, lambda n: n == 2, what="the request and its confirmation")
    with pytest.raises(nats.errors.TimeoutError):
        await police.request(submit_subject(settings, "school"), json.dumps(request_payload()).encode(), timeout=1)
    assert refusals.about(f'publish to "{submit_subject(settings, "school")}"')
    assert await secured.messages() == before


async def test_an_agency_cannot_read_another_agencys_receipts_or_any_common_inbox(secured):
    for subject in (f"{inbox_prefix('school')}.>", "_INBOX.>", ">"):
        refusals = Refusals()
        police = await secured.agency("police", refusals)
        await police.subscribe(subject)
        await police.flush()
        await wait_for(lambda r=refusals, s=subject: asyncio.sleep(0, r.about(f'subscription to "{s}"')),
                       what=f"refusal of {subject}")


async def test_an_agency_can_neither_read_nor_write_the_event_log(secured, settings):
    refusals = Refusals()
    police = await secured.agency("police", refusals)
    before = await secured.messages()
    js = police.jetstream(timeout=1)
    with pytest.raises(nats.errors.TimeoutError):
        await js.stream_info(settings.stream)
    with pytest.raises(nats.errors.TimeoutError):
        await js.publish(f"{settings.subject_prefix}.events.RT-AAAAAAAAAA.CaseClosed", b"{}", stream=settings.stream)
    assert refusals.about("stream.info") and refusals.about(".events.rt-aaaaaaaaaa")
    assert await secured.messages() == before


async def test_wrong_credentials_and_a_revoked_agency_are_refused(secured):
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await secured.connect("police", "not-the-password")
    school = await secured.agency("school")
    await school.close()

    secured.registry.revoke("school")
    secured.server.process.send_signal(signal.SIGHUP)  # nats-server reloads its config

    async def refused():
        try:
            nc = await secured.agency("school")
        except nats.errors.Error as exc:
            return "Authorization Violation" in str(exc)
        except ConnectionError:  # cut off mid-handshake while the server reloads: ask again
            return False
        await nc.close()
        return False

    await wait_for(refused, what="the revoked agency to be refused")
    assert secured.registry.agencies() == ["police"]
    police = await secured.agency("police")  # the others keep working
    assert police.is_connected
