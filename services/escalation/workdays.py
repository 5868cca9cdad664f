"""Kept so ``rethink.escalation.workdays`` still imports: working days now live in ``rethink.shared``.

Escalation deadlines and scheduling's reminders count in the same working days.
"""

from rethink.shared.workdays import (  # noqa: F401
    SATURDAY,
    add_working_days,
    england_and_wales,
    is_working_day,
    subtract_working_days,
)
