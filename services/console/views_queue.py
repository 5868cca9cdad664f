"""The facilitator's work queue, gathered from the services' own queries (no table of theirs is read)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .gateway import Gateway
from .users import Role, require
from .web import Pages

LONDON = ZoneInfo("Europe/London")
ESCALATION_HORIZON_WORKING_DAYS = 2


def this_week(now: datetime) -> tuple[datetime, datetime]:
    """Monday 00:00 to the next Monday 00:00, in London (meetings are arranged in local time)."""
    today = now.astimezone(LONDON).date()
    monday = today - timedelta(days=today.weekday())
    start = datetime.combine(monday, time(0), tzinfo=LONDON)
    return start, datetime.combine(monday + timedelta(days=7), time(0), tzinfo=LONDON)


def routes(pages: Pages, gateway: Gateway, now: Callable[[], datetime]) -> list[Route]:
    async def queue(request: Request) -> Response:
        require(request, Role.FACILITATOR, Role.MANAGER)
        start, end = this_week(now())
        awaiting, ready, meetings, overdue, escalations = await asyncio.gather(
            gateway.result("intake", "requests", {"status": "awaiting_checks", "limit": 1000}),
            gateway.result("scheduling", "to_schedule", {"limit": 1000}),
            gateway.result("scheduling", "meetings", {"starts_from": start.isoformat(),
                                                      "starts_before": end.isoformat(), "limit": 1000}),
            gateway.result("meeting", "actions", {"overdue_only": True, "open_cases_only": True, "limit": 1000}),
            gateway.result("escalation", "escalations", {"open_only": True, "limit": 1000,
                                                         "due_within_working_days": ESCALATION_HORIZON_WORKING_DAYS}),
        )
        for m in meetings or []:
            m["starts_local"] = datetime.fromisoformat(m["starts_at"]).astimezone(LONDON)
        return pages.render(request, "queue.html", title="Work queue", column="full",
                            awaiting=awaiting or [], ready=ready or [], meetings=meetings or [],
                            overdue=overdue or [], escalations=escalations or [],
                            week_start=start, week_end=end - timedelta(days=1),
                            horizon=ESCALATION_HORIZON_WORKING_DAYS)

    return [Route("/queue", queue)]
