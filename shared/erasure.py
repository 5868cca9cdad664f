"""Erasing a case's personal data (crypto-shredding), and the retention policy that says when.

Erasure appends ``PersonalDataErased`` (who, when, why, which key) to the case, then destroys
the case's key. In that order: if destroying fails, the record already makes every reader
treat the key as destroyed, and running erase again finishes the job. The log itself is never
changed, so the hash chain still verifies; the ciphertext stays and can no longer be read.

The retention decision is pure: a case's sealed events folded in, a due date (or none) out. It
needs no key.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import date, datetime

from .envelope import Envelope, Origin, derived_id, stamp
from .eventlog import ConcurrencyConflict, DuplicateEvent, EventLog
from .events import PersonalDataErased
from .privacy import ERASURE, envelope_kids
from .rebuild import scan_sealed

CLOSED = "CaseClosed"


@dataclass(frozen=True)
class Erasure:
    case_id: str
    kid: str | None
    recorded: bool  # a PersonalDataErased was appended now (False: it was already there)
    key_destroyed: bool  # a key existed and was destroyed now


def add_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February into a year without one
        return day.replace(year=day.year + years, day=28)


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


class RetentionFold:
    """What the sweep reads of a case, an event at a time in the case's order, without keeping it:
    the day it last closed, and whether an erasure was recorded with nothing personal written since."""

    __slots__ = ("closed_on", "erased", "readable")

    def __init__(self) -> None:
        self.closed_on: date | None = None
        self.erased = False  # an erasure, and nothing personal since
        self.readable = True

    def due(self, years: int) -> date | None:
        """The day the case's personal data is due for erasure: ``years`` after it closed; open cases never."""
        return add_years(self.closed_on, years) if self.closed_on is not None else None

    def add(self, env: Envelope) -> None:
        if env.type == CLOSED:  # the last closing counts: a case closed, reopened, closed again
            self.closed_on = env.occurred_at.date()
        if env.type == ERASURE:
            self.erased = True
        elif self.erased and envelope_kids(env):
            self.erased = False


async def sweep(log: EventLog, years: int, today: date, apply: bool, actor: str,
                now: datetime) -> list[SweepItem]:
    """Every case past retention: erased with ``apply``, listed otherwise. Open cases are kept.

    The log is read once (``scan_sealed``), each case folded as it goes (``RetentionFold``); until
    the thirteenth round of the performance work each case was read in turn (docs/performance.md).
    A case with an event that cannot be read is read on its own, which stops the sweep there with
    what is wrong, as it did."""
    folds: dict[str, RetentionFold] = {}
    async with contextlib.aclosing(scan_sealed(log.js, log.stream, log.subjects)) as events:
        async for _, case_id, _, env in events:
            fold = folds.get(case_id)
            if fold is None:
                fold = folds[case_id] = RetentionFold()
            if env is None:
                fold.readable = False
            else:
                fold.add(env)
    items = []
    for case_id in sorted(folds):
        fold = folds[case_id]
        if not fold.readable:
            await log.read_sealed(case_id)  # raises, naming what cannot be read
        closed, due = fold.closed_on, fold.due(years)
        if due is None or due > today:
            items.append(SweepItem(case_id, closed, due, "kept"))
        elif fold.erased:
            items.append(SweepItem(case_id, closed, due, "already erased"))
        elif not apply:
            items.append(SweepItem(case_id, closed, due, "due"))
        else:
            await erase_case(log, case_id, actor, f"retention: {years} years after the case closed", now)
            items.append(SweepItem(case_id, closed, due, "erased"))
    return items
