from __future__ import annotations

import pytest
from pydantic import ValidationError

from rethink.intake import domain
from rethink.shared.errors import Rejected
from rethink.shared.events import ChecksConfirmed, RequestSubmitted
from tests.support import recorded, request_payload


def _request(**overrides) -> domain.SubmitRequest:
    return domain.SubmitRequest.model_validate(request_payload(**overrides))


def _checks(**answers: bool) -> dict:
    base = {"raised_with_network": True, "conversation_had": True, "hips_policy_considered": True, **answers}
    return {k: {"answer": v} for k, v in base.items()}


def test_a_valid_request_becomes_request_submitted_with_every_field():
    req = _request()
    [event] = domain.decide_submission([], req, agency="police")
    assert isinstance(event, RequestSubmitted)
    assert event.case_reference == "CSC-2026-0042"
    assert [p.email for p in event.invitees] == ["sw@council.example.org", "hv@health.example.org"]


def test_a_child_at_immediate_risk_is_refused_with_the_instruction_to_refer_now():
    with pytest.raises(Rejected) as exc:
        domain.decide_submission([], _request(immediate_risk=True), agency="police")
    assert exc.value.reasons[0].field == "immediate_risk"
    assert "safeguarding referral" in exc.value.guidance


def test_invitees_must_include_someone_besides_the_requester():
    only_me = [{"name": "Sam Teacher", "agency": "Northside School Trust", "email": "DSL@school.example.org"}]
    with pytest.raises(ValidationError, match="besides the requester"):
        _request(invitees=only_me)


def test_invalid_email_and_unknown_fields_are_refused():
    with pytest.raises(ValidationError) as exc:
        _request(invitees=[{"name": "X", "agency": "Y", "email": "not-an-email"}], child_name="Someone")
    fields = {".".join(map(str, e["loc"])) for e in exc.value.errors()}
    assert {"invitees.0.email", "child_name"} <= fields


@pytest.mark.parametrize("reference", ["../../etc/passwd", "a b", "rethink.events.>", "x\ny", ""])
def test_hostile_case_references_are_refused(reference):
    with pytest.raises(ValidationError):
        _request(case_reference=reference)


def test_agencies_are_deduplicated_ignoring_case():
    assert _request(agencies=["Police", "police", "Health"]).agencies == ["Police", "Health"]


def test_complete_checks_are_confirmed_once_by_reaction():
    submitted = recorded(RequestSubmitted(**_request().model_dump(exclude={"immediate_risk", "command_id", "actor", "agency", "schema_version"})))
    assert [type(e) for e in domain.react([submitted], submitted)] == [ChecksConfirmed]
    confirmed = recorded(ChecksConfirmed(checks=submitted.payload.checks), seq=2)
    assert domain.react([submitted, confirmed], submitted) == []


def test_missing_checks_wait_and_guide_the_requester_back_to_the_lowest_level():
    req = _request(checks=_checks(hips_policy_considered=False))
    submitted = recorded(RequestSubmitted(**req.model_dump(exclude={"immediate_risk", "command_id", "actor", "agency", "schema_version"})),
                         producer="police")
    assert domain.react([submitted], submitted) == []
    still_no = domain.ConfirmChecks(case_id="RT-AAAAAAAAAA", checks=_checks(conversation_had=False))
    with pytest.raises(Rejected) as exc:
        domain.decide_confirmation([submitted], still_no, agency="police")
    assert [r.field for r in exc.value.reasons] == ["checks.conversation_had"]
    assert "right conversation" in exc.value.guidance


def test_a_later_confirmation_completes_the_request_only_for_the_requesting_agency():
    req = _request(checks=_checks(raised_with_network=False))
    submitted = recorded(RequestSubmitted(**req.model_dump(exclude={"immediate_risk", "command_id", "actor", "agency", "schema_version"})),
                         producer="police")
    cmd = domain.ConfirmChecks(case_id="RT-AAAAAAAAAA", checks=_checks())
    assert [type(e) for e in domain.decide_confirmation([submitted], cmd, agency="police")] == [ChecksConfirmed]
    with pytest.raises(Rejected, match="only the agency"):
        domain.decide_confirmation([submitted], cmd, agency="school")


def test_guidance_names_each_missing_check():
    text = domain.guidance_for(["raised_with_network", "hips_policy_considered"])
    assert "professional network" in text and "HIPS Escalation Policy" in text


@pytest.mark.parametrize("field,value", [("description", "plan\x00drift"), ("description", "\x1b[31mred"),
                                         ("agencies", ["Police\x07"])])
def test_control_characters_are_refused_but_line_breaks_in_free_text_are_kept(field, value):
    with pytest.raises(ValidationError) as exc:
        _request(**{field: value})
    assert exc.value.errors()[0]["loc"][0] == field
    assert _request(description="line one\nline two\ttabbed").description == "line one\nline two\ttabbed"
