"""A cheaper parse of the messages nats-py reads, installed into its protocol parser.

Every message a service or a replay receives goes through nats-py 2.16's ``Parser.parse``: per
message it matches the MSG pattern and then the HMSG one against the whole buffer, keeps the
arguments in a dict, copies the payload twice (a bytearray slice, then bytes), deletes it from the
front of the buffer, and awaits ``_process_msg``, a coroutine made for each message. This parse
reads the messages of one read where they lie (a line found by its CRLF and split once, the
payload sliced once) and hands a raw subscription's message (``rawsub``) to its handler directly:
~1.4 µs a message instead of ~1.8, and ~1.5 instead of ~2.1 for a raw subscription's
(``tests/benchmarks/parser.py``), a few per cent of a replay's CPU per event.

It makes exactly the calls nats-py's makes and leaves the parser in the same state (its message
arguments kept only while a payload is awaited, the one time nats-py reads them), for any split
of the byte stream (``tests/unit/test_natsparser.py`` feeds both the same streams, cut everywhere,
and compares): anything but a well-formed MSG or HMSG line, and any line nats-py's patterns could
read otherwise, goes to nats-py's own parse with everything after it, so its errors (and its
oddities) stay its own.

Installed by the composition roots (``install()``), not at import, and only into the nats-py
release it was checked against.
"""

from __future__ import annotations

from typing import Any

import nats.aio.client
from nats.protocol.parser import AWAITING_CONTROL_LINE, AWAITING_MSG_PAYLOAD, Parser

from . import rawsub

CHECKED_VERSION = "2.16.0"  # the nats-py whose parser this one is compared with, by the tests
_ORIGINAL = Parser.__dict__["parse"]
# nats-py's HMSG pattern reads a line without a reply subject on into the next one when that one
# is (whitespace and) digits and a CRLF: the line's sizes become reply and header size. Lines
# followed by any of these bytes go to nats-py's parse, which decides.
_READS_ON = frozenset(b" \t\n\r\x0b\x0c0123456789")
_NOT_RAW: tuple[Any, rawsub.Deliver] = (None, lambda *_: False)  # a client without raw subscriptions


async def parse(self: Parser, data: bytes = b"") -> None:
    """nats-py's ``Parser.parse`` (``self`` is its parser), equal in effect, cheaper for messages."""
    buf = self.buf
    if buf or self.state != AWAITING_CONTROL_LINE:
        # The rest of an earlier read: part of a line, or a message whose payload was still coming.
        buf.extend(data)
        if self.state == AWAITING_MSG_PAYLOAD:
            if len(buf) < self.needed + 2:
                return
            arg, hsize, size = self.msg_arg, self.header_needed, self.needed
            hdr = bytes(buf[:hsize]) if hsize > 0 else None
            payload = bytes(buf[hsize:size])
            del buf[: size + 2]
            self.header_needed = 0
            self.state = AWAITING_CONTROL_LINE
            await self.nc._process_msg(arg["sid"], arg["subject"], arg["reply"], payload, hdr)
            if self.buf is not buf:  # reset (a reconnect) while it was awaited: on as nats-py goes on
                return await _ORIGINAL(self)
        data = bytes(buf)
        buf.clear()
    elif type(data) is not bytes:
        data = bytes(data)  # slices of it are handed on, and nats-py hands on bytes
    nc: Any = self.nc
    raw_process, deliver = rawsub.direct(nc) or _NOT_RAW
    pos, end = 0, len(data)
    while pos < end:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            break  # the line's end comes with a later read
        if data.startswith(b"HMSG ", pos):
            line = data[pos + 5 : eol]
            args = line.split(b" ")
            if len(args) == 5:
                subject, sid, reply, hsize, size = args
            elif len(args) == 4 and (eol + 2 == end or data[eol + 2] not in _READS_ON):
                subject, sid, hsize, size = args
                reply = b""
            else:
                break
            # Single spaces between tokens without whitespace: what nats-py's pattern reads as we do.
            if not (sid.isdigit() and hsize.isdigit() and size.isdigit()) or line.split() != args:
                break
            header_size = int(hsize)
        elif data.startswith(b"MSG ", pos):
            line = data[pos + 4 : eol]
            args = line.split(b" ")
            if len(args) == 4:
                subject, sid, reply, size = args
            elif len(args) == 3:
                subject, sid, size = args
                reply = b""
            else:
                break
            if not (sid.isdigit() and size.isdigit()) or line.split() != args:
                break
            header_size = 0
        else:
            break
        start = eol + 2
        stop = start + int(size)
        if stop + 2 > end:
            # The payload is still coming: wait for it in nats-py's own state, as nats-py would.
            self.msg_arg.update(subject=subject, sid=int(sid), reply=reply)
            self.needed, self.header_needed, self.state = int(size), header_size, AWAITING_MSG_PAYLOAD
            buf += memoryview(data)[start:]
            return
        if header_size > 0:  # nats-py reads an HMSG with no header bytes as a MSG: headers None
            hdr: bytes | None = data[start : start + header_size]
            payload = data[start + header_size : stop]
        else:
            hdr = None
            payload = data[start:stop]
        pos = stop + 2  # the CRLF after a payload is skipped unread, as nats-py does
        sid_n = int(sid)
        process = nc._process_msg  # looked up for each message, as nats-py does
        try:
            # A raw subscription's message to its handler now, rather than through a coroutine made
            # for it: what awaiting the dispatcher would do, and nothing between.
            if process is not raw_process or not deliver(sid_n, subject, reply, payload, hdr):
                await process(sid_n, subject, reply, payload, hdr)
        except BaseException:
            if self.buf is buf:
                buf += memoryview(data)[pos:]  # what nats-py's buffer would hold when it raised
            raise
        if self.buf is not buf:  # reset (a reconnect) while it was processed: on as nats-py goes on
            return await _ORIGINAL(self)
    if pos < end:
        buf += memoryview(data)[pos:]
        if data.find(b"\r\n", pos) >= 0:
            # Not a well-formed message: nats-py's parse reads it, and all after it, its own way.
            await _ORIGINAL(self)


def original_parse(parser: Parser, data: bytes = b"") -> Any:
    """nats-py's own parse, for comparison."""
    return _ORIGINAL(parser, data)


def install() -> bool:
    """Use ``parse`` in every nats-py client of this process (idempotent). On a nats-py other than
    the one it was checked against, nats-py's parse is kept, and False returned."""
    if nats.aio.client.__version__ != CHECKED_VERSION:
        return False
    Parser.parse = parse  # type: ignore[method-assign]
    return True
