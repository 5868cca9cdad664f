"""Encrypting an event's personal fields, one by one, with its case's data key. Pure: no I/O.

Each personal value (as marked in the event schemas) is replaced in the stored payload by

    {"enc": "v1", "kid": <key id>, "nonce": <base64>, "ct": <base64>}

AES-256-GCM, whose associated data binds the case id, the event type and the field's exact
place (``invitees.1.email``): a ciphertext copied into another field, event or case fails
to decrypt instead of reading as someone else's data. Everything else stays readable, so
the log's structure, the hash chain and verification need no key.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic_core import from_json

from .events import ERASED, EVENT_TYPES, personal_fields

VERSION = "v1"
_SEALED_KEYS = frozenset({"enc", "kid", "nonce", "ct"})


class PersonalDataLocked(RuntimeError):
    """Sealed personal data met by a reader that has no key store: refuse, never show ciphertext."""


class UnreadableCiphertext(ValueError):
    """A sealed field that its own key does not open: it was altered or moved."""


@dataclass(frozen=True)
class DataKey:
    kid: str
    secret: bytes  # 32 bytes, AES-256

    @classmethod
    def new(cls) -> DataKey:
        return cls(base64.urlsafe_b64encode(os.urandom(9)).decode(), AESGCM.generate_key(bit_length=256))

    def __repr__(self) -> str:  # never print a secret into a log or a traceback
        return f"DataKey(kid={self.kid!r})"

    @cached_property
    def cipher(self) -> AESGCM:
        """Made once per key, not per field (~3 µs each): it lives and goes with the key itself,
        so a key the cache forgets (an erasure) leaves no cipher behind."""
        return AESGCM(self.secret)


@cache
def personal_paths(event_type: str) -> tuple[tuple[str, ...], ...]:
    """The schema's personal paths of an event type, split: ``invitees[].email`` -> (invitees, [], email)."""
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        return ()
    out = []
    for path in personal_fields(cls):
        parts: list[str] = []
        for token in path.split("."):
            if token.endswith("[]"):
                parts += [token[:-2], "[]"]
            else:
                parts.append(token)
        out.append(tuple(parts))
    return tuple(out)


def is_sealed(value: Any) -> bool:
    return (isinstance(value, dict) and len(value) == 4 and value.get("enc") == VERSION
            and value.keys() == _SEALED_KEYS)


def _aad(case_id: str, event_type: str, where: str) -> bytes:
    return f"rethink/{VERSION}|{case_id}|{event_type}|{where}".encode()


def has_personal_values(event_type: str, data: Mapping[str, Any]) -> bool:
    found = False

    def note(value: Any, _where: str) -> Any:
        nonlocal found
        found = True
        return value

    _map_paths(data, personal_paths(event_type), note)
    return found


def seal(data: dict[str, Any], case_id: str, event_type: str, key: DataKey) -> dict[str, Any]:
    """A copy of ``data`` with every personal value (not None, not already sealed) encrypted."""
    aead = key.cipher

    def encrypt(value: Any, where: str) -> Any:
        nonce = os.urandom(12)
        ct = aead.encrypt(nonce, json.dumps(value).encode(), _aad(case_id, event_type, where))
        return {"enc": VERSION, "kid": key.kid, "nonce": _b64(nonce), "ct": _b64(ct)}

    return _map_paths(data, personal_paths(event_type), encrypt)


_TEXT_PREFIX = f"enc:{VERSION}:"


def seal_text(value: str, case_id: str, event_type: str, where: str, key: DataKey) -> str:
    """One string sealed into a string, for envelope fields that must stay strings (``actor``)."""
    nonce = os.urandom(12)
    ct = key.cipher.encrypt(nonce, value.encode(), _aad(case_id, event_type, where))
    return f"{_TEXT_PREFIX}{key.kid}:{_b64(nonce + ct)}"


def sealed_text_kid(value: str) -> str | None:
    if not value.startswith(_TEXT_PREFIX):
        return None
    return value[len(_TEXT_PREFIX):].split(":", 1)[0]


def open_text(value: str, case_id: str, event_type: str, where: str, key: DataKey | None) -> str:
    if key is None:
        return ERASED
    try:  # anything amiss is an unreadable value, not a failure of the reader (an altered log)
        raw = _unb64(value[len(_TEXT_PREFIX):].split(":", 1)[1])
        return key.cipher.decrypt(raw[:12], raw[12:], _aad(case_id, event_type, where)).decode()
    except (InvalidTag, ValueError, IndexError) as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise UnreadableCiphertext(f"{event_type} {where} of {case_id} does not decrypt with its case's key: "
                                   "altered, or moved from another event or case") from exc


def sealed_kids(data: Any) -> set[str]:
    """The key ids used anywhere in a stored payload."""
    kids: set[str] = set()
    _collect_kids(data, kids)
    return kids


def _collect_kids(node: Any, kids: set[str]) -> None:
    # No copy and no places: this runs for every event read.
    if isinstance(node, dict):
        if is_sealed(node):
            if isinstance(node["kid"], str):  # any other names no key: opening it finds it unreadable
                kids.add(node["kid"])
            return
        for v in node.values():
            if isinstance(v, (dict, list)):
                _collect_kids(v, kids)
    elif isinstance(node, list):
        for v in node:
            if isinstance(v, (dict, list)):
                _collect_kids(v, kids)


def open_sealed(data: dict[str, Any], case_id: str, event_type: str,
                keys: Mapping[str, DataKey | None] | Callable[[str], DataKey | None]) -> dict[str, Any]:
    """A copy of ``data`` with every sealed value decrypted, or ``ERASED`` where its key is gone.

    ``keys`` maps each kid in the payload to its key, or to None when that key was destroyed; or is
    a function doing so, which may raise to stop the opening (``PersonalData``'s one-pass read).
    """
    key_for = keys if callable(keys) else keys.__getitem__
    return _walk_sealed(data, "", _decryptor(case_id, event_type, key_for))


def open_sealed_in_place(data: dict[str, Any], case_id: str, event_type: str,
                         key_for: Callable[[str], DataKey | None]) -> None:
    """``open_sealed`` on a payload that is the caller's alone (parsed for this): each sealed value
    replaced where it is, and nothing copied; a copy of every container was a third of opening."""
    _walk(data, [], _decryptor(case_id, event_type, key_for), copy=False)


def _decryptor(case_id: str, event_type: str, key_for: Callable[[str], DataKey | None]
               ) -> Callable[[dict[str, Any], str], Any]:
    def decrypt(value: dict[str, Any], where: str) -> Any:
        if not isinstance(value["kid"], str):  # an altered log: no key has such an id
            raise UnreadableCiphertext(f"{event_type} field {where} of {case_id} names no key")
        key = key_for(value["kid"])
        if key is None:
            return ERASED
        try:
            clear = key.cipher.decrypt(_unb64(value["nonce"]), _unb64(value["ct"]), _aad(case_id, event_type, where))
        except (InvalidTag, ValueError, TypeError) as exc:  # TypeError: a nonce or ciphertext not a string
            raise UnreadableCiphertext(f"{event_type} field {where} of {case_id} does not decrypt with its "
                                       "case's key: altered, or moved from another field or case") from exc
        # pydantic-core's parser: the same values as json.loads for what seal() wrote (json.dumps
        # of a JSON value), at a fraction of the stdlib's per-call cost; malformed -> ValueError.
        try:
            return from_json(clear, cache_strings=False)  # no personal value kept in its string cache
        except ValueError as exc:
            raise UnreadableCiphertext(f"{event_type} field {where} of {case_id} decrypts to no JSON value") from exc

    return decrypt


def erase_sealed(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with every sealed value read as ``ERASED``, none decrypted: the payload an
    erased case's event reads as, for a reader that reads none of its personal values (a rebuild's
    projection of the types it declares so). No key, no decryption, no place names: each of those
    was most of what opening an event cost. A ciphertext altered in the log is not noticed here,
    since it is not read; the hash chain is what finds that (``rethink.shared.audit``). A rebuild
    decodes most events in one pass instead (``onepass``); this is its slow way."""
    return _walk(data, [], _read_as_erased)


def _read_as_erased(_value: dict[str, Any], _where: str) -> str:
    return ERASED


def _map_paths(data: Any, paths: tuple[tuple[str, ...], ...],
               fn: Callable[[Any, str], Any]) -> Any:
    def go(node: Any, rest: tuple[str, ...], where: list[str]) -> Any:
        if not rest:
            return node if node is None or is_sealed(node) else fn(node, ".".join(where))
        head, tail = rest[0], rest[1:]
        if head == "[]":
            if not isinstance(node, list):
                return node
            return [go(item, tail, [*where, str(i)]) for i, item in enumerate(node)]
        if not isinstance(node, dict) or head not in node:
            return node
        return {**node, head: go(node[head], tail, [*where, head])}

    for path in paths:
        data = go(data, path, [])
    return data


def _walk_sealed(node: Any, where: str, fn: Callable[[dict[str, Any], str], Any]) -> Any:
    """A copy of ``node`` with ``fn(value, place)`` in place of every sealed value.

    Every event read goes through here, so scalars are copied without a call each, a sealed value
    is handled by its container's loop (no call of its own), and a place's dotted name is built
    only for a sealed value.
    """
    if isinstance(node, dict) and is_sealed(node):
        return fn(node, where)
    if isinstance(node, (dict, list)):
        return _walk(node, [where] if where else [], fn)
    return node


def _walk(node: dict[str, Any] | list[Any], path: list[str], fn: Callable[[dict[str, Any], str], Any],
          copy: bool = True) -> Any:
    """A copy of the (unsealed) container ``node``; ``path`` is its place, as a list of names.
    ``copy=False``: ``node`` itself changed instead (one parsed for this alone; a copy of every
    container was a third of opening an event), and returned."""
    if not copy:
        out: Any = node
    elif isinstance(node, dict):
        out = dict(node)
    else:
        out = list(node)
    items: Any = node.items() if isinstance(node, dict) else enumerate(node)
    for k, v in items:  # a value replaced in place keeps the dict's size: iterating on is safe
        if isinstance(v, dict):
            path.append(k if isinstance(k, str) else str(k))
            if len(v) == 4 and v.get("enc") == VERSION and v.keys() == _SEALED_KEYS:  # is_sealed, inline
                out[k] = fn(v, ".".join(path))
            else:
                out[k] = _walk(v, path, fn, copy)
            path.pop()
        elif isinstance(v, list):
            path.append(k if isinstance(k, str) else str(k))
            out[k] = _walk(v, path, fn, copy)
            path.pop()
    return out


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> bytes:
    return binascii.a2b_base64(text, strict_mode=True)  # = b64decode(validate=True), without its wrapping
