"""The facilitator's work queue, gathered from the services' own queries (no table of theirs is read)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rethink.shared.settings import Facilitator

from .gateway import Gateway
from .users import Role, User, require
from .web import Pages

LONDON = ZoneInfo("Europe/London")
ESCALATION_HORIZON_WORKING_DAYS = 2


def this_week(now: datetime) -> tuple[datetime, datetime]:
    """Monday 00:00 to the next Monday 00:00, in London (meetings are arranged in local time)."""
    today = now.astimezone(LONDON).date()
    monday = today - timedelta(days=today.weekday())
    start = datetime.combine(monday, time(0), tzinfo=LONDON)
    return start, datetime.combine(monday + timedelta(days=7), time(0), tzinfo=LONDON)


def facilitator_id(user: User, facilitators: Iterable[Facilitator]) -> str | None:
    """The configured facilitator this person is, matched by work email."""
    return next((f.id for f in facilitators if str(f.email).casefold() == user.email.casefold()), None)


async def assigned_to(gateway: Gateway, fac_id: str, *lists: list[dict] | None) -> set[str]:
    """Which cases of these rows the facilitator holds, asked of scheduling by the rows' case ids:
    bounded by what the page shows, where a scan of the log grows with every case ever recorded."""
    case_ids = sorted({row["case_id"] for rows in lists for row in rows or []})
    if not case_ids:
        return set()
    holders = await gateway.result("scheduling", "assigned", {"case_ids": case_ids}) or {}
    return {case_id for case_id, holder in holders.items() if holder == fac_id}


def routes(pages: Pages, gateway: Gateway, now: Callable[[], datetime],
           facilitators: Iterable[Facilitator] = ()) -> list[Route]:
    facilitators = tuple(facilitators)

    async def queue(request: Request) -> Response:
        user = require(request, Role.FACILITATOR, Role.MANAGER)
        me = facilitator_id(user, facilitators) if user.role is Role.FACILITATOR else None
        only_mine = me is not None and request.query_params.get("mine") == "1"
        start, end = this_week(now())
        # Scheduling knows each case's facilitator, so it narrows its own lists; the 1,000 rows are then mine.
        mine_only = {"facilitator_id": me} if only_mine else {}
        awaiting, ready, meetings, overdue, escalations = await asyncio.gather(
            gateway.result("intake", "requests", {"status": "awaiting_checks", "limit": 1000}),
            gateway.result("scheduling", "to_schedule", {"limit": 1000, **mine_only}),
            gateway.result("scheduling", "meetings", {"starts_from": start.isoformat(),
                                                      "starts_before": end.isoformat(), "limit": 1000, **mine_only}),
            gateway.result("meeting", "actions", {"overdue_only": True, "open_cases_only": True, "limit": 1000}),
            gateway.result("escalation", "escalations", {"open_only": True, "limit": 1000,
                                                         "due_within_working_days": ESCALATION_HORIZON_WORKING_DAYS}),
        )
        if only_mine:
            assert me is not None
            # Awaiting checks has no facilitator yet, so it stays whole; meeting and escalation do not
            # know the facilitator, so their rows are cut to the cases scheduling says are mine.
            mine = await assigned_to(gateway, me, overdue, escalations)
            overdue, escalations = ([row for row in rows or [] if row["case_id"] in mine] for rows in (overdue, escalations))
        for m in meetings or []:
            m["starts_local"] = datetime.fromisoformat(m["starts_at"]).astimezone(LONDON)
        return pages.render(request, "queue.html", title="Work queue", column="full",
                            awaiting=awaiting or [], ready=ready or [], meetings=meetings or [],
                            overdue=overdue or [], escalations=escalations or [],
                            week_start=start, week_end=end - timedelta(days=1),
                            horizon=ESCALATION_HORIZON_WORKING_DAYS, can_filter=me is not None,
                            only_mine=only_mine)

    return [Route("/queue", queue)]
