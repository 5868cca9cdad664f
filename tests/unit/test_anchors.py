"""Signed anchors files: a rewritten, re-signed or unsigned file is refused; a genuine one is read."""

from __future__ import annotations

import json
import stat

import pytest

from rethink.shared.anchors import (
    AnchorsError,
    AnchorsTampered,
    generate_keypair,
    load_private_key,
    load_public_key,
    read_verified,
    signed_document,
    write_atomically,
)
from rethink.shared.audit import Anchor

HEAD = Anchor(event_id="00000000-0000-0000-0000-000000000001", digest="a" * 64, seq=7,
              anchored_at="2026-11-26T12:00:00+00:00")


@pytest.fixture
def keys(tmp_path):
    private, public, _ = generate_keypair(tmp_path / "keys")
    return load_private_key(private), load_public_key(public)


@pytest.fixture
def anchors(tmp_path, keys):
    path = tmp_path / "anchors.json"
    write_atomically(path, signed_document({"RT-AAAAAAAAAA": HEAD}, HEAD.anchored_at, "RETHINK_EVENTS", keys[0]))
    return path


def test_a_signed_file_reads_back_its_heads(anchors, keys):
    assert read_verified(anchors, keys[1]) == {"RT-AAAAAAAAAA": HEAD}


def test_the_private_key_is_readable_by_its_owner_only_and_never_overwritten(tmp_path):
    private, public, kid = generate_keypair(tmp_path / "k")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and len(kid) == 16
    before = private.read_bytes()
    with pytest.raises(AnchorsError, match="exists"):
        generate_keypair(tmp_path / "k")
    assert private.read_bytes() == before


@pytest.mark.parametrize("rewrite", [
    lambda d: d["cases"]["RT-AAAAAAAAAA"].update(digest="b" * 64),  # hide a rewritten last event
    lambda d: d["cases"]["RT-AAAAAAAAAA"].update(seq=6),
    lambda d: d["cases"].pop("RT-AAAAAAAAAA"),  # hide a whole case
    lambda d: d["cases"].update({"RT-BBBBBBBBBB": d["cases"]["RT-AAAAAAAAAA"]}),
    lambda d: d.update(anchored_at="2026-12-01T00:00:00+00:00"),
])
def test_any_rewrite_of_a_signed_file_is_refused_as_tampering(anchors, keys, rewrite):
    document = json.loads(anchors.read_text())
    rewrite(document)
    anchors.write_text(json.dumps(document))
    with pytest.raises(AnchorsTampered, match="changed after it was signed"):
        read_verified(anchors, keys[1])


def test_a_file_re_signed_with_another_key_is_refused(anchors, keys, tmp_path):
    forger_private, _, forger_id = generate_keypair(tmp_path / "forger")
    document = json.loads(anchors.read_text())
    document.pop("signature")
    document["cases"]["RT-AAAAAAAAAA"]["digest"] = "c" * 64
    forged = signed_document({cid: Anchor(**a) for cid, a in document["cases"].items()}, document["anchored_at"],
                             document["stream"], load_private_key(forger_private))
    anchors.write_text(json.dumps(forged))
    with pytest.raises(AnchorsTampered, match=f"signed with another key \\({forger_id}"):
        read_verified(anchors, keys[1])


def test_an_unsigned_file_is_not_trusted(anchors, keys):
    document = json.loads(anchors.read_text())
    document.pop("signature")
    anchors.write_text(json.dumps(document))
    with pytest.raises(AnchorsTampered, match="not signed"):
        read_verified(anchors, keys[1])


@pytest.mark.parametrize("content, says", [("[]", "not an anchors file"), ("{", "malformed JSON"),
                                           ('{"format": "other"}', "not an anchors file")])
def test_a_file_that_is_not_an_anchors_file_is_a_clear_error(tmp_path, keys, content, says):
    path = tmp_path / "x.json"
    path.write_text(content)
    with pytest.raises(AnchorsError, match=says) as caught:
        read_verified(path, keys[1])
    assert not isinstance(caught.value, AnchorsTampered)


def test_a_key_that_is_not_ed25519_pem_is_a_clear_error(tmp_path):
    bad = tmp_path / "k.pem"
    bad.write_text("not a key")
    with pytest.raises(AnchorsError, match="not an unencrypted PEM private key"):
        load_private_key(bad)
    with pytest.raises(AnchorsError, match="no such public key file"):
        load_public_key(tmp_path / "missing.pem")
