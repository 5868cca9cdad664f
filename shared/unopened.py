"""A stored event decoded in one pass, its personal fields read as erased: a rebuild's fast path.

``EventLog.decode_unopened`` reads a stored message as an erased case's event reads, for a
projection whose writes read none of that type's personal fields. It parsed the envelope (its
``data`` as a dict), copied ``data`` with each sealed value replaced by ``ERASED``, then validated
the payload from that dict: three passes over the same values, ~26 µs for a ``MeetingHeld`` of
fifteen sealed values, and a replay does it for most of its events.

Here the sealed values are replaced in the stored bytes (one regular expression) and the envelope
is validated with its ``data`` typed as the event's own class, from JSON, in one pass: 45-55 % less
per event (``python -m tests.benchmarks.decoding``). The same validators run on the same values, in
pydantic's JSON mode where the slow path used its Python mode on values the JSON parser made.

Anything this path is not sure of gives None, and the caller decodes the slow way, which decides
(refuses, or upcasts): a message that does not validate here for any reason, one of another schema
version than its class reads (an upcaster may derive a field), one whose type is not the one its
subject named. So this path decodes only what the slow path would decode to the same payload.

Why replacing bytes is sound: ``seal`` writes a sealed value as a JSON object of exactly four keys
in this order, with base64 values, and the envelope is serialised compactly. In valid JSON, the
pattern's ``{"`` cannot start inside a string (the quote would end it, and ``enc"`` cannot follow a
string), so every match is a whole object, and a sealed one. A sealed value written any other way
is left as it is, fails the payload's validation, and goes the slow way.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Literal

from pydantic import BaseModel, ValidationError, create_model

from .envelope import Envelope, Recorded
from .events import ERASED, EVENT_TYPES, FROM_LOG
from .privacy import ERASURE

_SEALED = re.compile(rb'\{"enc":"v1","kid":"[A-Za-z0-9_=-]{1,64}","nonce":"[A-Za-z0-9+/=]{1,64}","ct":"[A-Za-z0-9+/=]*"\}')
_ERASED = b'"' + ERASED.encode() + b'"'
_new, _set = object.__new__, object.__setattr__


@cache  # one per event type: ``decode`` asks only for the types there are
def _typed(kind: str) -> type[BaseModel]:
    """The envelope with ``type`` fixed to ``kind`` and ``data`` of its class."""
    return create_model(f"Unopened{kind}", __base__=Envelope, type=(Literal[kind], ...),
                        data=(EVENT_TYPES[kind], ...))


def decode(data: bytes, seq: int, kind: str) -> Recorded | None:
    """The event in ``data`` (stored at ``seq``, its subject naming ``kind``) with every sealed value
    read as ``ERASED``; None when only the slow path may say what it is."""
    if kind == ERASURE or kind not in EVENT_TYPES:  # an erasure is always opened (``decode_unopened``)
        return None
    try:
        env = _typed(kind).model_validate_json(_SEALED.sub(_ERASED, data), context=FROM_LOG)
    except ValidationError:
        return None
    payload = env.data  # type: ignore[attr-defined]
    if env.schema_version != payload.schema_version:  # type: ignore[attr-defined]
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
