"""Working days in England and Wales: the unit escalation deadlines and reminders are counted in.

Pure: the bank-holiday calendar is data (the ``holidays`` package computes it; no I/O).
England and Wales share one set of bank holidays, so the ``ENG`` subdivision serves both.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from datetime import date, timedelta

import holidays as holiday_calendars

SATURDAY = 5


def england_and_wales(years: Iterable[int] | None = None) -> holiday_calendars.HolidayBase:
    """The bank holidays of England and Wales; without ``years`` it fills in any year it is asked about."""
    return holiday_calendars.country_holidays("GB", subdiv="ENG", years=list(years) if years is not None else None)


def is_working_day(day: date, holidays: Container[date]) -> bool:
    return day.weekday() < SATURDAY and day not in holidays


def add_working_days(start: date, n: int, holidays: Container[date]) -> date:
    """The date ``n`` working days after ``start`` (raised Friday + 2 -> Tuesday).

    ``start`` itself never counts, so a stage raised on a bank holiday still gets ``n`` whole
    working days. Zero days means the same day: the policy wants it done now.
    """
    if n < 0:
        raise ValueError(f"working days must be 0 or more, not {n}")
    day = start
    remaining = n
    while remaining:
        day += timedelta(days=1)
        if is_working_day(day, holidays):
            remaining -= 1
    return day


def subtract_working_days(end: date, n: int, holidays: Container[date]) -> date:
    """The date ``n`` working days before ``end`` (due Monday - 1 -> the Friday before).

    ``end`` itself never counts, mirroring :func:`add_working_days`; zero means ``end`` itself.
    """
    if n < 0:
        raise ValueError(f"working days must be 0 or more, not {n}")
    day = end
    remaining = n
    while remaining:
        day -= timedelta(days=1)
        if is_working_day(day, holidays):
            remaining -= 1
    return day
