"""Erasing a case's personal data (crypto-shredding), and the retention policy that says when.

Erasure appends ``PersonalDataErased`` (who, when, why, which key) to the case, then destroys
the case's key. In that order: if destroying fails, the record already makes every reader
treat the key as destroyed, and running erase again finishes the job. The log itself is never
changed, so the hash chain still verifies; the ciphertext stays and can no longer be read.

The retention decision is pure: a sealed history in, a due date (or none) out. It needs no key.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime

from .envelope import Origin, Recorded, derived_id, stamp
from .eventlog import ConcurrencyConflict, DuplicateEvent, EventLog
from .events import PersonalDataErased
from .privacy import ERASURE, envelope_kids

CLOSED = "CaseClosed"


@dataclass(frozen=True)
class Erasure:
    case_id: str
    kid: str | None
    recorded: bool  # a PersonalDataErased was appended now (False: it was already there)
    key_destroyed: bool  # a key existed and was destroyed now


def already_erased(history: list[Recorded]) -> bool:
    """An erasure was recorded and nothing personal was written after it."""
    last = max((i for i, r in enumerate(history) if r.type == ERASURE), default=None)
    return last is not None and not any(envelope_kids(r.envelope) for r in history[last + 1:])


def closed_on(history: list[Recorded]) -> date | None:
    closed = [r for r in history if r.type == CLOSED]
    return closed[-1].envelope.occurred_at.date() if closed else None


def add_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February into a year without one
        return day.replace(year=day.year + years, day=28)


def retention_due(history: list[Recorded], years: int) -> date | None:
    """The day a case's personal data is due for erasure: ``years`` after it closed; open cases never."""
    closed = closed_on(history)
    return add_years(closed, years) if closed is not None else None


async def erase_case(log: EventLog, case_id: str, actor: str, reason: str, now: datetime) -> Erasure:
    if log.personal is None:
        raise ValueError("erasure needs the key store")
    if not reason.strip():
        raise ValueError("an erasure needs a reason (--reason)")
    for _ in range(6):
        history = await log.read_sealed(case_id)
        if not history:
            raise ValueError(f"no events for case {case_id}")
        kid = await log.personal.current_kid(case_id)
        erasures = [r.envelope.data.get("kid") for r in history if r.type == ERASURE]
        if kid is None and erasures:
            return Erasure(case_id, erasures[-1], False, False)  # recorded, and no key left
        done = kid in erasures  # recorded, but destroying the key did not finish
        recorded = False
        if not done:
            env = stamp(PersonalDataErased(kid=kid, reason=reason.strip()), case_id,
                        Origin("privacy", actor, uuid.uuid4()), now, now,
                        derived_id(case_id, "PersonalDataErased", kid))
            try:
                await log.append(case_id, [env], history[-1].seq, after=history[-1])
                recorded = True
            except (ConcurrencyConflict, DuplicateEvent):
                continue  # the case moved on (or a concurrent erase recorded it): look again
        destroyed = await log.personal.erase(case_id)
        return Erasure(case_id, kid, recorded, destroyed)
    raise ConcurrencyConflict(f"case {case_id} kept changing; erase again")


@dataclass(frozen=True)
class SweepItem:
    case_id: str
    closed_on: date | None
    due_on: date | None
    action: str  # "erased" | "due" (dry run) | "kept" | "already erased"


async def sweep(log: EventLog, years: int, today: date, apply: bool, actor: str,
                now: datetime) -> list[SweepItem]:
    """Every case past retention: erased with ``apply``, listed otherwise. Open cases are kept."""
    items = []
    for case_id in await log.case_ids():
        history = await log.read_sealed(case_id)
        due = retention_due(history, years)
        if due is None or due > today:
            items.append(SweepItem(case_id, closed_on(history), due, "kept"))
        elif already_erased(history):
            items.append(SweepItem(case_id, closed_on(history), due, "already erased"))
        elif not apply:
            items.append(SweepItem(case_id, closed_on(history), due, "due"))
        else:
            await erase_case(log, case_id, actor, f"retention: {years} years after the case closed", now)
            items.append(SweepItem(case_id, closed_on(history), due, "erased"))
    return items
