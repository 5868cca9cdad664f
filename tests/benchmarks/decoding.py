"""Micro-benchmark: a stored event decoded for a rebuild's projection, the slow way and in one pass.

``python -m tests.benchmarks.decoding [--number 2000] [--repeat 5]`` takes one stored (sealed) event
of each type of the interleaved test log (every optional personal value given, a person as actor)
and times, per type, alternating, both ways of each of a rebuild's two decodings:

- **unopened** (the types a projection declares ``UNOPENED``): ``EventLog.decode_unopened(data, seq)``,
  the envelope parsed, its data copied with the sealed values erased, the payload validated from that
  copy; beside ``EventLog.decode_unopened(data, seq, kind)``, the sealed values replaced in the bytes,
  envelope and payload validated from JSON together (``rethink.shared.onepass``);
- **opened**: ``EventLog.decode`` (parsed, opened into a copy, payload validated, digest, the envelope
  shown to people); beside ``EventLog.decode_for_projection``, with the case's key in hand: parsed
  once, opened in place, envelope and payload validated together.

It prints the best of ``--repeat`` runs of ``--number`` decodings, in µs of CPU per event
(``time.process_time``), and the ratios. No figure is asserted: this is a measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from rethink.shared.eventlog import EventLog, Subjects
from rethink.shared.fieldcrypt import seal_text
from rethink.shared.privacy import ACTOR, ERASURE, PersonalData


def stored() -> dict[str, tuple[bytes, int]]:
    """One stored event per type, its personal values and its actor (a person) sealed."""
    from tests.unit.test_unopened_types import KEYS, events, sealed

    out: dict[str, tuple[bytes, int]] = {}
    for r in events():
        if r.type != ERASURE and r.type not in out:  # an erasure is always read the slow way
            env = json.loads(sealed(r))
            env["actor"] = seal_text("Alex Social", r.envelope.case_id, r.type, ACTOR, KEYS[r.envelope.case_id])
            out[r.type] = (json.dumps(env, separators=(",", ":")).encode(), r.seq)
    return out


class _Keys:
    async def get(self, case_id: str):
        from tests.unit.test_unopened_types import KEYS

        return KEYS.get(case_id)


def best(fn: Callable[[], object], number: int, repeat: int) -> float:
    """The fastest of ``repeat`` runs, in µs of CPU per call."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(number):
            fn()
        times.append(time.process_time() - start)
    return min(times) / number * 1e6


def best_awaited(loop: asyncio.AbstractEventLoop, fn: Callable[[], Any], number: int, repeat: int) -> float:
    """``best`` for a coroutine function, awaited ``number`` times inside one run of the loop."""

    async def runs() -> float:
        start = time.process_time()
        for _ in range(number):
            await fn()
        return time.process_time() - start

    return min(loop.run_until_complete(runs()) for _ in range(repeat)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    events = stored()
    from tests.unit.test_unopened_types import KEYS

    personal = PersonalData(_Keys())
    log = EventLog(None, "S", Subjects("bench"), personal=personal)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    loop.run_until_complete(personal.prefetch(KEYS))  # every case's key in hand, as a replay has them
    unopened, opened = EventLog.decode_unopened, log.decode_for_projection
    print(f"{'type':<24} {'bytes':>6} | unopened: {'slow':>5} {'1 pass':>6} {'ratio':>6} "
          f"| opened: {'slow':>5} {'1 pass':>6} {'ratio':>6}   (µs of CPU per event)")
    for kind, (data, seq) in events.items():
        slow_u = best(lambda d=data, s=seq: unopened(d, s), args.number, args.repeat)
        fast_u = best(lambda d=data, s=seq, k=kind: unopened(d, s, k), args.number, args.repeat)
        slow_o = best_awaited(loop, lambda d=data, s=seq: log.decode([(d, s)]), args.number, args.repeat)
        fast_o = best_awaited(loop, lambda d=data, s=seq, k=kind: opened(d, s, k), args.number, args.repeat)
        print(f"{kind:<24} {len(data):>6} | {'':>9} {slow_u:5.1f} {fast_u:6.1f} {fast_u / slow_u:5.2f}x "
              f"| {'':>7} {slow_o:5.1f} {fast_o:6.1f} {fast_o / slow_o:5.2f}x")
    loop.close()


if __name__ == "__main__":
    main()
