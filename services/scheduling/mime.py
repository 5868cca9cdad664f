"""An email's RFC 5322 bytes, written straight out: the same bytes as ``notifier.to_email``, cheaper.

Building each message as an ``EmailMessage`` and flattening it parses and refolds every header
of every part: about 3 ms of CPU per message, most of scheduling's work on a MeetingScheduled.
Every message has one of two fixed shapes, so the structure is written from templates here; the
headers that carry names and subjects are still parsed and folded by the ``email`` package (once
per batch where the invitees share them), and bodies are encoded by the same rule it applies.
Whatever falls outside that rule (a body it would base64) is rendered by ``to_email`` itself.
``tests/unit/test_mime.py`` holds the two to the same bytes.
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Sequence
from email import policy, quoprimime
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.utils import format_datetime
from typing import Any

from .notifier import Email, to_email


class _Registry(HeaderRegistry):
    """The standard registry, but each header class made once (the stdlib makes a new class per header)."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls


POLICY = policy.default.clone(header_factory=_Registry())
_MAX = POLICY.max_line_length  # 78, the length beyond which ``email`` stops sending text as it is


def header(name: str, value: Any) -> bytes:
    """One header as ``email`` writes it: parsed, checked for line breaks, folded."""
    _, parsed = POLICY.header_store_parse(name, value)
    return parsed.fold(policy=POLICY).encode("ascii", "surrogateescape")


def _body(text: str) -> tuple[str, bytes] | None:
    """The transfer encoding ``email`` picks for a text part (``contentmanager._encode_text``), and the body.

    None when it would pick base64 (bodies mostly in non-Latin scripts): left to ``to_email``.
    """
    lines = text.encode("utf-8").splitlines()
    body = b"\n".join(lines) + b"\n"
    if max((len(line) for line in lines), default=0) <= _MAX:
        return ("7bit" if body.isascii() else "8bit"), body
    sniff = b"\n".join(lines[:10]) + b"\n"
    sniff_qp = quoprimime.body_encode(sniff.decode("latin-1"), _MAX)
    if len(sniff_qp) > len(binascii.b2a_base64(sniff)):
        return None
    if len(lines) <= 10:
        return "quoted-printable", sniff_qp.encode("ascii")
    return "quoted-printable", quoprimime.body_encode(body.decode("latin-1"), _MAX).encode("ascii")


def _part(headers: bytes, cte: str, body: bytes, tail: bytes = b"") -> bytes:
    return b"".join((headers, b"Content-Transfer-Encoding: ", cte.encode(), b"\n", tail, b"\n", body))


class Renderer:
    """Renders a batch of messages; what the batch shares (sender, subject, date, calendar) is done once."""

    def __init__(self) -> None:
        self._headers: dict[tuple[str, str], bytes] = {}
        self._calendars: dict[tuple[bytes, str], bytes | None] = {}

    def _shared(self, name: str, raw: str, value: Any = None) -> bytes:
        key = (name, raw)
        folded = self._headers.get(key)
        if folded is None:
            folded = self._headers[key] = header(name, raw if value is None else value)
        return folded

    def _calendar(self, data: bytes, method: str) -> bytes | None:
        key = (data, method)
        if key not in self._calendars:
            encoded = _body(data.decode())
            self._calendars[key] = None if encoded is None else b"".join((
                b"Content-Transfer-Encoding: ", encoded[0].encode(), b"\n",
                b'Content-Disposition: attachment; filename="invite.ics"\n',
                b'Content-Type: text/calendar; charset="utf-8"; method="', method.encode(), b'"\n',
                b"MIME-Version: 1.0\n\n", encoded[1]))
        return self._calendars[key]

    def render(self, m: Email) -> bytes:
        text, html = _body(m.text), _body(m.html)
        calendar = None if m.calendar is None else self._calendar(m.calendar, m.method or "REQUEST")
        if text is None or html is None or (m.calendar is not None and calendar is None):
            return to_email(m).as_bytes(policy=POLICY)
        digest = hashlib.sha256(m.key.encode()).hexdigest()[:24].encode()
        outer = b"==rethink-" + digest + b"-0"
        head = b"".join((
            self._shared("From", m.sender, Address("Re-think", addr_spec=m.sender)),
            header("To", Address(m.recipient.name, addr_spec=str(m.recipient.email))),
            self._shared("Subject", m.subject),
            self._shared("Date", format_datetime(m.sent_at)),
            header("Message-ID", f"<{m.key}@{m.sender.rsplit('@', 1)[-1]}>"),
            b"MIME-Version: 1.0\n",
        ))
        plain = _part(b'Content-Type: text/plain; charset="utf-8"\n', *text)
        rich = _part(b'Content-Type: text/html; charset="utf-8"\n', *html, tail=b"MIME-Version: 1.0\n")
        if calendar is None:
            return b"".join((
                head, b'Content-Type: multipart/alternative;\n boundary="', outer, b'"\n\n',
                b"--", outer, b"\n", plain, b"\n--", outer, b"\n", rich, b"\n--", outer, b"--\n"))
        inner = b"==rethink-" + digest + b"-1"
        return b"".join((
            head, b'Content-Type: multipart/mixed; boundary="', outer, b'"\n\n',
            b"--", outer, b'\nContent-Type: multipart/alternative;\n boundary="', inner, b'"\n\n',
            b"--", inner, b"\n", plain, b"\n--", inner, b"\n", rich, b"\n--", inner, b"--\n",
            b"\n--", outer, b"\n", calendar, b"\n--", outer, b"--\n"))


def render(messages: Sequence[Email]) -> list[bytes]:
    """The bytes of each message, as ``to_email(m).as_bytes()`` gives them."""
    renderer = Renderer()
    return [renderer.render(m) for m in messages]
