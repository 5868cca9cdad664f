"""Who looked at which case, and when: one line per page that shows a case.

Written as structured log lines (event ``case_viewed``) to the console's log. When Re-think
gains an access-record stream of its own (issue 8), this is the one place to send it there.
"""

from __future__ import annotations

from rethink.shared.logs import get_logger

from .users import User

logger = get_logger("rethink.console.access")


def case_viewed(user: User, case_id: str, page: str) -> None:
    logger.info("case_viewed", case_id=case_id, page=page, user=user.id, email=user.email, role=str(user.role),
                agency=user.agency)
