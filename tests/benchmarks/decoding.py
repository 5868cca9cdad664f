"""Micro-benchmark: an event decoded unopened (a rebuild's path for most events), two ways.

``python -m tests.benchmarks.decoding [--number 2000] [--repeat 5]`` takes one stored (sealed) event
of each type of the interleaved test log (every optional personal value given) and times, per type,
alternating:

- ``slow``: ``EventLog.decode_unopened(data, seq)``: the envelope parsed, its data copied with the
  sealed values erased, the payload validated from that copy (what a rebuild did before);
- ``one pass``: ``EventLog.decode_unopened(data, seq, kind)``: the sealed values replaced in the bytes,
  then envelope and payload validated from JSON together (``rethink.shared.unopened``).

It prints the best of ``--repeat`` runs of ``--number`` decodings, in µs per event of CPU
(``time.process_time``), and the ratio. No figure is asserted: this is a measurement.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from rethink.shared.eventlog import EventLog
from rethink.shared.privacy import ERASURE


def stored() -> dict[str, tuple[bytes, int]]:
    from tests.unit.test_unopened_types import events, sealed

    out: dict[str, tuple[bytes, int]] = {}
    for r in events():
        if r.type != ERASURE:  # an erasure is always opened
            out.setdefault(r.type, (sealed(r), r.seq))
    return out


def best(fn: Callable[[], object], number: int, repeat: int) -> float:
    """The fastest of ``repeat`` runs, in µs of CPU per call."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(number):
            fn()
        times.append(time.process_time() - start)
    return min(times) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    decode = EventLog.decode_unopened
    print(f"{'type':<24} {'bytes':>6} {'slow µs':>8} {'one pass µs':>12} {'ratio':>6}")
    for kind, (data, seq) in stored().items():
        slow = best(lambda d=data, s=seq: decode(d, s), args.number, args.repeat)
        fast = best(lambda d=data, s=seq, k=kind: decode(d, s, k), args.number, args.repeat)
        print(f"{kind:<24} {len(data):>6} {slow:8.1f} {fast:12.1f} {fast / slow:5.2f}x")


if __name__ == "__main__":
    main()
