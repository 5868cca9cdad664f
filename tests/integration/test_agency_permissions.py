"""Agencies' NATS users, enforced by a real nats-server started with the generated config."""

from __future__ import annotations

import asyncio
import json
import signal

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.js import api

from rethink.shared.auth import inbox_prefix
from tests.support import Refusals, request_payload, wait_for

pytestmark = pytest.mark.nats




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


# --- durable receipts ---------------------------------------------------------------------------


async def _pull_receipts(nc, settings, consumer: str, want: int) -> list[dict]:
    sub = await nc.jetstream(timeout=2).pull_subscribe_bind(consumer, stream=settings.receipt_stream)
    got: list[dict] = []

    async def more():
        try:
            for m in await sub.fetch(want - len(got), timeout=1):
                got.append(json.loads(m.data))
                await m.ack()
        except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError):
            pass  # no receipt yet, or not even the consumer: intake makes it with the agency's first receipt
        return len(got)

    await wait_for(more, lambda n: n >= want, what=f"{want} receipts on {consumer}")
    return got


async def test_an_agency_offline_when_intake_answered_collects_its_receipts_later(secured, settings):
    police = await secured.agency("police")
    await _submit(police, submit_subject(settings, "police"))  # intake is up and answering
    # Fire and forget, then go away: no one is listening for the replies.
    payload = request_payload(request_id="POL-OFFLINE-1")
    await police.publish(submit_subject(settings, "police"), json.dumps(payload).encode())
    await police.publish(submit_subject(settings, "police"), b'{"immediate_risk": ')
    await police.flush()
    await police.close()

    later = await secured.agency("police")
    receipts = await _pull_receipts(later, settings, "police", 3)
    offline = [r for r in receipts if r.get("request_id") == "POL-OFFLINE-1"]
    assert [r["status"] for r in offline] == ["accepted"]
    assert offline[0]["case_id"].startswith("RT-") and offline[0]["event_ids"]
    [malformed] = [r for r in receipts if r["status"] == "rejected"]
    assert malformed["reasons"][0]["code"] == "malformed_json"
    assert {r["agency"] for r in receipts} == {"police"}


async def test_an_agency_cannot_read_or_forge_another_agencys_durable_receipts(secured, settings):
    school = await secured.agency("school")
    await _submit(school, submit_subject(settings, "school"))  # school now has a receipt and a consumer
    refusals = Refusals()
    police = await secured.agency("police", refusals)
    await _submit(police, submit_subject(settings, "police"))
    js = police.jetstream(timeout=1)

    with pytest.raises(nats.errors.TimeoutError):  # pull from school's consumer
        sub = await js.pull_subscribe_bind("school", stream=settings.receipt_stream)
        await sub.fetch(1, timeout=1)
    with pytest.raises(nats.errors.TimeoutError):  # a consumer of its own on school's receipts
        await js.add_consumer(settings.receipt_stream, api.ConsumerConfig(
            name="police", durable_name="police", filter_subject=f"{settings.subject_prefix}.receipts.school.>"))
    with pytest.raises(nats.errors.TimeoutError):  # nor any consumer at all (push consumers deliver anywhere)
        await js.add_consumer(settings.receipt_stream, api.ConsumerConfig(
            name="police", durable_name="police", filter_subject=f"{settings.subject_prefix}.receipts.police.>"))
    with pytest.raises(nats.errors.TimeoutError):  # nor forge a receipt
        await js.publish(f"{settings.subject_prefix}.receipts.school.accepted", b"{}", stream=settings.receipt_stream)
    assert refusals.violation(f"consumer.msg.next.{settings.receipt_stream}.school")
    assert refusals.violation(f"consumer.create.{settings.receipt_stream}.police.{settings.subject_prefix}.receipts.school")
    assert refusals.violation(f"consumer.create.{settings.receipt_stream}.police.{settings.subject_prefix}.receipts.police")
    assert refusals.violation(f"{settings.subject_prefix}.receipts.school.accepted")

    # Its own consumer holds its own receipts only.
    mine = await _pull_receipts(police, settings, "police", 1)
    assert {r["agency"] for r in mine} == {"police"}


async def test_an_agency_stores_messages_on_its_own_inbound_subject_only(secured, settings):
    refusals = Refusals()
    police = await secured.agency("police", refusals)
    js = police.jetstream(timeout=2)
    ack = await js.publish(f"{settings.subject_prefix}.inbound.police.submit",
                           json.dumps(request_payload(request_id="POL-STORED-1")).encode())
    assert ack.stream == settings.inbound_stream
    receipts = await _pull_receipts(police, settings, "police", 1)
    assert receipts[0]["request_id"] == "POL-STORED-1" and receipts[0]["status"] == "accepted"

    before = await secured.messages()
    with pytest.raises(nats.errors.TimeoutError):
        await js.publish(f"{settings.subject_prefix}.inbound.school.submit", json.dumps(request_payload()).encode())
    assert refusals.violation(f"{settings.subject_prefix}.inbound.school.submit")
    assert await secured.messages() == before
