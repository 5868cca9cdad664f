"""`make reliability`: every fault under load, and a table of what survived.

    python -m tests.reliability.run                      # every fault, 250 cases each at 5 per second
    python -m tests.reliability.run --cases 40 --rate 4  # a quick pass
    python -m tests.reliability.run --only kill-meeting restart-server

Each fault runs on a fresh system of its own (a nats-server on a free loopback port with its
store in a temp folder, the four services as processes), so one fault never leaks into the
next. Results: reliability-results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from .faults import FAULTS, Row, run

HEADER = ("fault", "cases sent", "acked", "in log", "completed", "lost", "dup events", "projections = rebuild",
          "events in log", "recover s", "notes")


def cells(row: Row) -> tuple[str, ...]:
    a = row.audit
    equal = sum(v == "equal" for v in a.projections.values())
    notes = ", ".join(f"{k}={v}" for k, v in row.extra.items())
    if row.retries:
        notes = (notes + "; " if notes else "") + "retried " + ", ".join(f"{k}×{v}" for k, v in row.retries.items())
    return (row.fault, str(a.sent), str(a.acked), str(a.in_log), str(a.completed), str(a.lost), str(a.duplicates),
            f"{equal}/{len(a.projections)}", str(row.events_in_log),
            "-" if row.recover_seconds is None else f"{row.recover_seconds:.2f}", notes)


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=250, help="whole case lifecycles per fault")
    parser.add_argument("--rate", type=float, default=5.0, help="new cases per second")
    parser.add_argument("--only", nargs="+", choices=FAULTS, default=FAULTS)
    args = parser.parse_args(argv)

    rows: list[Row] = []
    for fault in args.only:
        root = Path(tempfile.mkdtemp(prefix=f"rethink-reliability-{fault}-"))
        try:
            print(f"{fault}: {args.cases} cases at {args.rate}/s ...", flush=True)
            row = run(root, fault, args.cases, args.rate)
            rows.append(row)
            a = row.audit
            print(f"  lost {a.lost}, duplicates {a.duplicates}, projections {a.projections}", flush=True)
            for error in a.errors[:3]:
                print(f"  error: {error}", flush=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    print()
    print(markdown(rows))
    out = Path("reliability-results")
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"{stamp}.json"
    path.write_text(json.dumps({
        "when": stamp, "command": "python -m tests.reliability.run " + " ".join(argv or sys.argv[1:]),
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "cases": args.cases, "rate": args.rate, "rows": [r.to_json() for r in rows],
    }, indent=2))
    print(f"\nresults: {path}")
    return 0 if all(r.audit.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
