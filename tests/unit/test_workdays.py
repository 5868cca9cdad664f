"""Working-day deadlines, checked against real England-and-Wales bank holidays of 2026 and 2027."""

from __future__ import annotations

from datetime import date

import pytest

from rethink.shared.workdays import (
    add_working_days,
    england_and_wales,
    is_working_day,
    subtract_working_days,
)

BANK_HOLIDAYS = england_and_wales()


@pytest.mark.parametrize(
    ("start", "days", "deadline"),
    [
        # Friday + 2 working days is the Tuesday: the weekend does not count.
        (date(2026, 1, 2), 2, date(2026, 1, 6)),
        (date(2026, 3, 10), 5, date(2026, 3, 17)),
    ],
)
def test_weekends_are_skipped(start, days, deadline):
    assert add_working_days(start, days, BANK_HOLIDAYS) == deadline


@pytest.mark.parametrize(
    ("start", "days", "deadline"),
    [
        # Christmas Day (Fri 25) and Boxing Day substitute (Mon 28 Dec 2026) are bank holidays.
        (date(2026, 12, 24), 1, date(2026, 12, 29)),
        (date(2026, 12, 24), 2, date(2026, 12, 30)),
        # 2027: Christmas and Boxing Day fall at the weekend; both substitutes (27, 28 Dec) are holidays.
        (date(2027, 12, 24), 1, date(2027, 12, 29)),
        # New Year's Day 2027 is a Friday.
        (date(2026, 12, 31), 1, date(2027, 1, 4)),
        # Good Friday 3 Apr and Easter Monday 6 Apr 2026.
        (date(2026, 4, 2), 2, date(2026, 4, 8)),
        # Good Friday 26 Mar and Easter Monday 29 Mar 2027.
        (date(2027, 3, 25), 1, date(2027, 3, 30)),
        # Late summer bank holiday: Mon 31 Aug 2026, Mon 30 Aug 2027.
        (date(2026, 8, 28), 2, date(2026, 9, 2)),
        (date(2027, 8, 27), 5, date(2027, 9, 6)),
        # A stage 4 deadline (10 working days) straddling Christmas 2026.
        (date(2026, 12, 14), 10, date(2026, 12, 30)),
    ],
)
def test_england_and_wales_bank_holidays_are_skipped(start, days, deadline):
    assert add_working_days(start, days, BANK_HOLIDAYS) == deadline


def test_the_start_day_never_counts_even_when_it_is_a_weekend_or_holiday():
    assert add_working_days(date(2026, 1, 10), 1, BANK_HOLIDAYS) == date(2026, 1, 12)  # Saturday -> Monday
    assert add_working_days(date(2026, 8, 31), 1, BANK_HOLIDAYS) == date(2026, 9, 1)  # bank holiday -> Tuesday


def test_zero_working_days_means_the_same_day():
    assert add_working_days(date(2026, 6, 3), 0, BANK_HOLIDAYS) == date(2026, 6, 3)
    assert add_working_days(date(2026, 12, 26), 0, BANK_HOLIDAYS) == date(2026, 12, 26)


def test_negative_working_days_are_refused():
    with pytest.raises(ValueError, match="0 or more"):
        add_working_days(date(2026, 6, 3), -1, BANK_HOLIDAYS)


def test_working_days_are_weekdays_that_are_not_bank_holidays():
    assert is_working_day(date(2026, 12, 29), BANK_HOLIDAYS)
    assert not is_working_day(date(2026, 12, 28), BANK_HOLIDAYS)  # Boxing Day (substitute)
    assert not is_working_day(date(2026, 12, 26), BANK_HOLIDAYS)  # Saturday
    assert not is_working_day(date(2027, 1, 3), BANK_HOLIDAYS)  # Sunday


def test_scottish_only_bank_holidays_are_working_days_in_england_and_wales():
    assert is_working_day(date(2026, 1, 2), BANK_HOLIDAYS)  # 2 January (Scotland)
    assert is_working_day(date(2026, 11, 30), BANK_HOLIDAYS)  # St Andrew's Day (Scotland)


def test_any_set_of_dates_can_serve_as_the_holiday_calendar():
    assert add_working_days(date(2026, 6, 1), 1, {date(2026, 6, 2)}) == date(2026, 6, 3)
    assert add_working_days(date(2026, 6, 1), 1, frozenset()) == date(2026, 6, 2)


@pytest.mark.parametrize(
    ("end", "days", "expected"),
    [
        (date(2026, 12, 7), 1, date(2026, 12, 4)),  # Monday - 1 -> Friday
        (date(2026, 12, 9), 3, date(2026, 12, 4)),  # Wednesday - 3 -> the Friday before
        (date(2026, 12, 29), 1, date(2026, 12, 24)),  # over Christmas Day and the Boxing Day substitute
        (date(2026, 4, 7), 1, date(2026, 4, 2)),  # Tuesday after Easter Monday -> the Thursday before Good Friday
        (date(2026, 12, 9), 0, date(2026, 12, 9)),
    ],
)
def test_counting_working_days_back_skips_weekends_and_bank_holidays(end, days, expected):
    assert subtract_working_days(end, days, BANK_HOLIDAYS) == expected
    assert add_working_days(expected, days, BANK_HOLIDAYS) == end or not is_working_day(end, BANK_HOLIDAYS)


def test_the_old_import_path_is_the_shared_one():
    from rethink.escalation import workdays as old
    from rethink.shared import workdays as new

    assert old.add_working_days is new.add_working_days and old.subtract_working_days is new.subtract_working_days
