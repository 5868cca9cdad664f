"""The cheaper header parse gives exactly what nats-py's own does, for any header block."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rethink.shared import natsheaders
from rethink.shared.natsheaders import original_parse, parse_header_lines

APPENDED = (b"Nats-Msg-Id: 5f2c8b1e-1111-2222-3333-444455556666\r\n"
            b"Nats-Expected-Last-Subject-Sequence: 1234\r\n"
            b"Nats-Expected-Last-Subject-Sequence-Subject: rethink.events.RT-AAAAAAAAAA.>\r\n"
            b"Rethink-Event-Type: RequestSubmitted\r\n\r\n")

HOSTILE = [
    APPENDED,
    b"",
    b"\r\n\r\n",
    b"no colon here\r\n",
    b":value without a name\r\n",
    b"Name:Value\r\nName:\tTabbed \r\n",  # the later one wins, as in a dict
    b"Bad Name: space inside\r\nGood: yes\r\n",
    b"Sep\x1cName: unit separator is whitespace to str.isspace, not to bytes.strip\r\n",
    b"\x1cLead: stripped by neither\r\n",
    b" \t Padded \x0b\x0c : value \x0c\r\n",
    "Nämé: non-ASCII name is skipped\r\nOk: ✓\r\n".encode(),
    b"Ok: \xff\xfe invalid UTF-8 in a value\r\n",
    b"Multi: a: b: c\r\n",
    b"Lf-Only: one\nSecond: two\r\n",
    b"Cr\rIn: name\r\n",
]


@pytest.mark.parametrize("raw", HOSTILE)
def test_the_parse_equals_nats_pys_on_known_and_hostile_blocks(raw):
    assert parse_header_lines(raw) == original_parse(raw)


def test_the_log_headers_are_read_in_full():
    assert parse_header_lines(APPENDED) == {
        "Nats-Msg-Id": "5f2c8b1e-1111-2222-3333-444455556666",
        "Nats-Expected-Last-Subject-Sequence": "1234",
        "Nats-Expected-Last-Subject-Sequence-Subject": "rethink.events.RT-AAAAAAAAAA.>",
        "Rethink-Event-Type": "RequestSubmitted",
    }


# Bytes that matter to the parse: separators, every kind of whitespace, token characters,
# non-token ASCII and non-ASCII bytes (valid and invalid UTF-8).
_PIECES = st.sampled_from([b":", b"\r\n", b"\r", b"\n", b" ", b"\t", b"\x0b", b"\x0c", b"\x1c", b"\x1f",
                           b"A", b"z", b"9", b"-", b"_", b"~", b"(", b"\"", b"\x7f", b"\x00",
                           "é".encode(), "\u00a0".encode(), b"\xff", b"\xc3"])


@settings(max_examples=600, deadline=None)
@given(st.lists(_PIECES, max_size=40).map(b"".join))
def test_the_parse_equals_nats_pys_on_random_blocks(raw):
    assert parse_header_lines(raw) == original_parse(raw)


def test_install_puts_the_parse_into_nats_pys_client(monkeypatch):
    from nats.aio.client import Client

    monkeypatch.setattr(Client, "_parse_header_lines", Client.__dict__["_parse_header_lines"])
    natsheaders.install()
    natsheaders.install()  # idempotent
    assert Client._parse_header_lines is parse_header_lines
