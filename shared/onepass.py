"""A stored event decoded in one pass for a rebuild's projection: envelope and payload validated
together, with nothing made that a projection's writes do not read.

A rebuild decoded each event as every reader does: the envelope parsed (its ``data`` as a dict), a
copy of ``data`` made with each sealed value opened or read as erased, the payload validated from
that copy, and for an opened event its digest and a second envelope (the one shown to people).
For a ``MeetingHeld`` of fifteen sealed values read unopened that was ~26 µs, and a replay decodes
most of its events (``python -m tests.benchmarks.decoding`` prints both ways, per type).

- **Unopened** (``decode_unopened``: the types a projection declares ``UNOPENED``): the sealed
  values are replaced in the stored bytes by ``ERASED`` (one regular expression), then the envelope
  is validated from JSON with its ``data`` typed as the event's class: 45-55 % less for the larger
  types. The same validators run on the same values, in pydantic's JSON mode where the slow path
  used its Python mode on values the JSON parser made.
- **Opened** (``decode_opened``): the bytes parsed once, each sealed value opened where it lies
  with the case's key, then envelope and payload validated from that, together. No digest and no
  second envelope: a projection's writes read neither.

Anything either path is not sure of gives None, and the caller decodes the slow way, which decides
(refuses, upcasts, fetches a key): a message that does not validate here for any reason, one of
another schema version than its class reads (an upcaster may derive a field), one whose type is not
the one its subject named, a value sealed with a key other than the one in hand, an erasure. So
these paths decode only what the slow path would decode to the same payload.

Why replacing bytes is sound: ``seal`` writes a sealed value as a JSON object of exactly four keys
in this order, with base64 values, and the envelope is serialised compactly. In valid JSON, the
pattern's ``{"`` cannot start inside a string (the quote would end it, and ``enc"`` cannot follow a
string), so every match is a whole object, and a sealed one. A sealed value written any other way
is left as it is, fails the payload's validation, and goes the slow way.

The envelopes made here carry an empty ``data`` (the payload holds it), no digest and nothing to
show a person: only for a projection's writes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ValidationError, create_model
from pydantic_core import from_json

from .envelope import Envelope, Recorded
from .events import ERASED, EVENT_TYPES, FROM_LOG
from .fieldcrypt import DataKey, open_sealed_in_place, open_text, sealed_text_kid
from .privacy import ACTOR, ERASURE, only_key

_SEALED = re.compile(rb'\{"enc":"v1","kid":"[A-Za-z0-9_=-]{1,64}","nonce":"[A-Za-z0-9+/=]{1,64}","ct":"[A-Za-z0-9+/=]*"\}')
_ERASED = b'"' + ERASED.encode() + b'"'
_new, _set = object.__new__, object.__setattr__


@cache  # one per event type: the callers ask only for the types there are
def _typed(kind: str) -> type[BaseModel]:
    """The envelope with ``type`` fixed to ``kind`` and ``data`` of its class."""
    return create_model(f"OnePass{kind}", __base__=Envelope, type=(Literal[kind], ...),
                        data=(EVENT_TYPES[kind], ...))


def _ours(kind: str) -> bool:
    return kind != ERASURE and kind in EVENT_TYPES  # an erasure is always read the slow way


def decode_unopened(data: bytes, seq: int, kind: str) -> Recorded | None:
    """The event in ``data`` (stored at ``seq``, its subject naming ``kind``) with every sealed value
    read as ``ERASED``; None when only the slow path may say what it is."""
    if not _ours(kind):
        return None
    try:
        env = _typed(kind).model_validate_json(_SEALED.sub(_ERASED, data), context=FROM_LOG)
    except ValidationError:
        return None
    return _recorded(env, seq)


def decode_opened(data: bytes, seq: int, kind: str, key_of: Callable[[str], DataKey | None]) -> Recorded | None:
    """The event in ``data`` with every sealed value opened with its case's key, if ``key_of`` has it
    in hand; None when only the slow path may say what it is."""
    if not _ours(kind):
        return None
    try:
        raw = from_json(data)
        case_id, body = raw["case_id"], raw["data"]
        if raw["type"] != kind or type(case_id) is not str or type(body) is not dict:
            return None
        key = key_of(case_id)
        if key is None:
            return None
        only = only_key(key)  # a value sealed with another key: the slow path fetches that one
        open_sealed_in_place(body, case_id, kind, only)
        actor = raw["actor"]
        if type(actor) is str:
            actor_kid = sealed_text_kid(actor)
            if actor_kid is not None:
                raw["actor"] = open_text(actor, case_id, kind, ACTOR, only(actor_kid))
        env = _typed(kind).model_validate(raw, context=FROM_LOG)
    except (ValueError, LookupError, TypeError):  # ValidationError and UnreadableCiphertext among them
        return None
    return _recorded(env, seq)


def _recorded(env: Any, seq: int) -> Recorded | None:
    payload = env.data
    if env.schema_version != payload.schema_version:
        return None  # written by another version: its upcasters decide what it reads as
    # A plain Envelope of the fields as validated, made as pydantic's ``model_construct`` makes one
    # (which took ~4 µs, a third of the whole): what the rest of the code takes an envelope to be.
    fields = env.__dict__  # the typed envelope's own: it is dropped here
    fields["data"] = {}  # its data is the payload's; a fresh dict, as nothing may share one
    plain = _new(Envelope)
    _set(plain, "__dict__", fields)
    _set(plain, "__pydantic_fields_set__", env.__pydantic_fields_set__)
    _set(plain, "__pydantic_extra__", None)
    _set(plain, "__pydantic_private__", None)
    return Recorded(plain, seq, payload)

