"""The partnership manager's reports for a chosen period: tables, SVG charts and a CSV of each.

The figures are folded from the event log itself (``Gateway.report_facts``), never from another
service's tables; docs/console.md says why.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import date
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rethink.shared.workdays import england_and_wales

from . import forms, reports
from .charts import bar_chart
from .gateway import Gateway
from .users import Role, require
from .web import Pages

VIEWERS = (Role.MANAGER,)


def read_period(query: Any, today: date) -> tuple[reports.Period, dict[str, Any], dict[str, str]]:
    typed = {"from": forms.date_parts(query, "from"), "to": forms.date_parts(query, "to")}
    default = reports.default_period(today)
    if not any(typed["from"].values()) and not any(typed["to"].values()):
        typed = {k: {"day": str(d.day), "month": str(d.month), "year": str(d.year)}
                 for k, d in (("from", default.start), ("to", default.end))}
        return default, typed, {}
    errors: dict[str, str] = {}
    start = forms.parse_date(typed["from"], "the first day of the period", errors, "from")
    end = forms.parse_date(typed["to"], "the last day of the period", errors, "to")
    if start and end and end < start:
        errors["to"] = "The last day of the period must be the same as or after the first day"
    if errors or start is None or end is None:
        return default, typed, errors
    return reports.Period(start, end), typed, {}


def routes(pages: Pages, gateway: Gateway, today: Callable[[], date]) -> list[Route]:
    holidays = england_and_wales()

    async def tables(request: Request) -> tuple[reports.Period, dict[str, Any], dict[str, str], list[reports.Table]]:
        require(request, *VIEWERS)
        period, typed, errors = read_period(request.query_params, today())
        if errors:
            return period, typed, errors, []
        return period, typed, errors, reports.build(await gateway.report_facts(), period, holidays, today())

    async def page(request: Request) -> Response:
        period, typed, errors, built = await tables(request)
        query = (f"from-day={period.start.day}&from-month={period.start.month}&from-year={period.start.year}"
                 f"&to-day={period.end.day}&to-month={period.end.month}&to-year={period.end.year}")
        charts = {t.slug: bar_chart(f"chart-{t.slug}", t.title, t.chart, t.columns[t.chart_column or 1].lower())
                  for t in built}
        return pages.render(request, "reports.html", status=400 if errors else 200, title="Reports", column="full",
                            errors=errors, typed=typed, period=period, tables=built, charts=charts, query=query)

    async def download(request: Request) -> Response:
        period, _, errors, built = await tables(request)
        if errors:
            raise HTTPException(400, "; ".join(errors.values()))
        table = next((t for t in built if t.slug == request.path_params["slug"]), None)
        if table is None:
            raise HTTPException(404)
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(table.columns)
        writer.writerows([[_cell(v) for v in row] for row in table.rows])
        name = f"rethink-{table.slug}-{period.start.isoformat()}-to-{period.end.isoformat()}.csv"
        return Response(buf.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"content-disposition": f'attachment; filename="{name}"'})

    return [Route("/reports", page), Route("/reports/{slug}.csv", download)]


def _cell(value: object) -> str:
    # A spreadsheet runs a cell starting with one of these as a formula (agencies' names are free text).
    text = str(value)
    return "'" + text if text.startswith(("=", "+", "-", "@", "\t", "\r")) else text
