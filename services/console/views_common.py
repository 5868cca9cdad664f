"""Pages every role shares: sign in and out, the start page, a case's summary, errors."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from . import access
from .gateway import Gateway
from .request_flow import CASE_ID
from .security import checked_form
from .users import BY_ID, DEMO_USERS, ROLE_NAMES, Role, current_user, require
from .web import Pages

HOME = {Role.PRACTITIONER: "/requests", Role.FACILITATOR: "/queue", Role.MANAGER: "/reports", Role.AUDITOR: "/cases"}


def next_steps(views: dict[str, Any]) -> set[str]:
    """What a facilitator can do next on the case, from the services' views of it.

    Only offers what the services would accept; they still decide, and their refusals are shown.
    """
    sched, meeting, esc = views["scheduling"] or {}, views["meeting"] or {}, views["escalation"] or {}
    closed = bool(sched.get("closed") or esc.get("closed") or meeting.get("closed"))
    steps: set[str] = set()
    held = (meeting.get("meeting") or {}).get("status") == "held"
    arranged = (sched.get("meeting") or {}).get("status") in ("scheduled", "rescheduled")
    open_escalation = ((esc.get("escalation") or {}).get("status")) == "open"
    if not closed:
        if sched.get("facilitator") and not held and not arranged:
            steps.add("schedule")
        if arranged:
            steps |= {"reschedule", "cancel", "record"}
        if open_escalation:
            steps |= {"advance", "resolve"}
        elif views["escalation"] is not None:
            steps.add("raise")
        outcome = (meeting.get("meeting") or {}).get("outcome")
        if held and outcome == "partly_resolved" and not open_escalation and all(
                a["status"] == "completed" for a in meeting.get("actions", [])):
            steps.add("close")
    if meeting.get("actions"):
        steps.add("complete")  # an action may be completed even after the case has closed
    return steps


def routes(pages: Pages, gateway: Gateway) -> list[Route]:
    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def home(request: Request) -> Response:
        user = current_user(request)
        if user is None:
            return RedirectResponse("/sign-in", status_code=303)
        if user.role in HOME:
            return RedirectResponse(HOME[user.role], status_code=303)
        return pages.render(request, "home.html", title="Re-think")

    async def sign_in(request: Request) -> Response:
        errors: dict[str, str] = {}
        if request.method == "POST":
            form = await checked_form(request)
            user = BY_ID.get(str(form.get("user_id", "")))
            if user is not None:
                # A new session on sign-in: nothing from before it (a draft, a token) carries over.
                request.session.clear()
                request.session["user_id"] = user.id
                return RedirectResponse("/", status_code=303)
            errors["user_id"] = "Select who you are signing in as"
        return pages.render(request, "sign_in.html", status=400 if errors else 200, title="Sign in", errors=errors,
                            users=DEMO_USERS, role_names=ROLE_NAMES)

    async def sign_out(request: Request) -> Response:
        await checked_form(request)
        request.session.clear()
        return RedirectResponse("/sign-in", status_code=303)

    async def case(request: Request) -> Response:
        user = require(request)
        case_id = request.path_params["case_id"]
        if not CASE_ID.fullmatch(case_id):
            raise HTTPException(404)
        intake = await gateway.result("intake", "case", {"case_id": case_id})
        if intake is None:
            raise HTTPException(404)
        if user.role is Role.PRACTITIONER and intake["agency"] != user.agency:
            raise HTTPException(403)  # a practitioner sees only their own agency's requests
        access.case_viewed(user, case_id, "case")
        views = {name: await gateway.result(name, "case", {"case_id": case_id})
                 for name in ("scheduling", "meeting", "escalation")}
        own = user.role is Role.PRACTITIONER and intake["agency"] == user.agency
        can = next_steps(views) if user.role is Role.FACILITATOR else set()
        return pages.render(request, "case.html", flash=request.session.pop("flash", None),
                            title=f"Case {intake['case_reference']}", case_id=case_id,
                            intake=intake, **views, can_confirm=own and intake["status"] == "awaiting_checks", can=can,
                            timeline=user.role in (Role.AUDITOR, Role.FACILITATOR, Role.MANAGER),
                            back_href={Role.PRACTITIONER: "/requests", Role.AUDITOR: "/cases"}.get(user.role, "/queue"))

    return [
        Route("/health", health),
        Route("/", home),
        Route("/sign-in", sign_in, methods=["GET", "POST"]),
        Route("/sign-out", sign_out, methods=["POST"]),
        Route("/cases/{case_id}", case),
    ]
