"""Who looked at which case, and when: every page that shows a case is recorded first.

The record goes to the access-record stream (``rethink audit access CASE`` lists it) before the
page is built: no record, no page. A structured log line (``case_viewed``) says it too.
"""

from __future__ import annotations

from rethink.shared.logs import get_logger

from .gateway import Gateway
from .users import User

logger = get_logger("rethink.console.access")


async def case_viewed(gateway: Gateway, user: User, case_id: str, page: str) -> None:
    await gateway.record_access(case_id, user.email, f"console {page}")
    logger.info("case_viewed", case_id=case_id, page=page, user=user.id, email=user.email, role=str(user.role),
                agency=user.agency)
