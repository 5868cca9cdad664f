"""The contract agencies build against, generated from the code so it cannot drift.

docs/agencies.md holds the rejection-code table, docs/schemas/ the JSON Schemas and
docs/asyncapi.yaml the AsyncAPI document; tests compare each with what this module renders,
and ``rethink contract write`` refreshes them after a deliberate change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .errors import MEANINGS

CODES_START, CODES_END = "<!-- codes:start -->", "<!-- codes:end -->"


def codes_markdown() -> str:
    rows = ["| code | meaning |", "| --- | --- |"]
    rows += [f"| `{code}` | {meaning} |" for code, meaning in MEANINGS.items()]
    return "\n".join(rows) + "\n"


# --- JSON Schemas -----------------------------------------------------------------------------

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _commands() -> dict[str, tuple[type[BaseModel], str]]:
    # Imported when needed: shared must not import a service when it is imported itself.
    from rethink.intake.app import AGENCY_COMMANDS

    return AGENCY_COMMANDS


def _inbound() -> dict[str, type[BaseModel]]:
    return {command: model for command, (model, _) in _commands().items()}


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, for every message an agency sends and the receipt it gets."""
    from .receipts import SCHEMA_VERSION, Receipt

    out: dict[str, dict[str, Any]] = {}
    for command, model in _inbound().items():
        version = model.model_fields["schema_version"].default
        out[f"{command}.v{version}.json"] = _document(
            model.model_json_schema(mode="validation"), f"{command}.v{version}.json",
            f"Publish to <prefix>.intake.<agency>.{command} (request/reply).")
    out[f"receipt.v{SCHEMA_VERSION}.json"] = _document(
        Receipt.model_json_schema(mode="serialization"), f"receipt.v{SCHEMA_VERSION}.json",
        "The reply to every agency message, also kept on <prefix>.receipts.<agency>.<status>. "
        "Consumers must ignore fields they do not know: fields are added without a version change.")
    return out


def _document(schema: dict[str, Any], name: str, comment: str) -> dict[str, Any]:
    return {"$schema": SCHEMA_DIALECT, "$id": f"https://rethink.example.org/schemas/{name}",
            "$comment": comment, **schema}


def render_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def write_contract(docs: Path) -> list[Path]:
    """Write every generated document under ``docs``; returns what it wrote."""
    written = []
    folder = docs / "schemas"
    folder.mkdir(parents=True, exist_ok=True)
    for name, doc in json_schemas().items():
        path = folder / name
        path.write_text(render_json(doc), encoding="utf-8")
        written.append(path)
    asyncapi = docs / "asyncapi.yaml"
    asyncapi.write_text(asyncapi_yaml(), encoding="utf-8")
    written.append(asyncapi)
    guide = docs / "agencies.md"
    text = guide.read_text(encoding="utf-8")
    head, rest = text.split(CODES_START + "\n", 1)
    _, tail = rest.split(CODES_END, 1)
    guide.write_text(head + CODES_START + "\n" + codes_markdown() + CODES_END + tail, encoding="utf-8")
    written.append(guide)
    return written


# --- AsyncAPI -----------------------------------------------------------------------------------

ASYNCAPI_SERVER = "nats://nats.partnership.example.org:4222"  # each partnership's operator gives the real one


def agency_broker(prefix: str = "rethink"):
    """A FastStream broker declaring what an agency sees: its inbound subjects, with the same
    payload models intake validates, and its receipt subjects. Never connected: it only
    describes, so the AsyncAPI document comes from the same models as the running service."""
    from faststream import Path as SubjectPart
    from faststream.nats import NatsBroker

    from .receipts import Receipt

    def _doc_handler(name: str, model: type[BaseModel]):
        async def handler(body, agency=SubjectPart()):  # noqa: B008 - FastStream's way to name a subject token
            raise NotImplementedError  # documentation only

        handler.__name__ = name
        handler.__annotations__ = {"body": model, "agency": str, "return": Receipt}
        return handler

    broker = NatsBroker(ASYNCAPI_SERVER)
    for command, (model, summary) in _commands().items():
        handler = _doc_handler(command, model)
        broker.subscriber(
            f"{prefix}.intake.{{agency}}.{command}", title=command,
            description=f"{summary} Request/reply: the reply is the receipt. Publish as your agency's user; "
                        f"`agency` is your agency's name, and the server refuses any other.",
        )(handler)
        broker.subscriber(
            f"{prefix}.inbound.{{agency}}.{command}", title=f"{command}_stored",
            description=f"{summary} Stored: publish with JetStream (the PubAck says it is kept, even while "
                        "Re-think's intake is down); the receipt comes on your receipt subjects.",
        )(_doc_handler(f"{command}_stored", model))
    broker.publisher(
        f"{prefix}.receipts.{{agency}}.{{status}}", schema=Receipt, title="receipts",
        description="Every receipt, kept in the receipt stream for an agency that was offline; `status` is "
                    "accepted, rejected, not_found, unavailable or error. Pull them from your durable consumer "
                    "(named after your agency) and ack each.",
    )
    return broker


def asyncapi_document(prefix: str = "rethink") -> dict[str, Any]:
    from faststream.specification import AsyncAPI

    from .receipts import SCHEMA_VERSION

    spec = AsyncAPI(agency_broker(prefix), title="Re-think: agency contract", version=str(SCHEMA_VERSION),
                    schema_version="3.0.0",
                    description="What an agency's system sends to Re-think and receives back. The guide is "
                                "docs/agencies.md; the JSON Schemas are docs/schemas/.")
    doc = json.loads(spec.to_specification().to_json())
    # What FastStream does not say, AsyncAPI 3 can: the subject tokens, and that the reply to
    # each command is a receipt on the requester's own inbox.
    parameters = {
        "agency": {"description": "Your agency's name: the user the partnership gave you (rethink agencies add)."},
        "status": {"enum": ["accepted", "rejected", "not_found", "unavailable", "error"], "description": "The receipt's status."},
    }
    for channel in doc["channels"].values():
        used = {p: parameters[p] for p in parameters if "{" + p + "}" in channel["address"]}
        if used:
            channel["parameters"] = used
    receipt_message = doc["channels"]["receipts"]["messages"]["Message"]
    doc["channels"]["reply"] = {
        "address": None, "description": "The reply inbox of the request: under _INBOX_<agency>, the only inbox "
                                        "prefix your user may subscribe to.",
        "messages": {"Receipt": json.loads(json.dumps(receipt_message))},  # a copy: no YAML anchors
    }
    for name, operation in doc["operations"].items():
        if operation["action"] == "receive" and not name.endswith("_stored"):
            operation["reply"] = {"channel": {"$ref": "#/channels/reply"},
                                  "messages": [{"$ref": "#/channels/reply/messages/Receipt"}]}
    # FastStream's order of channels depends on what was imported first: sort, so the committed
    # document compares equal however it was generated.
    for section in (doc, doc["components"]):
        for key in ("channels", "operations", "messages", "schemas"):
            if key in section:
                section[key] = dict(sorted(section[key].items()))
    return doc


def asyncapi_yaml(prefix: str = "rethink") -> str:
    import yaml

    return yaml.safe_dump(asyncapi_document(prefix), sort_keys=False, allow_unicode=True, width=100)
