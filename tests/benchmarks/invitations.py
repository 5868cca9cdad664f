"""Micro-benchmark: the CPU scheduling spends on one meeting's invitations, step by step.

``python -m tests.benchmarks.invitations [--invitees 4] [--repeat 200]`` times, per
MeetingScheduled: composing the messages, rendering them to RFC 5322 bytes, recording them in
an outbox on a SQLite file (a fresh event id each time, so every row is new), and delivering
them to an .eml folder. Nothing here talks to NATS; the figures are milliseconds per meeting.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from rethink.scheduling.mail import EmlFolderTransport
from rethink.scheduling.mime import render
from rethink.scheduling.notifier import Notice, compose, to_email
from rethink.scheduling.outbox import Outbox
from rethink.shared.clock import SystemClock
from rethink.shared.events import MeetingMode, Person
from rethink.shared.logs import configure_logging
from rethink.shared.projection import make_engine

SENDER = "rethink@example.org"
CONTACT = "the Re-think coordinator, coordinator@pscp.example.org"
NOTICE = Notice(kind="invitation", case_id="RT-ABCDEFGHJK", case_reference="CSC-2026-0042", meeting_id="M-1a2b3c4d",
                starts_at=datetime(2026, 7, 1, 9, 0, tzinfo=UTC), duration_minutes=90, mode=MeetingMode.IN_PERSON,
                venue="Civic Offices, Room 2", facilitator_name="Facilitator One",
                facilitator_email="facilitator.one@example.org")
STAMP = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def invitees(n: int) -> list[Person]:
    return [Person(name=f"Person {i} Example", agency="Northside School Trust", email=f"p{i}@school.example.org")
            for i in range(n)]


def timed(label: str, repeat: int, step: Callable[[], object]) -> float:
    step()  # warm caches (SQLAlchemy's statement cache, imports) once
    start = time.process_time()
    for _ in range(repeat):
        step()
    ms = (time.process_time() - start) * 1000 / repeat
    print(f"  {label:<44} {ms:7.3f} ms CPU per meeting")
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invitees", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    # Logged as the service logs (JSON lines), so their cost counts, but into nothing.
    real, sys.stderr = sys.stderr, open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
    configure_logging("INFO", "json")
    sys.stderr = real
    people = invitees(args.invitees)
    print(f"one MeetingScheduled with {args.invitees} invitees, {args.repeat} times:")
    messages = compose(NOTICE, people, str(uuid.uuid4()), SENDER, STAMP, CONTACT)
    timed("compose (text, HTML, iCalendar)", args.repeat,
          lambda: compose(NOTICE, people, str(uuid.uuid4()), SENDER, STAMP, CONTACT))
    timed("render to bytes with EmailMessage (to_email)", args.repeat, lambda: [to_email(m).as_bytes() for m in messages])
    timed("render to bytes (mime.render)", args.repeat, lambda: render(messages))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        engine = make_engine(f"sqlite:///{folder / 'outbox.db'}")
        transport = EmlFolderTransport(folder / "mail")
        outbox = Outbox(engine, SystemClock(), transport)
        outbox.create_schema()

        def enqueue() -> None:
            fresh = compose(NOTICE, people, str(uuid.uuid4()), SENDER, STAMP, CONTACT)
            outbox.enqueue(fresh, "invitation", NOTICE.case_id)

        total = timed("compose + render + record in the outbox", args.repeat, enqueue)
        timed("record the same messages again (a redelivery)", args.repeat,
              lambda: outbox.enqueue(messages, "invitation", NOTICE.case_id))
        outbox.batch = 10_000
        start = time.process_time()
        drained = asyncio.run(outbox.drain())
        ms = (time.process_time() - start) * 1000 * args.invitees / max(drained.sent, 1)
        print(f"  {'drain to an .eml folder':<44} {ms:7.3f} ms CPU per meeting ({drained.sent} messages)")
        print(f"  {'total':<44} {total + ms:7.3f} ms CPU per meeting")
        engine.dispose()


if __name__ == "__main__":
    main()
