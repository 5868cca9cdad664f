"""Anchors files, signed: each case's head kept outside the log, in a file nobody can quietly rewrite.

An anchors file is only worth what its integrity is worth: someone able to rewrite the log's
last events could rewrite the anchors too. So the file is signed with an Ed25519 key the
auditors hold (``rethink audit keygen``), and ``audit verify --anchors`` checks the signature
with the public key before trusting a single head in it. The public key can be handed to
inspectors: it verifies, it cannot sign.

The signature covers the canonical JSON of everything in the file but the signature itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .audit import Anchor

FORMAT = "rethink-anchors"
VERSION = 1
ALGORITHM = "Ed25519"


class AnchorsError(ValueError):
    """The anchors file or a key cannot be used (missing, malformed): exit 1."""


class AnchorsTampered(AnchorsError):
    """The anchors file is not what the auditors' key signed: tamper evidence, exit 2."""


def canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(folder: Path) -> tuple[Path, Path, str]:
    """Write ``anchor-signing.pem`` (private, mode 600) and ``anchor-signing.pub.pem``; never overwrite."""
    private_path, public_path = folder / "anchor-signing.pem", folder / "anchor-signing.pub.pem"
    for path in (private_path, public_path):
        if path.exists():
            raise AnchorsError(f"{path} exists: a new key would make the anchors signed so far unverifiable "
                               "with it; move it away first if you mean to replace it")
    folder.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path, key_id(key.public_key())


def _read_pem(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise AnchorsError(f"{path}: no such {what} file") from None
    except OSError as exc:
        raise AnchorsError(f"{path}: cannot read the {what} ({exc.strerror})") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(_read_pem(path, "signing key"), password=None)
    except (ValueError, TypeError) as exc:
        raise AnchorsError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AnchorsError(f"{path}: not an Ed25519 key (make one with `rethink audit keygen`)")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(_read_pem(path, "public key"))
    except (ValueError, TypeError) as exc:
        raise AnchorsError(f"{path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AnchorsError(f"{path}: not an Ed25519 public key")
    return key


def signed_document(heads: dict[str, Anchor], anchored_at: str, stream: str, key: Ed25519PrivateKey) -> dict[str, Any]:
    body = {"format": FORMAT, "version": VERSION, "stream": stream, "anchored_at": anchored_at,
            "cases": {cid: asdict(a) for cid, a in sorted(heads.items())}}
    signature = key.sign(canonical(body))
    return {**body, "signature": {"algorithm": ALGORITHM, "key_id": key_id(key.public_key()),
                                  "value": base64.b64encode(signature).decode()}}


def write_atomically(path: Path, document: dict[str, Any]) -> None:
    """A scheduled run that dies half way leaves the previous file, never half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_verified(path: Path, public: Ed25519PublicKey) -> dict[str, Anchor]:
    """The heads in a signed anchors file, once its signature checks out with ``public``."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AnchorsError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnchorsError(f"{path}: not an anchors file (malformed JSON: {exc})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise AnchorsError(f"{path}: not an anchors file (made by `rethink audit anchor`)")
    signature = document.pop("signature", None)
    if not isinstance(signature, dict) or not isinstance(signature.get("value"), str):
        raise AnchorsTampered(f"{path}: the anchors file is not signed, so it cannot be trusted")
    try:
        public.verify(base64.b64decode(signature["value"], validate=True), canonical(document))
    except (InvalidSignature, ValueError):
        theirs = signature.get("key_id")
        hint = (f"it was signed with another key ({theirs}, not {key_id(public)})"
                if theirs != key_id(public) else "it was changed after it was signed")
        raise AnchorsTampered(f"{path}: the anchors file's signature does not match: {hint}") from None
    try:
        return {cid: Anchor(**a) for cid, a in document["cases"].items()}
    except (KeyError, TypeError, AttributeError) as exc:
        raise AnchorsError(f"{path}: signed, but not an anchors file ({exc})") from None
