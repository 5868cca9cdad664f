"""Receipts: what every message on an agency's subject gets back, and keeps.

The receipt is the reply to the request *and* a message on the agency's own durable receipt
subject (``<prefix>.receipts.<agency>.<status>`` in the receipt stream), so an agency whose
system was offline when the reply came collects it later with a consumer of its own. The
server lets an agency read only its own receipt subjects (see ``auth.agency_permissions``).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import datetime
from typing import Any, Literal

from nats.js import JetStreamContext, api
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from .eventlog import Subjects
from .logs import get_logger

log = get_logger("rethink.receipts")

SCHEMA_VERSION = 1
Status = Literal["accepted", "rejected", "not_found", "unavailable", "error"]
# Identifiers echoed back from the message only when they are plainly identifiers.
_ECHO = {"request_id": re.compile(r"^[A-Za-z0-9._:-]{1,100}$"),
         "command_id": re.compile(r"^[0-9a-fA-F-]{32,36}$"),
         "case_id": re.compile(r"^RT-[A-Z2-7]{10}$")}


# Built strictly here (extra="forbid"), but published open: a reader must ignore fields it does
# not know, because receipts gain fields without a schema_version change.
_OPEN = {"additionalProperties": True}


class ReceiptReason(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_OPEN)

    field: str = Field(description="Dotted path into the message; (body) for the whole message, (subject) for "
                                   "the subject.")
    code: str = Field(description="Stable machine code; the table is in docs/agencies.md.")
    message: str = Field(description="The same reason in plain words (wording may improve).")


class Receipt(BaseModel):
    """One receipt per message received on an agency subject."""

    model_config = ConfigDict(extra="forbid", title="Receipt", json_schema_extra=_OPEN)

    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="Version of this receipt's schema.")
    receipt_id: uuid.UUID = Field(description="Unique per receipt; also its Nats-Msg-Id.")
    agency: str = Field(description="The agency whose subject the message arrived on.")
    command: str = Field(description="The command named by the subject (submit, confirm_checks, ...).")
    received_at: AwareDatetime
    status: Status = Field(description="accepted: written (or already written); rejected / not_found: nothing "
                                       "written, see reasons; unavailable / error: not done, safe to re-send "
                                       "with the same request_id or command_id.")
    body_sha256: str = Field(pattern=r"^[0-9a-f]{64}$",
                             description="SHA-256 of the message body as received: matches any message, even "
                                         "one that was not JSON.")
    request_id: str | None = Field(default=None, description="Echoed from the message, when it had one.")
    command_id: str | None = Field(default=None, description="Echoed from the message, when it had one.")
    case_id: str | None = Field(default=None, description="The case the message created or concerned.")
    event_ids: list[uuid.UUID] = Field(default_factory=list, description="Ids of the events written (accepted).")
    events: list[str] = Field(default_factory=list, description="Types of the events written (accepted).")
    duplicate: bool | None = Field(default=None, description="true: a repeat; the original events, nothing new.")
    checks: Literal["complete", "incomplete"] | None = None
    missing_checks: list[str] | None = None
    next_steps: str | None = None
    reasons: list[ReceiptReason] = Field(default_factory=list, description="Why it was refused, per field.")
    guidance: str | None = Field(default=None, description="What to do instead, when there is something.")

    def to_reply(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def _echo(body: bytes, max_bytes: int) -> dict[str, str]:
    if len(body) > max_bytes:
        return {}
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, pattern in _ECHO.items() if isinstance(v := data.get(k), str) and pattern.fullmatch(v)}


def receipt_for(reply: dict[str, Any], agency: str, command: str, body: bytes, received_at: datetime,
                max_bytes: int) -> Receipt:
    """The reply of dispatch, stamped so the agency can match it to what it sent."""
    fields = {**_echo(body, max_bytes), **reply}
    return Receipt(receipt_id=uuid.uuid4(), agency=agency, command=command[:64], received_at=received_at,
                   body_sha256=hashlib.sha256(body).hexdigest(), **fields)


INBOUND_CONSUMER = "intake-inbound"
INBOUND_ATTEMPTS = 5  # an internal error on a stored message is retried this often before it is receipted


def inbound_subject(subjects: Subjects, agency: str, command: str) -> str:
    """Where an agency *stores* a message in JetStream (js.publish), to be handled when intake can."""
    return f"{subjects.prefix}.inbound.{agency}.{command}"


def receipt_subject(subjects: Subjects, agency: str, status: str = "*") -> str:
    return f"{subjects.prefix}.receipts.{agency}.{status}"


def receipt_consumer_config(subjects: Subjects, agency: str) -> api.ConsumerConfig:
    """The agency's own durable pull consumer: it pulls and acks; it cannot create or change it."""
    return api.ConsumerConfig(
        name=agency, durable_name=agency, filter_subject=receipt_subject(subjects, agency, ">"),
        deliver_policy=api.DeliverPolicy.ALL, ack_policy=api.AckPolicy.EXPLICIT, ack_wait=30.0,
        max_ack_pending=1000,
    )


class ReceiptLog:
    """Publishes receipts to the durable receipt stream, and makes each agency's consumer."""

    def __init__(self, js: JetStreamContext, stream: str, subjects: Subjects) -> None:
        self._js, self.stream, self.subjects = js, stream, subjects
        self._consumers: set[str] = set()

    async def _ensure_consumer(self, agency: str) -> None:
        if agency in self._consumers:
            return
        # Creating a durable with the config it already has is a no-op for the server.
        await self._js.add_consumer(self.stream, receipt_consumer_config(self.subjects, agency))
        self._consumers.add(agency)

    async def keep(self, receipt: Receipt) -> bool:
        """Store the receipt; False (and a logged error) if it could not be stored.

        The agency still gets the reply, so a receipt stream that is unavailable never turns
        a written request into an unanswered one.
        """
        try:
            await self._ensure_consumer(receipt.agency)
            await self._js.publish(receipt_subject(self.subjects, receipt.agency, receipt.status),
                                   receipt.model_dump_json(exclude_none=True).encode(), stream=self.stream,
                                   timeout=5, headers={"Nats-Msg-Id": str(receipt.receipt_id)})
            return True
        except Exception as exc:
            log.error("receipt_not_stored", agency=receipt.agency, receipt_id=str(receipt.receipt_id),
                      case_id=receipt.case_id, error=f"{type(exc).__name__}: {exc}")
            return False
