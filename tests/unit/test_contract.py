"""The published contract is the code's: each generated document matches its committed copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator, FormatChecker
from pydantic import ValidationError

from rethink.intake.app import AGENCY_COMMANDS
from rethink.intake.app import build as intake
from rethink.intake.domain import SubmitRequest
from rethink.shared.clock import SystemClock
from rethink.shared.contract import (
    CODES_END,
    CODES_START,
    asyncapi_yaml,
    codes_markdown,
    json_schemas,
    render_json,
)
from rethink.shared.eventlog import Subjects
from rethink.shared.receipts import inbound_subject, receipt_subject
from rethink.shared.settings import Settings
from tests.support import request_payload

ROOT = Path(__file__).resolve().parents[2]
GUIDE = (ROOT / "docs" / "agencies.md").read_text(encoding="utf-8")


def test_the_guide_lists_every_rejection_code_as_the_code_defines_it():
    block = GUIDE.split(CODES_START + "\n", 1)[1].split(CODES_END, 1)[0]
    assert block == codes_markdown()


def test_the_committed_json_schemas_are_the_ones_the_models_generate():
    committed = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "docs" / "schemas").glob("*.json")}
    generated = {name: render_json(doc) for name, doc in json_schemas().items()}
    assert committed.keys() == generated.keys(), "run `rethink contract write` and commit docs/"
    for name in generated:
        assert committed[name] == generated[name], f"docs/schemas/{name} drifted: run `rethink contract write`"


def _schema(name: str) -> dict:
    return json.loads((ROOT / "docs" / "schemas" / name).read_text(encoding="utf-8"))


def test_the_example_request_in_the_guide_is_valid_against_the_published_schema():
    example = json.loads(GUIDE.split("```json\n", 1)[1].split("```", 1)[0])
    Draft202012Validator(_schema("submit.v1.json"), format_checker=FormatChecker()).validate(example)
    SubmitRequest.model_validate(example)  # and the service agrees


@pytest.mark.parametrize("change, path", [
    ({"child_name": "A Child"}, "child_name"),  # unknown fields are refused, as by the service
    ({"schema_version": 2}, "schema_version"),
    ({"agencies": "Police"}, "agencies"),
    # an address the mail cannot carry (the part before @ not ASCII: SMTPUTF8): refused by both
    ({"invitees": [{"name": "Alex Social", "agency": "Children's Social Care", "email": "zoë@example.org"}]},
     "invitees.0.email"),
    ({"requester": {**request_payload()["requester"], "email": "名前@example.org"}}, "requester.email"),
])
def test_the_published_request_schema_refuses_what_the_service_refuses(change, path):
    validator = Draft202012Validator(_schema("submit.v1.json"), format_checker=FormatChecker())
    assert not validator.is_valid({**request_payload(), **change})
    with pytest.raises(ValidationError) as refused:
        SubmitRequest.model_validate({**request_payload(), **change})
    assert path in {".".join(str(p) for p in e["loc"]) for e in refused.value.errors()}


def test_a_receipt_reader_built_on_v1_accepts_a_receipt_with_a_field_added_later():
    receipt = {"schema_version": 1, "receipt_id": "6f1d3c52-2b7a-4c55-9d43-0b7f1c2a9e10", "agency": "police",
               "command": "submit", "received_at": "2026-11-26T10:00:00Z", "status": "rejected",
               "body_sha256": "0" * 64, "reasons": [{"field": "checks", "code": "field_missing", "message": "x",
                                                     "hint": "added in a later release"}],
               "added_in_a_later_release": True}
    Draft202012Validator(_schema("receipt.v1.json")).validate(receipt)


def test_the_committed_asyncapi_document_is_the_one_the_code_generates():
    committed = (ROOT / "docs" / "asyncapi.yaml").read_text(encoding="utf-8")
    assert committed == asyncapi_yaml(), "docs/asyncapi.yaml drifted: run `rethink contract write`"


def test_the_asyncapi_channels_are_the_subjects_intake_listens_on_and_publishes_to(tmp_path):
    doc = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text(encoding="utf-8"))
    assert doc["asyncapi"] == "3.0.0"
    subjects = Subjects("rethink")
    parts = intake(Settings(state_dir=tmp_path), None, SystemClock())
    assert {name: route.model for name, route in parts.commands.items()} == {
        name: model for name, (model, _) in AGENCY_COMMANDS.items()}
    addresses = {name: ch["address"] for name, ch in doc["channels"].items()}
    assert addresses == {**{c: subjects.intake("{agency}", c) for c in parts.commands},
                         **{f"{c}_stored": inbound_subject(subjects, "{agency}", c) for c in parts.commands},
                         "receipts": receipt_subject(subjects, "{agency}", "{status}"), "reply": None}
    for command, (model, _) in AGENCY_COMMANDS.items():
        for channel in (command, f"{command}_stored"):
            ref = doc["components"]["messages"][f"{channel}:SubscribeMessage"]["payload"]["$ref"]
            assert ref == f"#/components/schemas/{model.__name__}"
        assert doc["operations"][command]["reply"]["channel"] == {"$ref": "#/channels/reply"}
        assert "reply" not in doc["operations"][f"{command}_stored"]
