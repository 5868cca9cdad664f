"""Read-only views for auditors (and facilitators and managers): every case, and a case's timeline.

The timeline is the case's own events read from the log (the audit trail), through the same
report the CLI prints (``rethink audit history``): nothing here reads a service's tables.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rethink.shared.cli import report, report_html

from . import access
from .gateway import Gateway
from .request_flow import CASE_ID
from .users import Role, require
from .web import Pages

READERS = (Role.AUDITOR, Role.FACILITATOR, Role.MANAGER)


def routes(pages: Pages, gateway: Gateway, today: Callable[[], date]) -> list[Route]:
    async def cases(request: Request) -> Response:
        require(request, *READERS)
        rows = await gateway.result("intake", "requests", {"limit": 1000})
        return pages.render(request, "audit/cases.html", title="Cases", column="full", rows=list(reversed(rows or [])))

    async def built(request: Request, page: str) -> report.Report:
        user = require(request, *READERS)
        case_id = request.path_params["case_id"]
        if not CASE_ID.fullmatch(case_id):
            raise HTTPException(404)
        await access.case_viewed(gateway, user, case_id, page)
        history = await gateway.history(case_id)
        if not history:
            raise HTTPException(404)
        return report.build_report(case_id, history, today=today())

    async def timeline(request: Request) -> Response:
        rep = await built(request, "timeline")
        timings = {k: (report.duration(v[2]) if v else None) for k, v in rep.timings.items()}
        return pages.render(request, "audit/timeline.html", title=f"Timeline of {rep.case_id}", column="full",
                            rep=rep, state=report.state_lines(rep.state), timings=timings,
                            short_time=report.short_time, back_href=f"/cases/{rep.case_id}")

    async def download(request: Request) -> Response:
        fmt = request.path_params["fmt"]
        if fmt not in ("csv", "html"):
            raise HTTPException(404)
        rep = await built(request, f"timeline.{fmt}")
        body = report.to_csv(rep.rows) if fmt == "csv" else report_html.to_html(rep)
        media = "text/csv" if fmt == "csv" else "text/html"
        return Response(body, media_type=f"{media}; charset=utf-8", headers={
            "content-disposition": f'attachment; filename="{rep.case_id}-timeline.{fmt}"'})

    return [
        Route("/cases", cases),
        Route("/cases/{case_id}/timeline", timeline),
        Route("/cases/{case_id}/timeline.{fmt}", download),
    ]
