"""Property-based: generated hostile payloads at intake's agency subjects, on a real nats-server.

Every payload here is invalid by construction (wrong types, unknown or missing fields, hostile
strings where a pattern forbids them, huge text, deep nesting, invalid UTF-8, bytes that are not
JSON, unknown commands). Each must get a specific rejection (a documented code and plain words),
the service must answer every one, and the event log must gain nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re

import nats.errors
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from nats.js import api

from rethink.shared.errors import MEANINGS
from rethink.shared.receipts import inbound_subject
from tests.support import request_payload

pytestmark = pytest.mark.nats

VALID = request_payload()
CASE_REFERENCE = r"[A-Za-z0-9][A-Za-z0-9/_.:-]{0,63}"  # "null" is a valid reference, so not hostile here
REQUIRED = ["immediate_risk", "case_reference", "requester", "agencies", "reason", "description", "invitees", "checks"]
KINDS = {"immediate_risk": bool, "case_reference": str, "requester": dict, "agencies": list, "reason": str,
         "description": str, "invitees": list, "checks": dict}
INJECTIONS = ["'; DROP TABLE requests; --", "<script>alert(1)</script>", "../../etc/passwd", "${jndi:ldap://x}",
              "rethink.events.>", "a\x00b", "line\r\nBcc: all@elsewhere.example.org", "\u202etxt.exe", "{{7*7}}",
              "%s%s%n", "\x1b[2J", "null", "", " "]

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(
    max_size=50)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=10), inner, max_size=4), max_leaves=12)


def wrong_type_for(kind: type):
    """A JSON value pydantic will not accept for a field of this kind, even in lax mode."""
    if kind is bool:  # lax bool takes 0/1 and "yes"/"true": offer none of those
        return st.none() | st.lists(json_scalars, max_size=3) | st.dictionaries(st.text(max_size=5), json_scalars,
                                                                                   max_size=3)
    if kind is str:
        return st.none() | st.booleans() | st.integers() | st.lists(json_scalars, max_size=3) | st.dictionaries(
            st.text(max_size=5), json_scalars, max_size=3)
    if kind is list:
        return st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.dictionaries(
            st.text(max_size=5), json_scalars, max_size=3)
    return st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.lists(json_scalars, max_size=3)


def as_body(payload) -> bytes:
    return json.dumps(payload).encode()


wrong_type = st.sampled_from(REQUIRED).flatmap(
    lambda f: wrong_type_for(KINDS[f]).map(lambda v, f=f: as_body({**VALID, f: v})))
missing = st.sampled_from(REQUIRED).map(lambda f: as_body({k: v for k, v in VALID.items() if k != f}))
extra = st.tuples(st.text(min_size=1, max_size=20).filter(lambda k: k not in VALID and k not in {
    "request_id", "command_id", "actor", "agency", "schema_version"}), json_values).map(
    lambda kv: as_body({**VALID, kv[0]: kv[1]}))
hostile_reference = st.sampled_from([s for s in INJECTIONS if not re.fullmatch(CASE_REFERENCE, s)]).map(lambda s: as_body({**VALID, "case_reference": s}))
hostile_email = st.sampled_from(INJECTIONS).map(
    lambda s: as_body({**VALID, "requester": {**VALID["requester"], "email": s}}))
hostile_reason = st.sampled_from(INJECTIONS).map(lambda s: as_body({**VALID, "reason": s}))
huge_text = st.integers(4001, 400_000).map(lambda n: as_body({**VALID, "description": "x" * n}))
deep = st.integers(1_000, 50_000).map(lambda n: b"[" * n + as_body(VALID) + b"]" * n)
deep_object = st.integers(200, 5_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n)
not_utf8 = st.tuples(st.integers(0, len(as_body(VALID))), st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"])
                     ).map(lambda t: as_body(VALID)[:t[0]] + t[1] + as_body(VALID)[t[0]:])
any_bytes = st.binary(max_size=2_000)
any_json = json_values.map(as_body)

submit_bodies = st.one_of(wrong_type, missing, extra, hostile_reference, hostile_email, hostile_reason, huge_text,
                          deep, deep_object, not_utf8, any_bytes, any_json)
confirm_bodies = st.one_of(any_bytes, any_json, st.builds(lambda c: as_body({"case_id": c, "checks": VALID["checks"]}),
                                                          st.sampled_from(["RT-AAAAAAAAAA", "RT-ZZZZZZZZZZ"])))
messages = st.one_of(
    st.tuples(st.just("submit"), submit_bodies),
    st.tuples(st.just("confirm_checks"), confirm_bodies),
    st.tuples(st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=30).filter(
        lambda c: c not in {"submit", "confirm_checks"}), any_json),
)


async def test_generated_hostile_payloads_each_get_a_specific_rejection_and_write_nothing(agency, nc, subjects):
    loop = asyncio.get_running_loop()
    before = await agency.messages()
    seen_codes: set[str] = set()
    sent: list[str] = []

    def send(command: str, body: bytes) -> dict:
        async def go():
            msg = await nc.request(subjects.intake("police", command), body, timeout=10)
            return json.loads(msg.data), await agency.messages()
        return asyncio.run_coroutine_threadsafe(go(), loop).result(timeout=30)

    @hsettings(max_examples=2000, deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(messages)
    def each(message):
        command, body = message
        reply, count = send(command, body)
        sent.append(command)
        assert reply["status"] in {"rejected", "not_found"}, (command, body[:200], reply)
        assert reply["reasons"], reply
        for r in reply["reasons"]:
            assert r["code"] in MEANINGS and r["code"] != "internal_error" and r["message"], reply
            seen_codes.add(r["code"])
        assert count == before, (command, body[:200], reply)

    await asyncio.to_thread(each)
    assert len(sent) >= 2000 and {"submit", "confirm_checks"} <= set(sent)
    assert await agency.messages() == before
    assert {"field_wrong_type", "field_missing", "field_unknown", "field_invalid", "malformed_json",
            "not_utf8"} <= seen_codes
    await agency.still_serves()


async def test_a_message_over_the_servers_max_payload_never_reaches_intake(agency, nc, subjects):
    before = await agency.messages()
    too_big = b"x" * (nc.max_payload + 1)
    with pytest.raises(nats.errors.MaxPayloadError):
        await nc.request(subjects.intake("police", "submit"), too_big, timeout=5)
    assert await agency.messages() == before
    await agency.still_serves()


async def test_generated_hostile_payloads_stored_in_jetstream_each_get_a_kept_rejection_receipt(
        agency, nc, settings, subjects):
    """The same, through the stored path: nobody waits for a reply, so the receipt is the answer."""
    loop = asyncio.get_running_loop()
    js = nc.jetstream()
    before = await agency.messages()
    receipts = await js.pull_subscribe(f"{settings.subject_prefix}.receipts.police.>", stream=settings.receipt_stream,
                                       config=api.ConsumerConfig(ack_policy=api.AckPolicy.NONE,
                                                                 deliver_policy=api.DeliverPolicy.NEW))
    sent: list[str] = []

    def store(command: str, body: bytes) -> dict:
        async def go():
            await js.publish(inbound_subject(subjects, "police", command), body)
            [msg] = await receipts.fetch(1, timeout=10)  # one consumer, one at a time: receipts come in order
            return json.loads(msg.data)
        return asyncio.run_coroutine_threadsafe(go(), loop).result(timeout=30)

    @hsettings(max_examples=500, deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(messages.filter(lambda m: len(m[1]) <= settings.max_message_bytes * 2))  # bigger: JetStream refuses
    def each(message):
        command, body = message
        receipt = store(command, body)
        sent.append(command)
        assert receipt["body_sha256"] == hashlib.sha256(body).hexdigest(), receipt
        assert receipt["status"] in {"rejected", "not_found"}, (command, body[:200], receipt)
        assert all(r["code"] in MEANINGS and r["code"] != "internal_error" for r in receipt["reasons"]), receipt

    await asyncio.to_thread(each)
    assert len(sent) >= 500
    assert await agency.messages() == before
    assert (await js.stream_info(settings.inbound_stream)).state.messages == 0
    await agency.still_serves()
