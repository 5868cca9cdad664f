"""Micro-benchmark: nats-py's protocol parser beside ``natsparser``'s, on the same bytes.

``python -m tests.benchmarks.parser [--messages 20000] [--payload 700] [--rounds 7]`` builds the
bytes a replay's pull requests receive (HMSG lines with a JetStream reply subject, the four headers
an append sends, a payload of ``--payload`` bytes), cuts them as nats-py's reads do (32 KiB), and
feeds them to each parser with nothing behind it: a client whose ``_process_msg`` does nothing
(as a callback subscription's parse would be followed by nats-py's own work), and one with a raw
subscription (``rawsub``), as a replay reads. It prints µs of CPU per message, the median of the
rounds, and the ratio to nats-py's parser on the same client. No server, no network.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

from nats.aio.client import DEFAULT_BUFFER_SIZE
from nats.protocol.parser import Parser

from rethink.shared import natsparser, rawsub

HEADERS = (b"NATS/1.0\r\nNats-Msg-Id: 5f2c8b1e-1111-2222-3333-444455556666\r\n"
           b"Nats-Expected-Last-Subject-Sequence: 1234\r\n"
           b"Nats-Expected-Last-Subject-Sequence-Subject: rethink.events.RT-AAAAAAAAAA.>\r\n"
           b"Rethink-Event-Type: RequestSubmitted\r\n\r\n")


def stream(messages: int, payload: int) -> bytes:
    body = b"x" * payload
    out = []
    for n in range(1, messages + 1):
        reply = f"$JS.ACK.REPLAY.xTq8Jd2kLmN0pQrS.1.{n}.{n}.1764230000000000000.{messages - n}".encode()
        out.append(b"HMSG rethink.events.RT-ABCDEFGHJK.RequestSubmitted 17 %s %d %d\r\n%s%s\r\n" % (
            reply, len(HEADERS), len(HEADERS) + len(body), HEADERS, body))
    return b"".join(out)


class Client:
    """What the parser calls: nothing happens for a message, or a raw subscription's handler is called."""

    def __init__(self, raw: bool) -> None:
        self.stats = {"in_msgs": 0, "in_bytes": 0}
        self.count = 0
        if raw:
            rawsub._dispatching(self)[17] = self._handle

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        self.count += 1

    def _handle(self, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        self.count += 1


async def cpu_per_message(parse: Callable[..., Any], reads: list[bytes], messages: int, raw: bool) -> float:
    client = Client(raw)
    parser = Parser(client)
    cpu = time.process_time()
    for chunk in reads:
        await parse(parser, chunk)
    cpu = time.process_time() - cpu
    assert client.count == messages, (client.count, messages)
    return cpu * 1e6 / messages


async def amain(args: argparse.Namespace) -> None:
    data = stream(args.messages, args.payload)
    reads = [data[i : i + DEFAULT_BUFFER_SIZE] for i in range(0, len(data), DEFAULT_BUFFER_SIZE)]
    print(f"{args.messages:,} HMSG messages, {len(data) // args.messages} bytes each, in {len(reads)} reads "
          f"of {DEFAULT_BUFFER_SIZE} bytes; median of {args.rounds} rounds, parsers alternated")
    parsers = {"nats-py": natsparser.original_parse, "natsparser": natsparser.parse}
    print(f"{'client':<34} {'nats-py':>9} {'natsparser':>11} {'ratio':>6}")
    for raw, label in ((False, "_process_msg awaited (nats-py's)"), (True, "a raw subscription (rawsub)")):
        times: dict[str, list[float]] = {name: [] for name in parsers}
        for _ in range(args.rounds):
            for name, parse in parsers.items():
                times[name].append(await cpu_per_message(parse, reads, args.messages, raw))
        theirs, ours = (statistics.median(times[name]) for name in parsers)
        print(f"{label:<34} {theirs:7.2f} µs {ours:8.2f} µs {ours / theirs:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--payload", type=int, default=700, help="payload bytes after the headers (default 700)")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if args.messages < 1 or args.rounds < 1 or args.payload < 0:
        parser.error("--messages and --rounds must be at least 1, --payload at least 0")
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
