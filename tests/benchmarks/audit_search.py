"""Micro-benchmark: ``rethink audit search`` behind a small and a large log.

``python -m tests.benchmarks.audit_search [--closed 1000,25000] [--rounds 3]``
times, at each size, the search's read of the whole log both ways, and checks they find the same:

- **before** (its code until the twelfth round, kept here as the baseline): the log's case ids from
  the stream's subjects, then each case's history read in turn (a consumer made, read and deleted
  per case) with its personal fields opened, and summarised;
- **after** (``rethink.shared.cli.search.search``): the log read once in order, as a rebuild reads
  it, each event of the types a summary reads decoded unopened and folded into its case's summary.

The log (a nats-server of its own: loopback, a free port, a temp folder) is the console benchmark's:
``--closed`` copies of the test log's closed lifecycle (11 events a case). The copies are plain: in
a partnership's log their personal fields are sealed, and the old read also fetched each case's key
and decrypted every personal value, so the baseline here is at its cheapest. Median of ``--rounds``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from rethink.shared.cli.search import CaseSummary, Criteria, search, summarise
from rethink.shared.eventlog import EventLog

from .common import Cleanup
from .console_reads import copies, own_server, published_log, timed_both_ways


async def case_by_case(log: EventLog) -> list[CaseSummary]:
    """The search's read until the twelfth round (its summaries are today's: the read is the cost)."""
    return [summarise(case_id, await log.read_case(case_id)) for case_id in await log.case_ids()]


async def amain(args: argparse.Namespace, tmp: Path, cleanup: Cleanup) -> None:
    server, nc = await own_server(tmp, cleanup)
    times: dict[tuple[str, int], list[float]] = {}
    events: dict[int, int] = {}
    try:
        for closed in args.closed:
            s, log = await published_log(nc, server.url, tmp / f"state-{closed}", closed,
                                         lambda subjects, n=closed: copies(subjects, n, 0))

            for way in ("before", "after"):
                rounds = times[way, closed] = []
                for _ in range(args.rounds):
                    started = time.perf_counter()
                    if way == "before":
                        found = await case_by_case(log)
                    else:
                        found = (await search(nc.jetstream(), s, Criteria())).cases
                    rounds.append(time.perf_counter() - started)
                if way == "before":
                    expected = found
                else:  # the same cases, summarised alike
                    assert found == expected, "the two searches differ"
            events[closed] = (await nc.jetstream().stream_info(s.stream)).state.messages
            print(f"{closed:>7,} closed cases ({events[closed]:,} events): before "
                  f"{statistics.median(times['before', closed]):.2f} s, after "
                  f"{statistics.median(times['after', closed]):.2f} s")
    finally:
        await nc.close()

    small = args.closed[0]
    print(f"\nrethink audit search, every case (median of {args.rounds}); each beside the same at {small:,} closed cases")
    for closed in args.closed:
        b, a = (statistics.median(times[w, closed]) for w in ("before", "after"))
        b0, a0 = (statistics.median(times[w, small]) for w in ("before", "after"))
        print(f"  {closed:>7,} closed  before {b:>8.2f} s {b / b0:5.1f}x   after {a:>7.2f} s {a / a0:5.1f}x   "
              f"{b / a:5.1f} times faster ({events[closed] / a:,.0f} events/s)")


def main() -> None:
    timed_both_ways(__doc__, amain, "rethink-audit-search-", "timed searches")


if __name__ == "__main__":
    main()
