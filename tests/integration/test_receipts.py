"""Receipts: every message on an agency subject gets one, as the reply and kept in the receipt stream."""

from __future__ import annotations

import hashlib
import json

import nats.errors
import nats.js.errors
import pytest
from jsonschema import Draft202012Validator
from nats.js import api

from rethink.intake.app import build as intake
from rethink.shared.contract import json_schemas
from rethink.shared.receipts import Receipt, inbound_subject
from tests.support import request_payload, wait_for

pytestmark = pytest.mark.nats


async def _kept(nc, settings, agency: str, want: int) -> list[dict]:
    """Read the agency's receipts as Re-think's services user (the agency's own view is in
    test_agency_permissions)."""
    sub = await nc.jetstream().pull_subscribe(f"{settings.subject_prefix}.receipts.{agency}.>",
                                              stream=settings.receipt_stream,
                                              config=api.ConsumerConfig(ack_policy=api.AckPolicy.NONE))
    got: list[dict] = []

    async def more():
        try:
            got.extend(json.loads(m.data) for m in await sub.fetch(want - len(got), timeout=0.5))
        except nats.errors.TimeoutError:
            pass
        return len(got)

    await wait_for(more, lambda n: n >= want, what=f"{want} kept receipts")
    await sub.unsubscribe()
    return got


async def test_an_accepted_request_gets_a_receipt_with_its_case_and_events_kept_durably(agency, nc, settings):
    body = json.dumps(request_payload(request_id="POL-7")).encode()
    reply = await agency.send(body)
    Receipt.model_validate(reply)
    Draft202012Validator(json_schemas()["receipt.v1.json"]).validate(reply)
    assert reply["status"] == "accepted" and reply["agency"] == "police" and reply["command"] == "submit"
    assert reply["request_id"] == "POL-7" and reply["events"] == ["RequestSubmitted"]
    assert reply["body_sha256"] == hashlib.sha256(body).hexdigest()
    kept = [r for r in await _kept(nc, settings, "police", 2) if r["receipt_id"] == reply["receipt_id"]]
    assert kept == [reply]


async def test_a_rejection_receipt_carries_every_reason_and_is_kept_on_the_rejected_subject(agency, nc, settings):
    payload = request_payload(command_id="6f1d3c52-2b7a-4c55-9d43-0b7f1c2a9e10", agencies="Police",
                              child_name="A Child")
    reply = await agency.refused(payload)
    Draft202012Validator(json_schemas()["receipt.v1.json"]).validate(reply)
    assert reply["command_id"] == payload["command_id"]
    assert {(r["field"], r["code"]) for r in reply["reasons"]} == {
        ("agencies", "field_wrong_type"), ("child_name", "field_unknown")}
    msg = await nc.jetstream().get_last_msg(settings.receipt_stream,
                                            f"{settings.subject_prefix}.receipts.police.rejected")
    assert json.loads(msg.data) == reply


async def test_the_reply_still_comes_when_the_receipt_stream_is_missing(agency, nc, settings):
    await nc.jetstream().delete_stream(settings.receipt_stream)
    reply = await agency.send(request_payload())
    assert reply["status"] == "accepted", reply


async def test_a_request_id_re_sent_long_after_the_dedup_window_returns_the_original_case(
        run_services, nc, settings, subjects, event_log):
    """"A week later": JetStream's Nats-Msg-Id dedup has long forgotten the first message, yet
    the case id is derived from (agency, request_id), so the repeat finds its own events."""
    js = nc.jetstream()
    await js.update_stream(api.StreamConfig(name=settings.stream, subjects=[subjects.all_events],
                                            duplicate_window=1.0, deny_purge=True, max_msg_size=2 * 262144))
    await run_services(intake)
    payload = json.dumps(request_payload(request_id="POL-WEEK-1")).encode()
    first = json.loads((await nc.request(subjects.intake("police", "submit"), payload, timeout=10)).data)
    assert first["status"] == "accepted" and "duplicate" not in first
    history = await wait_for(lambda: event_log.read_case(first["case_id"]), lambda h: len(h) == 2,
                             what="ChecksConfirmed")

    # The window has passed once JetStream accepts the first event's Msg-Id again; probe that on
    # a scratch stream with the same window, started after the first event was written.
    await js.add_stream(api.StreamConfig(name=f"{settings.stream}_PROBE", subjects=[f"{settings.subject_prefix}.probe"],
                                         duplicate_window=1.0, storage=api.StorageType.MEMORY))
    try:
        await js.publish(f"{settings.subject_prefix}.probe", b"x", headers={"Nats-Msg-Id": "probe"})

        async def forgotten():
            ack = await js.publish(f"{settings.subject_prefix}.probe", b"x", headers={"Nats-Msg-Id": "probe"})
            return not ack.duplicate

        await wait_for(forgotten, what="the dedup window to pass")
    finally:
        await js.delete_stream(f"{settings.stream}_PROBE")

    again = json.loads((await nc.request(subjects.intake("police", "submit"), payload, timeout=10)).data)
    assert again["status"] == "accepted" and again["duplicate"] is True
    assert again["case_id"] == first["case_id"] and again["event_ids"] == first["event_ids"]
    assert await event_log.read_case(first["case_id"]) == history
    assert (await js.stream_info(settings.stream)).state.messages == 2


async def test_messages_stored_while_intake_is_down_are_handled_when_it_starts_and_receipted(
        stream, run_services, nc, settings, subjects, event_log):
    js = nc.jetstream()
    subject = inbound_subject(subjects, "police", "submit")
    stored = await js.publish(subject, json.dumps(request_payload(request_id="POL-DOWN-1")).encode())
    await js.publish(subject, b'{"immediate_risk": ')
    assert stored.stream == settings.inbound_stream  # JetStream has it: nothing is lost while intake is down
    assert (await js.stream_info(settings.stream)).state.messages == 0

    await run_services(intake)

    kept = await _kept(nc, settings, "police", 2)
    [accepted] = [r for r in kept if r["status"] == "accepted"]
    [rejected] = [r for r in kept if r["status"] == "rejected"]
    assert accepted["request_id"] == "POL-DOWN-1" and accepted["events"] == ["RequestSubmitted"]
    assert [r.type for r in await event_log.read_case(accepted["case_id"])][0] == "RequestSubmitted"
    assert rejected["reasons"][0]["code"] == "malformed_json"
    # Each left the inbound stream once receipted (a work queue).
    await wait_for(lambda: js.stream_info(settings.inbound_stream), lambda i: i.state.messages == 0,
                   what="the inbound stream to drain")

    again = await js.publish(subject, json.dumps(request_payload(request_id="POL-DOWN-1")).encode())
    assert again.seq > stored.seq
    receipts = await _kept(nc, settings, "police", 3)
    assert [r.get("duplicate") for r in receipts if r.get("request_id") == "POL-DOWN-1"] == [None, True]


async def test_a_stored_message_over_twice_intakes_limit_is_refused_by_jetstream_and_not_kept(
        stream, nc, settings, subjects):
    js = nc.jetstream()
    with pytest.raises(nats.js.errors.APIError, match="maximum"):
        await js.publish(inbound_subject(subjects, "police", "submit"), b"x" * (settings.max_message_bytes * 2 + 1))
    assert (await js.stream_info(settings.inbound_stream)).state.messages == 0
