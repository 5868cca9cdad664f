"""Every documented rejection code is produced by some input, against the real intake service.

Agencies' systems branch on ``code``; so each code in docs/agencies.md must be reachable, and
each input below must keep producing its code.
"""

from __future__ import annotations

import json

import pytest

from rethink.shared.commands import Command
from rethink.shared.envelope import new_case_id
from rethink.shared.errors import MEANINGS, Code, Reason
from rethink.shared.events import RequestSubmitted
from rethink.shared.messaging import Route, dispatch
from tests.support import request_payload, seed_case

pytestmark = pytest.mark.nats

YES = {"answer": True}
NO = {"answer": False}
ALL_YES = {"raised_with_network": YES, "conversation_had": YES, "hips_policy_considered": YES}


def _without(key: str) -> dict:
    payload = request_payload()
    del payload[key]
    return payload


# code -> (body or payload, command, field the reason names)
SIMPLE = {
    Code.PAYLOAD_TOO_LARGE: (request_payload(description="x" * 300_000), "submit", "(body)"),
    Code.NOT_UTF8: (b"\xff\xfe{}", "submit", "(body)"),
    Code.MALFORMED_JSON: (b'{"requester": ', "submit", "(body)"),
    Code.NESTING_TOO_DEEP: (b"[" * 100_000, "submit", "(body)"),
    Code.NOT_AN_OBJECT: (b"[]", "submit", "(body)"),
    Code.UNKNOWN_COMMAND: (request_payload(), "bogus", "(subject)"),
    Code.FIELD_MISSING: (_without("checks"), "submit", "checks"),
    Code.FIELD_UNKNOWN: (request_payload(child_name="A Child"), "submit", "child_name"),
    Code.FIELD_WRONG_TYPE: (request_payload(agencies="Police"), "submit", "agencies"),
    Code.FIELD_INVALID: (request_payload(case_reference="../../etc"), "submit", "case_reference"),
    Code.AGENCY_MISMATCH: (request_payload(agency="school"), "submit", "agency"),
    Code.IMMEDIATE_RISK: (request_payload(immediate_risk=True), "submit", "immediate_risk"),
    Code.CASE_NOT_FOUND: ({"case_id": "RT-AAAAAAAAAA", "checks": ALL_YES}, "confirm_checks", "case_id"),
}


def _codes(reply: dict) -> dict[str, str]:
    return {r["field"]: r["code"] for r in reply["reasons"]}


@pytest.mark.parametrize("code", list(SIMPLE), ids=str)
async def test_each_input_gets_its_stable_code(agency, code):
    body, command, field = SIMPLE[code]
    before = await agency.messages()
    reply = await agency.send(body if isinstance(body, bytes) else json.dumps(body).encode(), command=command)
    assert reply["status"] == ("not_found" if code is Code.CASE_NOT_FOUND else "rejected"), reply
    assert _codes(reply).get(field) == code, reply
    assert all(r["message"] for r in reply["reasons"])  # plain words beside every code
    assert await agency.messages() == before


async def test_a_payload_claiming_its_own_agency_is_accepted(agency):
    reply = await agency.send(request_payload(agency="police"))
    assert reply["status"] == "accepted", reply


async def test_confirming_checks_codes_need_a_case_first(agency):
    open_case = await agency.send(request_payload(checks={**ALL_YES, "conversation_had": NO}))
    case_id = open_case["case_id"]

    still_no = await agency.refused({"case_id": case_id, "checks": {**ALL_YES, "conversation_had": NO}},
                                    command="confirm_checks")
    assert _codes(still_no) == {"checks.conversation_had": Code.CHECKS_INCOMPLETE}

    other = await agency.refused({"case_id": case_id, "checks": ALL_YES}, agency="health", command="confirm_checks")
    assert _codes(other) == {"case_id": Code.NOT_REQUESTING_AGENCY}

    claims = await agency.refused({"case_id": case_id, "checks": ALL_YES, "agency": "health"},
                                  command="confirm_checks")
    assert _codes(claims) == {"agency": Code.AGENCY_MISMATCH}


async def test_a_request_id_whose_case_holds_another_request_is_a_conflict(agency, event_log):
    """Reachable only if a case id derived from (agency, request_id) already holds something else."""
    case_id = new_case_id("request|police|POL-CLASH-1")
    incomplete = request_payload(checks={**ALL_YES, "conversation_had": NO})  # no reaction from intake
    other = RequestSubmitted.model_validate({k: v for k, v in incomplete.items() if k != "immediate_risk"})
    await seed_case(event_log, case_id, [other], producer="someone-else")
    reply = await agency.refused(request_payload(request_id="POL-CLASH-1"))
    assert _codes(reply) == {"request_id": Code.REQUEST_ID_CONFLICT}


async def test_an_internal_failure_is_reported_with_its_code_not_raised():
    async def broken(_: Command) -> dict:
        raise RuntimeError("database on fire")

    reply = await dispatch({"submit": Route(Command, broken)}, "submit", b"{}", 1024)
    assert reply["status"] == "error"
    assert [r["code"] for r in reply["reasons"]] == [Code.INTERNAL_ERROR]
    assert "database on fire" not in json.dumps(reply)


async def test_a_moment_without_the_log_or_database_is_reported_as_unavailable():
    async def cut_off(_: Command) -> dict:
        raise TimeoutError("nats: timeout")

    reply = await dispatch({"submit": Route(Command, cut_off)}, "submit", b"{}", 1024)
    assert reply["status"] == "unavailable"
    assert [r["code"] for r in reply["reasons"]] == [Code.UNAVAILABLE]


def test_every_documented_code_is_exercised_by_a_test_here():
    exercised = set(SIMPLE) | {Code.CHECKS_INCOMPLETE, Code.NOT_REQUESTING_AGENCY, Code.REQUEST_ID_CONFLICT,
                               Code.INTERNAL_ERROR, Code.UNAVAILABLE}
    assert exercised == set(MEANINGS)


def test_a_reason_without_a_code_is_never_sent_to_an_agency():
    assert Reason("x", "y").as_dict()["code"] == Code.NOT_ALLOWED not in MEANINGS
