"""Untrusted agency input against the real intake service: every bad request is refused with a
specific reason, nothing reaches the log, and the service keeps answering."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.support import request_payload, wait_for

pytestmark = pytest.mark.nats

NO = {"answer": False, "note": "Not yet"}
YES = {"answer": True}


def reason(reply: dict, field: str) -> str:
    messages = [r["message"] for r in reply["reasons"] if r["field"] == field]
    assert messages, f"no reason for {field!r} in {reply}"
    return messages[0]


def with_invitees(*invitees: dict) -> dict:
    return request_payload(invitees=list(invitees))


REQUESTER = request_payload()["requester"]


# --- bytes that are not a request ------------------------------------------------------------


@pytest.mark.parametrize("body, phrase", [
    pytest.param(b'{"requester": ', "malformed JSON", id="truncated-json"),
    pytest.param(json.dumps([request_payload()]).encode(), "expected a JSON object, got list", id="json-array"),
    pytest.param(b"\xff\xfe{\"a\": 1}", "not UTF-8", id="not-utf8"),
    pytest.param(b"", "malformed JSON", id="empty-body"),
])
async def test_a_body_that_is_not_a_json_object_is_refused(agency, body, phrase):
    reply = await agency.refused(body)
    assert phrase in reason(reply, "(body)")
    await agency.still_serves()


async def test_deeply_nested_json_is_refused_not_left_unanswered(agency, nc, subjects):
    """100 KB of ``[`` is under the size limit but deeper than Python's json recursion limit.

    Regression: FastStream's default decoder json-parsed every body before our handler and let
    the RecursionError escape, so the agency got no reply at all (and nothing was logged).
    """
    before = await agency.messages()
    msg = await nc.request(subjects.intake("police", "submit"), b"[" * 100_000, timeout=3)
    reply = json.loads(msg.data)
    assert reply["status"] == "rejected", reply
    assert reason(reply, "(body)")
    assert await agency.messages() == before
    await agency.still_serves()


# --- wrong shapes -------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, field, phrase", [
    pytest.param({"agencies": "Northside School Trust"}, "agencies", "valid list", id="agencies-as-string"),
    pytest.param({"immediate_risk": "maybe"}, "immediate_risk", "valid boolean", id="immediate-risk-maybe"),
    pytest.param({"child_name": "A Child"}, "child_name", "Extra inputs are not permitted", id="unknown-field"),
    pytest.param({"invitees": [{"name": "Alex Social", "agency": "Children's Social Care", "email": "not-an-email"}]},
                 "invitees.0.email", "not a valid email", id="invalid-invitee-email"),
    pytest.param({"invitees": [{"name": "Alex Social", "agency": "Children's Social Care", "email": "zoë@example.org"}]},
                 "invitees.0.email", "the part before @ must be ASCII: internationalised local parts (SMTPUTF8) "
                 "are not supported", id="invitee-email-the-mail-cannot-carry"),
    pytest.param({"invitees": [{k: REQUESTER[k] for k in ("name", "agency", "email")}]},
                 "(body)", "besides the requester", id="only-the-requester-invited"),
])
async def test_a_request_of_the_wrong_shape_is_refused_naming_the_field(agency, overrides, field, phrase):
    reply = await agency.refused(request_payload(**overrides))
    assert phrase in reason(reply, field)
    await agency.still_serves()


async def test_a_request_without_its_checks_is_refused_naming_the_field(agency):
    payload = request_payload()
    del payload["checks"]
    reply = await agency.refused(payload)
    assert "Field required" in reason(reply, "checks")
    await agency.still_serves()


# --- hostile strings and sizes --------------------------------------------------------------------


@pytest.mark.parametrize("case_reference", [
    pytest.param("../../etc/passwd", id="path-traversal"),
    pytest.param("CSC-2026\n0042", id="newline"),
    pytest.param("CSC\x00\x1b[2J0042", id="control-chars"),
    pytest.param("rethink.events.>", id="subject-wildcard"),
    pytest.param("CSC 2026 0042", id="spaces"),
    pytest.param("C" * 65, id="too-long"),
])
async def test_a_hostile_case_reference_is_refused(agency, case_reference):
    reply = await agency.refused(request_payload(case_reference=case_reference))
    assert "should match pattern" in reason(reply, "case_reference")
    await agency.still_serves()


def _invitee(**overrides) -> dict:
    return {"name": "Alex Social", "agency": "Children's Social Care", "email": "sw@council.example.org", **overrides}


@pytest.mark.parametrize("overrides, field", [
    pytest.param({"invitees": [_invitee(name="Alex\r\nBcc: all@elsewhere.example.org")]}, "invitees.0.name",
                 id="header-injection-in-a-name"),
    pytest.param({"agencies": ["Police\x00", "Health"]}, "agencies.0", id="nul-in-an-agency"),
    pytest.param({"requester": {**REQUESTER, "role": "DSL\x1b[31m"}}, "requester.role", id="escape-in-a-role"),
    pytest.param({"description": "Disagreement\x07 about the plan"}, "description", id="bell-in-free-text"),
])
async def test_control_characters_in_other_text_fields_are_refused(agency, overrides, field):
    reply = await agency.refused(request_payload(**overrides))
    assert "should match pattern" in reason(reply, field)
    await agency.still_serves()


async def test_an_oversized_request_is_refused_with_the_limit(agency, settings):
    payload = request_payload(description="x" * 300_000)
    body = json.dumps(payload).encode()
    assert settings.max_message_bytes < len(body) < 1_000_000  # bigger than ours, within NATS max_payload
    reply = await agency.refused(body)
    message = reason(reply, "(body)")
    assert str(settings.max_message_bytes) in message and str(len(body)) in message
    await agency.still_serves()


async def test_an_unknown_command_on_an_agency_subject_lists_the_known_ones(agency):
    reply = await agency.refused(request_payload(), command="bogus")
    message = reason(reply, "(subject)")
    assert "'bogus'" in message and "confirm_checks" in message and "submit" in message
    await agency.still_serves()


# --- the rules of a request ---------------------------------------------------------------------


async def test_a_child_at_immediate_risk_is_redirected_to_a_safeguarding_referral(agency):
    reply = await agency.refused(request_payload(immediate_risk=True))
    assert "immediate risk" in reason(reply, "immediate_risk")
    assert "safeguarding referral" in reply["guidance"]
    await agency.still_serves()


async def test_a_request_missing_a_check_is_kept_until_its_checks_are_confirmed(agency, event_log):
    checks = {"raised_with_network": YES, "conversation_had": NO, "hips_policy_considered": YES}
    reply = await agency.send(request_payload(checks=checks))
    assert reply["status"] == "accepted", reply
    assert reply["checks"] == "incomplete"
    assert reply["missing_checks"] == ["conversation_had"]
    assert "Have a conversation" in reply["next_steps"]
    case_id = reply["case_id"]
    [submitted] = await event_log.read_case(case_id)
    await agency.applied(submitted.seq)
    assert [r.type for r in await event_log.read_case(case_id)] == ["RequestSubmitted"]  # not confirmed by itself

    still_no = await agency.refused({"case_id": case_id, "checks": checks}, command="confirm_checks")
    assert "answered yes" in reason(still_no, "checks.conversation_had")
    assert "Have a conversation" in still_no["guidance"]

    all_yes = {"case_id": case_id, "checks": {**checks, "conversation_had": YES}}
    other = await agency.refused(all_yes, agency="health", command="confirm_checks")
    assert "only the agency that made the request" in reason(other, "case_id")

    confirmed = await agency.send(all_yes, command="confirm_checks")
    assert confirmed["status"] == "accepted", confirmed
    assert confirmed["events"] == ["ChecksConfirmed"] and confirmed["checks"] == "complete"
    history = await event_log.read_case(case_id)
    assert [r.type for r in history] == ["RequestSubmitted", "ChecksConfirmed"]
    assert history[1].envelope.producer == "police"

    late_other = await agency.refused(all_yes, agency="health", command="confirm_checks")
    assert "only the agency that made the request" in reason(late_other, "case_id")
    await agency.still_serves()


async def test_confirming_checks_of_an_unknown_case_is_not_found(agency):
    before = await agency.messages()
    checks = {"raised_with_network": YES, "conversation_had": YES, "hips_policy_considered": YES}
    reply = await agency.send({"case_id": "RT-AAAAAAAAAA", "checks": checks}, command="confirm_checks")
    assert reply["status"] == "not_found"
    assert "RT-AAAAAAAAAA" in reason(reply, "case_id")
    assert await agency.messages() == before
    await agency.still_serves()


async def test_re_sending_a_request_id_returns_the_same_case_once(agency, event_log):
    payload = request_payload(request_id="POL-2026-0042")
    first = await agency.send(payload)
    assert first["status"] == "accepted" and "duplicate" not in first
    case_id = first["case_id"]
    await wait_for(lambda: event_log.read_case(case_id), lambda h: len(h) == 2, what="ChecksConfirmed")
    before = await agency.messages()

    again = await agency.send(payload)

    assert again["status"] == "accepted"
    assert again["case_id"] == case_id and again["duplicate"] is True
    assert again["event_ids"] == first["event_ids"]
    history = await event_log.read_case(case_id)
    assert [r.type for r in history].count("RequestSubmitted") == 1
    assert await agency.messages() == before


async def test_the_same_request_id_sent_many_times_at_once_is_one_case(agency, event_log):
    """Intake handles submissions side by side: the copies race to create the same case, one wins
    and the others find its events and answer with them."""
    payload = request_payload(request_id="POL-2026-0777")
    replies = await asyncio.gather(*(agency.send(payload) for _ in range(8)))

    assert {r["status"] for r in replies} == {"accepted"}, replies
    assert len({r["case_id"] for r in replies}) == 1
    assert sum("duplicate" not in r for r in replies) == 1  # exactly one wrote the case
    history = await event_log.read_case(replies[0]["case_id"])
    assert [r.type for r in history].count("RequestSubmitted") == 1


async def test_the_same_request_id_from_another_agency_is_a_different_case(agency, event_log):
    payload = request_payload(request_id="REQ-1")
    police = await agency.send(payload, agency="police")
    health = await agency.send(payload, agency="health")
    assert police["status"] == health["status"] == "accepted"
    assert police["case_id"] != health["case_id"] and "duplicate" not in health
    [submitted] = [r for r in await event_log.read_case(health["case_id"]) if r.type == "RequestSubmitted"]
    assert submitted.envelope.producer == "health"


async def test_re_sending_a_command_id_without_a_request_id_returns_the_same_case_once(agency, event_log):
    """``command_id`` promises "re-sending the same id is safe".

    Regression: without a request_id, intake's submit drew a fresh random case id on every
    call, so the repeat looked for its own events in an empty case, appended an event whose
    Nats-Msg-Id JetStream had already seen (silently dropped as a duplicate), and answered
    "accepted" with a second case id that had no events at all.
    """
    payload = request_payload(command_id="6f1d3c52-2b7a-4c55-9d43-0b7f1c2a9e10")
    first = await agency.send(payload)
    assert first["status"] == "accepted", first
    await wait_for(lambda: event_log.read_case(first["case_id"]), lambda h: len(h) == 2, what="ChecksConfirmed")
    before = await agency.messages()

    again = await agency.send(payload)

    assert again["status"] == "accepted", again
    assert await agency.messages() == before
    assert await event_log.read_case(again["case_id"]), "the reply names a case with no events"
    assert again["case_id"] == first["case_id"] and again.get("duplicate") is True
