"""What the benchmark sends: real requests and meeting records, and real event envelopes.

Requests and meeting records are the demo's (they pass every validation rule); envelopes
are built by the intake domain itself, so the baseline payload is an event as the system
writes it. All people are fictional, all addresses example.org; a child is only a case reference.
"""

from __future__ import annotations

import itertools
import json
import uuid
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from rethink.intake import domain as intake_domain
from rethink.shared.cli.demo import meeting_record, request
from rethink.shared.clock import SystemClock
from rethink.shared.commands import envelopes
from rethink.shared.envelope import Origin

LONDON = ZoneInfo("Europe/London")
CASE_DESCRIPTION = ("School and children's social care disagree whether the plan addresses neglect at home; "
                    "attendance has fallen this term and the health visitor's concerns about home conditions "
                    "were not discussed at the last core group.")
OWNER = {"name": "Sam Example", "agency": "Children's Social Care", "email": "sam.worker@council.example.org"}


def submission() -> dict[str, Any]:
    """A complete request (all three checks yes), so intake confirms the checks at once."""
    return request("CSC-2026-0142", "disagreement", CASE_DESCRIPTION)


def submission_bytes() -> bytes:
    # No request_id / command_id: every send is a new case with a random id.
    return json.dumps(submission()).encode()


class Slots:
    """Distinct meeting times, so no facilitator is ever double-booked by the load."""

    def __init__(self) -> None:
        start = (datetime.now(LONDON) + timedelta(days=2)).replace(hour=9, minute=0, second=0, microsecond=0)
        self._start = start
        self._n = itertools.count()

    def next(self) -> str:
        return (self._start + timedelta(minutes=30 * next(self._n))).isoformat()


def schedule_command(case_id: str, starts_at: str) -> dict[str, Any]:
    return {"case_id": case_id, "starts_at": starts_at, "duration_minutes": 15, "mode": "virtual",
            "venue": "https://meet.example.org/rethink", "actor": "facilitator"}


def record_command(case_id: str) -> dict[str, Any]:
    due = date.today() + timedelta(days=10)
    return {"case_id": case_id, "actor": "facilitator",
            **meeting_record("resolved", [("Share the school's attendance chronology", OWNER, due)])}


def complete_command(case_id: str, action_id: str) -> dict[str, Any]:
    return {"case_id": case_id, "action_id": action_id, "actor": "owner"}


def request_submitted_envelope(case_id: str = "RT-AAAAAAAAAA") -> bytes:
    """A RequestSubmitted envelope exactly as intake writes it (about 1.5 KB)."""
    req = intake_domain.SubmitRequest.model_validate(submission())
    payloads = intake_domain.decide_submission([], req, "northside-school")
    origin = Origin("northside-school", "dsl@northside-school.example.org", uuid.uuid4())
    return envelopes(payloads, case_id, origin, SystemClock(), None)[0].to_bytes()


def generated_case(case_id: str) -> list[tuple[str, bytes]]:
    """(type, bytes) of a small valid case built by the intake domain: submission and confirmation."""
    from rethink.shared.envelope import Recorded

    req = intake_domain.SubmitRequest.model_validate(submission())
    origin = Origin("northside-school", "dsl@northside-school.example.org", uuid.uuid4())
    first = envelopes(intake_domain.decide_submission([], req, "northside-school"), case_id, origin,
                      SystemClock(), None)
    recorded = [Recorded.from_message(first[0].to_bytes(), 1)]
    second = envelopes(intake_domain.react(recorded, recorded[0]), case_id, origin, SystemClock(), None)
    return [(e.type, e.to_bytes()) for e in [*first, *second]]
