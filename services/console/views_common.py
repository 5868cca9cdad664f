"""Pages every role shares: sign in and out, the start page, a case's summary, errors."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from rethink.shared.logs import get_logger

from . import access
from .accounts import Accounts
from .gateway import Gateway
from .oidc import OAuthError, OidcSignIn, SignInRefused
from .request_flow import CASE_ID
from .security import SignInLimiter, checked_form
from .users import Role, User, current_user, require
from .web import Pages

log = get_logger("rethink.console")
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


def routes(pages: Pages, gateway: Gateway, accounts: Accounts, limiter: SignInLimiter,
           oidc: OidcSignIn | None) -> list[Route]:
    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def home(request: Request) -> Response:
        user = current_user(request)
        if user is None:
            return RedirectResponse("/sign-in", status_code=303)
        if user.role in HOME:
            return RedirectResponse(HOME[user.role], status_code=303)
        return pages.render(request, "home.html", title="Re-think")

    def signed_in(request: Request, user: User) -> Response:
        # A new session on sign-in: nothing from before it (a draft, a token) carries over.
        request.session.clear()
        request.session["user"] = user.as_session()
        log.info("signed_in", user=user.id, role=user.role.value, via=user.via)
        return RedirectResponse("/", status_code=303)

    def sign_in_page(request: Request, errors: dict[str, str], username: str = "", status: int = 200) -> Response:
        return pages.render(request, "sign_in.html", status=status if not errors or status != 200 else 400,
                            title="Sign in", errors=errors, username=username, oidc=oidc is not None)

    async def sign_in(request: Request) -> Response:
        if request.method == "GET":
            return sign_in_page(request, {})
        form = await checked_form(request)
        username = str(form.get("username", "")).strip().lower()[:100]
        password = str(form.get("password", ""))
        errors: dict[str, str] = {}
        if not username:
            errors["username"] = "Enter your user name"
        if not password:
            errors["password"] = "Enter your password"
        if errors:
            return sign_in_page(request, errors, username)
        keys = [f"user:{username}", f"ip:{request.client.host if request.client else '-'}"]
        if limiter.blocked(*keys):
            log.warning("sign_in_refused_too_many_attempts", user=username)
            return sign_in_page(request, {"username": "Too many failed attempts to sign in. Wait 15 minutes, "
                                                      "then try again."}, username, status=429)
        user = accounts.verify(username, password)
        if user is None:
            limiter.failed(*keys)
            log.info("sign_in_failed", user=username)
            # One message for either mistake: the page must not tell which user names exist.
            return sign_in_page(request, {"username": "Enter a correct user name and password"}, username)
        limiter.succeeded(keys[0])
        return signed_in(request, user)

    async def oidc_start(request: Request) -> Response:
        if oidc is None:
            raise HTTPException(404)
        return await oidc.start(request)

    async def oidc_callback(request: Request) -> Response:
        if oidc is None:
            raise HTTPException(404)
        try:
            user = await oidc.finish(request)
        except SignInRefused as exc:
            return pages.render(request, "error.html", status=403, title="You cannot sign in to Re-think",
                                detail=str(exc))
        except OAuthError as exc:
            log.warning("oidc_sign_in_failed", error=exc.error)
            return pages.render(request, "error.html", status=400, title="Sign-in did not complete",
                                detail="The identity provider's answer could not be accepted. Try signing in again.")
        return signed_in(request, user)

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
        await access.case_viewed(gateway, user, case_id, "case")
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
        Route("/sign-in/oidc", oidc_start),
        Route("/sign-in/oidc/callback", oidc_callback, name="oidc_callback"),
        Route("/sign-out", sign_out, methods=["POST"]),
        Route("/cases/{case_id}", case),
    ]
