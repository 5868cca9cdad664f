"""The cheaper parse makes exactly the calls nats-py's own makes, and leaves the parser as it does,
for any byte stream cut anywhere: well-formed, odd, malformed and random."""

from __future__ import annotations

import random
from collections.abc import Callable

import nats.aio.client
import pytest
from nats.protocol.parser import Parser

from rethink.shared import natsparser, rawsub
from rethink.shared.natsparser import original_parse


class Recorder:
    """A client as the parser sees it: every call it gets, in order, with the types of what it got."""

    def __init__(self, reset_on: int | None = None) -> None:
        self.calls: list[tuple] = []
        self.stats = {"in_msgs": 0, "in_bytes": 0}
        self.parser: Parser | None = None
        self._reset_on = reset_on  # the message whose processing resets the parser (a reconnect)

    async def _process_msg(self, sid, subject, reply, data, headers) -> None:
        self.calls.append(("msg", *_typed(sid, subject, reply, data, headers)))
        self._maybe_reset()

    def _maybe_reset(self) -> None:
        if sum(c[0] in ("msg", "raw") for c in self.calls) == self._reset_on and self.parser is not None:
            self.parser.reset()

    async def _process_err(self, err) -> None:
        self.calls.append(("err", err))

    async def _process_ping(self) -> None:
        self.calls.append(("ping",))

    async def _process_pong(self) -> None:
        self.calls.append(("pong",))

    async def _process_info(self, info) -> None:
        self.calls.append(("info", info))


def _typed(*args) -> tuple:
    return tuple((type(a).__name__, a) for a in args)


async def feed(parse, chunks: list[bytes], nc: Recorder | None = None) -> tuple[list[tuple], object]:
    """The calls made and the parser's state after each chunk; stops at an error, as nats-py's read loop does."""
    nc = nc or Recorder()
    parser = Parser(nc)
    nc.parser = parser
    for chunk in chunks:
        try:
            await parse(parser, chunk)
        except Exception as exc:
            return nc.calls + [("state", *_state(parser))], (type(exc), str(exc))
        nc.calls.append(("state", *_state(parser)))
    return nc.calls, None


def _state(parser: Parser) -> tuple:
    pending = parser.state == 2  # nats-py reads its message arguments only while it waits for a payload
    return (bytes(parser.buf), parser.state, parser.needed if pending else None, parser.header_needed,
            dict(parser.msg_arg) if pending else None)


async def assert_same(chunks: list[bytes], note: str = "", make: Callable[[], Recorder] | None = None) -> list[tuple]:
    theirs = await feed(original_parse, chunks, make() if make else None)
    ours = await feed(natsparser.parse, chunks, make() if make else None)
    assert ours == theirs, f"{note} chunks={chunks!r}"
    return theirs[0]


def hmsg(subject: bytes, sid: int, headers: bytes, payload: bytes, reply: bytes = b"") -> bytes:
    args = [subject, str(sid).encode()] + ([reply] if reply else []) + [
        str(len(headers)).encode(), str(len(headers) + len(payload)).encode()]
    return b"HMSG " + b" ".join(args) + b"\r\n" + headers + payload + b"\r\n"


def msg(subject: bytes, sid: int, payload: bytes, reply: bytes = b"") -> bytes:
    args = [subject, str(sid).encode()] + ([reply] if reply else []) + [str(len(payload)).encode()]
    return b"MSG " + b" ".join(args) + b"\r\n" + payload + b"\r\n"


HEADERS = b"NATS/1.0\r\nNats-Msg-Id: m-1\r\nRethink-Event-Type: RequestSubmitted\r\n\r\n"
ACK = b"$JS.ACK.REPLAY.c1.1.42.42.1700000000000000000.7"
STREAM = b"".join([
    b'INFO {"server_id":"s","max_payload":1048576}\r\n',
    msg(b"a.b", 1, b"hello"),
    msg(b"a.b", 1, b"", reply=b"reply.to"),
    hmsg(b"rethink.events.RT-1.RequestSubmitted", 2, HEADERS, b'{"x":1}', reply=ACK),
    hmsg(b"a.b", 2, HEADERS, b""),
    hmsg(b"_INBOX.x", 3, b"NATS/1.0 404 No Messages\r\n\r\n", b""),
    b"PING\r\n",
    msg(b"a.b", 12, b"has\r\nMSG fake 1 2\r\nin it\r\n"),
    b"PONG\r\n+OK\r\n",
    hmsg(b"a.b", 2, HEADERS, b"\r\n", reply=b"r"),
    b"-ERR 'Stale Connection'\r\n",
    msg(b"\xc3\xa9.\x85\xa0\x1c", 1, b"non-ASCII, not whitespace"),
])


async def test_a_stream_of_every_kind_makes_the_same_calls_whole():
    calls = await assert_same([STREAM])
    kinds = [c[0] for c in calls]
    assert kinds == ["info", "msg", "msg", "msg", "msg", "msg", "ping", "msg", "pong", "msg", "err", "msg", "state"]
    assert calls[3] == ("msg", ("int", 2), ("bytes", b"rethink.events.RT-1.RequestSubmitted"), ("bytes", ACK),
                        ("bytes", b'{"x":1}'), ("bytes", HEADERS))
    assert calls[5] == ("msg", ("int", 3), ("bytes", b"_INBOX.x"), ("bytes", b""), ("bytes", b""),
                        ("bytes", b"NATS/1.0 404 No Messages\r\n\r\n"))


async def test_the_stream_cut_at_every_point_makes_the_same_calls():
    for cut in range(len(STREAM) + 1):
        await assert_same([STREAM[:cut], STREAM[cut:]], f"cut at {cut}")


async def test_the_stream_fed_a_byte_at_a_time_makes_the_same_calls():
    await assert_same([STREAM[i : i + 1] for i in range(len(STREAM))])


async def test_messages_only_cut_at_every_pair_of_points_make_the_same_calls():
    stream = msg(b"a", 1, b"xy") + hmsg(b"b", 2, HEADERS[:12], b"z", reply=b"r") + msg(b"c", 3, b"")
    for a in range(len(stream) + 1):
        for b in range(a, len(stream) + 1):
            await assert_same([stream[:a], stream[a:b], stream[b:]], f"cut at {a}, {b}")


ODD = [
    b"MSG a 1 x\r\nhello\r\n",  # size not a number
    b"MSG a x 5\r\nhello\r\n",  # sid not a number: nats-py's "malformed MSG"
    b"MSG a +5 5\r\nhello\r\n",  # read by int() all the same
    b"MSG a 1_0 5\r\nhello\r\n",
    b"HMSG a -1 0 5\r\nhello\r\n",
    b"MSG  a 1 5\r\nhello\r\n",  # two spaces
    b"MSG a\t1 5\r\nhello\r\n",
    b"MSG a 1\t5\r\nhello\r\n",
    b"MSG a r\t5\r\nhello\r\n",
    b"MSG a 1 r\n5\r\nhello\r\n",
    b"MSG a 1 5 \r\nhello\r\n",  # a trailing space
    b"MSG a 1\r\n5\r\nhello\r\n",  # a pattern that reads on over a CRLF
    b"MSG a 1 2 3 4\r\nhi\r\n",
    b"MSG a\x0b 1 5\r\nhello\r\n",
    b"HMSG a 1 12 34\r\n56\r\n" + b"x" * 58,  # header and total sizes read as reply and header size
    b"HMSG a 1 12 34\r\n \t56\r\n" + b"x" * 58,
    b"HMSG a 1 12 34\r\n5 \r\n" + b"x" * 58,
    b"HMSG a 1 0 5\r\nhello\r\n",  # no header bytes: read as a MSG
    b"HMSG a 1 9 5\r\nhello\r\nPING\r\n",  # headers longer than the whole
    b"HMSG a 1 r 3\r\nhello\r\n",
    b"HMSG a 1 2\r\nhi\r\n",
    b"msg a 1 5\r\nhello\r\n",
    b"MSG\r\n",
    b"MSG \r\n",
    b"HMSG \r\n",
    b"FOO\r\n",
    b"\r\n",
    b"PING \r\n",
    b"PING\r\n\r\n",
    b"PONG\r\n\r\nPONG\r\n",
    b"+OK \r\n\r\n",
    b"-ERR\r\n",
    b"-ERR \r\n",  # nats-py decodes the missing message: AttributeError
    b"-ERR 'Authorization Violation'\r\n",
    b"INFO {bad json\r\n",
    b"INFO\r\n{}\r\n",
    b"INFO {}\r\n",
    b"MSG " + b"a" * 5000 + b" 1 5\r\nhello\r\n",  # a long line, well-formed
    b"HMSG " + b"a" * 5000 + b" 1 r 2 3\r\nhi!\r\n",
    b"XYZ" + b"a" * 5000 + b"\r\n",  # a long unknown line: nats-py waits for more
    b"MSG " + b"a" * 5000 + b" 1 5",  # a long line, unfinished
    b"MSG a 1 99999999999\r\nnot all here",
]


@pytest.mark.parametrize("odd", ODD, ids=range(len(ODD)))
async def test_odd_and_malformed_lines_behave_as_in_nats_py_wherever_they_are_cut(odd):
    stream = msg(b"before", 1, b"ok") + odd + msg(b"after", 2, b"ok") + b"PING\r\n"
    await assert_same([stream])
    await assert_same([stream[i : i + 1] for i in range(len(stream))], "a byte at a time")
    for cut in range(0, len(stream) + 1, 1 if len(stream) < 400 else 97):
        await assert_same([stream[:cut], stream[cut:]], f"cut at {cut}")


SHORT_ODD = [odd for odd in ODD if len(odd) < 100]


def _random_stream(rnd: random.Random) -> bytes:
    def token() -> bytes:  # \x85, \xa0, \x1c: whitespace to str, not to bytes
        return bytes(rnd.choice(b"abc.>*_$-\xc3\x85\xa0\x1c0123456789") for _ in range(rnd.randint(1, 12)))

    def body() -> bytes:
        return bytes(rnd.choice(b"xyz \r\n0123456789MSGHP") for _ in range(rnd.choice([0, 1, 2, 5, 40])))

    pieces = []
    for _ in range(rnd.randint(1, 12)):
        kind = rnd.random()
        reply = token() if rnd.random() < 0.5 else b""
        if kind < 0.35:
            headers = rnd.choice([HEADERS, b"NATS/1.0\r\n\r\n", b"NATS/1.0 404 No Messages\r\n\r\n", body()])
            pieces.append(hmsg(token(), rnd.choice([1, 7, 7, rnd.randint(0, 120)]), headers, body(), reply))
        elif kind < 0.6:
            pieces.append(msg(token(), rnd.choice([1, 7, rnd.randint(0, 120)]), body(), reply))
        elif kind < 0.8:
            pieces.append(rnd.choice([b"PING\r\n", b"PONG\r\n", b"+OK\r\n", b"-ERR 'x'\r\n",
                                      b'INFO {"a":1}\r\n', b"PING\r\n\r\n"]))
        else:
            pieces.append(rnd.choice(SHORT_ODD))
    return b"".join(pieces)


def _random_cuts(rnd: random.Random, stream: bytes) -> list[bytes]:
    cuts = sorted(rnd.sample(range(len(stream) + 1), min(len(stream) + 1, rnd.randint(0, 8))))
    edges = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in zip(edges, edges[1:], strict=False)]


async def test_random_streams_cut_at_random_make_the_same_calls():
    seed = random.randrange(2**32)
    rnd = random.Random(seed)
    for n in range(400):
        stream = _random_stream(rnd)  # sid 7 is a raw subscription's for every other stream
        await assert_same(_random_cuts(rnd, stream), f"seed={seed} stream #{n}", make=RawRecorder if n % 2 else None)


class RawRecorder(Recorder):
    """A client with a raw subscription (``rawsub``) on sid 7: its messages go to a handler."""

    def __init__(self, raises: bool = False, reset_on: int | None = None) -> None:
        super().__init__(reset_on)
        self.raises = raises

        def handler(subject, reply, data, headers):
            self.calls.append(("raw", *_typed(subject, reply, data, headers), dict(self.stats)))
            if self.raises and data == b"boom":
                raise RuntimeError("a handler's bug")
            self._maybe_reset()

        rawsub._dispatching(self)[7] = handler


async def test_a_raw_subscriptions_messages_reach_its_handler_as_through_nats_pys_parse():
    stream = STREAM + hmsg(b"x", 7, HEADERS, b"raw") + msg(b"y", 5, b"not raw")
    calls = await assert_same([stream], make=RawRecorder)
    assert [c[1:5] for c in calls if c[0] == "raw"] == [(("bytes", b"x"), ("bytes", b""), ("bytes", b"raw"),
                                                         ("bytes", HEADERS))]
    assert calls[-2] == ("msg", ("int", 5), ("bytes", b"y"), ("bytes", b""), ("bytes", b"not raw"), ("NoneType", None))
    for cut in range(len(stream) + 1):
        await assert_same([stream[:cut], stream[cut:]], f"cut at {cut}", make=RawRecorder)


async def test_a_raw_handlers_error_leaves_the_parser_as_nats_pys_does():
    stream = msg(b"x", 7, b"one") + msg(b"x", 7, b"boom") + msg(b"x", 7, b"three") + b"PING\r\n"
    calls = await assert_same([stream], make=lambda: RawRecorder(raises=True))
    assert calls[-1][1] == msg(b"x", 7, b"three") + b"PING\r\n"  # the buffer kept what came after it
    theirs = await feed(original_parse, [stream], RawRecorder(raises=True))
    assert theirs[1] == (RuntimeError, "a handler's bug")


@pytest.mark.parametrize("client", [Recorder, RawRecorder])
@pytest.mark.parametrize("on", [1, 2, 3])
async def test_a_parser_reset_while_a_message_is_processed_ends_the_read_as_in_nats_py(on, client):
    stream = msg(b"a", 7, b"one") + msg(b"a", 7, b"two") + b"PING\r\n" + msg(b"a", 7, b"three") + msg(b"a", 7, b"4")
    calls = await assert_same([stream[:30], stream[30:], msg(b"a", 7, b"next")], make=lambda: client(reset_on=on))
    assert sum(c[0] in ("msg", "raw") for c in calls) < 5  # what the reset dropped, both dropped


async def test_install_puts_the_parse_into_nats_pys_parser(monkeypatch):
    monkeypatch.setattr(Parser, "parse", Parser.__dict__["parse"])
    assert natsparser.install() is True
    assert natsparser.install() is True  # idempotent
    assert Parser.parse is natsparser.parse


def test_it_is_checked_against_the_installed_nats_py():
    # A new nats-py is not given this parse (install() refuses it) until these tests compare it
    # with that release's parser and CHECKED_VERSION says so.
    assert nats.aio.client.__version__ == natsparser.CHECKED_VERSION


def test_another_nats_py_keeps_its_own_parse(monkeypatch):
    original = Parser.__dict__["parse"]
    monkeypatch.setattr(Parser, "parse", original)
    monkeypatch.setattr(nats.aio.client, "__version__", "2.17.0")
    assert natsparser.install() is False
    assert Parser.__dict__["parse"] is original

