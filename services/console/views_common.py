"""Pages every role shares: sign in and out, the start page, a case's summary, errors."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from .gateway import Gateway
from .request_flow import CASE_ID
from .security import checked_form
from .users import BY_ID, DEMO_USERS, ROLE_NAMES, Role, current_user, require
from .web import Pages

HOME = {Role.PRACTITIONER: "/requests", Role.FACILITATOR: "/queue", Role.MANAGER: "/queue"}


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
        views = {name: await gateway.result(name, "case", {"case_id": case_id})
                 for name in ("scheduling", "meeting", "escalation")}
        own = user.role is Role.PRACTITIONER and intake["agency"] == user.agency
        return pages.render(request, "case.html", flash=request.session.pop("flash", None), title=f"Case {intake['case_reference']}", case_id=case_id,
                            intake=intake, **views, can_confirm=own and intake["status"] == "awaiting_checks",
                            back_href="/requests" if user.role is Role.PRACTITIONER else "/queue")

    return [
        Route("/health", health),
        Route("/", home),
        Route("/sign-in", sign_in, methods=["GET", "POST"]),
        Route("/sign-out", sign_out, methods=["POST"]),
        Route("/cases/{case_id}", case),
    ]
