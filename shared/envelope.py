"""The envelope every event travels in, and the ids that make reactions repeatable."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from .events import EVENT_TYPES, FROM_LOG, Event
from .fieldcrypt import PersonalDataLocked, sealed_kids
from .upcasting import CannotUpcast, upcast

CASE_ID_PATTERN = r"^RT-[A-Z2-7]{10}$"
_NAMESPACE = uuid.UUID("5b0c3f4e-8a51-4d0e-9c8f-7f6a2e1d0b11")


class InvalidEvent(ValueError):
    """A message on the log that cannot be read as an event of ours."""


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: uuid.UUID
    type: str
    schema_version: int = Field(ge=1)
    case_id: str = Field(pattern=CASE_ID_PATTERN)
    occurred_at: AwareDatetime
    recorded_at: AwareDatetime
    producer: str = Field(min_length=1, max_length=120, description="Agency or service that wrote the event.")
    # Up to 200 characters in clear; longer once sealed (rethink.shared.privacy: a person is personal data).
    actor: str = Field(min_length=1, max_length=512, description="Person or system acting.")
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None = None
    # The case's hash chain: the id and SHA-256 of the stored bytes of the case's previous
    # event (None on its first). Auditors verify it; see rethink.shared.audit.
    prev_event_id: uuid.UUID | None = None
    prev_hash: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    data: dict[str, Any]

    def payload(self, clear: dict[str, Any] | None = None) -> Event:
        """The event itself. ``clear``: the data with personal fields opened (rethink.shared.privacy)."""
        cls = EVENT_TYPES.get(self.type)
        if cls is None:
            raise InvalidEvent(f"unknown event type {self.type!r}")
        try:
            data = upcast(self.type, self.schema_version, self.data if clear is None else clear, cls.schema_version)
        except CannotUpcast as exc:
            raise InvalidEvent(str(exc)) from exc
        try:
            return cls.model_validate(data, context=FROM_LOG)
        except ValidationError as exc:
            raise InvalidEvent(f"{self.type} payload invalid: {exc.errors()[0]['msg']}") from exc

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            raise InvalidEvent(f"not an event envelope: {exc.errors()[0]['msg']}") from exc


def digest(data: bytes) -> str:
    """What the next event of the case records as ``prev_hash``: covers content and envelope."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Recorded:
    """An event as read back from the log, with its stream sequence and the digest of its bytes."""

    envelope: Envelope  # as stored: what the digest covers
    seq: int
    payload: Event
    digest: str = ""
    opened: Envelope | None = None  # the envelope with its personal fields opened, for showing to people

    @property
    def shown(self) -> Envelope:
        """The envelope to show a person: actor and data in clear (or erased), never ciphertext."""
        return self.opened if self.opened is not None else self.envelope

    @classmethod
    def sealed(cls, data: bytes, seq: int) -> Recorded:
        """A stored message as it is, payload left unread (None): enough for the hash chain and the
        envelope, with no key. Raises ``InvalidEvent`` for bytes that are not an envelope."""
        return cls(envelope=Envelope.from_bytes(data), seq=seq, payload=None, digest=digest(data))  # type: ignore[arg-type]

    @classmethod
    def from_message(cls, data: bytes, seq: int, clear: dict[str, Any] | None = None) -> Recorded:
        """For plain events; sealed ones are opened by the event log (``EventLog.decode``)."""
        env = Envelope.from_bytes(data)
        if clear is None and sealed_kids(env.data):
            raise PersonalDataLocked(f"{env.type} of {env.case_id} holds encrypted personal data: "
                                     "read it through the event log with its key store")
        return cls(envelope=env, seq=seq, payload=env.payload(clear), digest=digest(data))

    @property
    def type(self) -> str:
        return self.envelope.type


@dataclass(frozen=True)
class Origin:
    """Who is acting and why: stamped on every event a decision produces."""

    producer: str
    actor: str
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None = None


def stamp(payload: Event, case_id: str, origin: Origin, occurred_at, recorded_at, event_id: uuid.UUID) -> Envelope:
    return Envelope(
        event_id=event_id,
        type=payload.type,
        schema_version=payload.schema_version,
        case_id=case_id,
        occurred_at=occurred_at,
        recorded_at=recorded_at,
        producer=origin.producer,
        actor=origin.actor,
        correlation_id=origin.correlation_id,
        causation_id=origin.causation_id,
        data=json.loads(payload.model_dump_json()),
    )


def derived_id(*parts: object) -> uuid.UUID:
    """A deterministic id: the same cause always yields the same event id, so JetStream drops repeats."""
    return uuid.uuid5(_NAMESPACE, "|".join(str(p) for p in parts))


def new_case_id(seed: str | None = None) -> str:
    """``RT-`` and ten base32 characters; derived from ``seed`` when one is given (idempotent submissions)."""
    raw = hashlib.sha256(seed.encode()).digest() if seed is not None else secrets.token_bytes(16)
    return "RT-" + base64.b32encode(raw).decode()[:10]
