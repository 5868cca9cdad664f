"""Rendering: the Jinja environment with the GOV.UK Frontend macros, and what every page gets."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, PrefixLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from .security import csrf_token
from .users import ROLE_NAMES, Role, User, current_user

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
LONDON = ZoneInfo("Europe/London")

NAVIGATION = {
    Role.PRACTITIONER: [("/requests", "My requests"), ("/requests/new", "Request a Re-think")],
    Role.FACILITATOR: [("/queue", "Work queue"), ("/cases", "Cases")],
    Role.MANAGER: [("/queue", "Work queue"), ("/reports", "Reports"), ("/cases", "Cases")],
    Role.AUDITOR: [("/cases", "Cases")],
}


def templates() -> Jinja2Templates:
    env = Environment(
        loader=ChoiceLoader([
            FileSystemLoader(HERE / "templates"),
            PrefixLoader({"govuk_frontend_jinja": PackageLoader("govuk_frontend_jinja")}),
        ]),
        autoescape=select_autoescape(["html"]),
    )
    env.globals["role_names"] = ROLE_NAMES
    return Jinja2Templates(env=env)


def error_list(errors: dict[str, str]) -> list[dict[str, str]]:
    """The error summary links each message to its field (a ``#`` anchor, never another page).

    Errors about the form as a whole (keys starting ``form``) link to the top of the content.
    """
    return [{"text": message, "href": "#main-content" if field.startswith("form") else f"#{field}"}
            for field, message in errors.items()]


def when(value: str | None) -> str:
    """An ISO date-time from a service or the log, as people read it: UK time, "27 November 2026 at 10:00"."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is None:
        return f"{moment:%-d %B %Y}"
    return f"{moment.astimezone(LONDON):%-d %B %Y at %H:%M}"


def change_action(href: str, what: str) -> dict[str, list[dict[str, str]]]:
    """A summary list row's "Change" link, named for screen readers."""
    return {"items": [{"href": href, "text": "Change", "visuallyHiddenText": what}]}


def field_error(errors: dict[str, str], field: str) -> dict[str, str] | None:
    return {"text": errors[field]} if field in errors else None


class Pages:
    def __init__(self) -> None:
        self.t = templates()
        self.t.env.globals["field_error"] = field_error
        self.t.env.globals["change_action"] = change_action
        self.t.env.filters["when"] = when

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        user: User | None = current_user(request)
        path = request.url.path
        errors = context.get("errors") or {}
        items = NAVIGATION[user.role] if user else []
        # The longest matching entry is the current one: /requests/new/... is not "My requests".
        current = max((href for href, _ in items if path == href or path.startswith(href + "/")), key=len,
                      default=None)
        nav = [{"href": href, "text": text, "active": href == current} for href, text in items]
        base = {"user": user, "csrf_token": csrf_token(request), "navigation": nav,
                "cspNonce": getattr(request.state, "csp_nonce", None),
                "error_list": error_list(errors), "errors": errors}
        return self.t.TemplateResponse(request, name, {**base, **context}, status_code=status)
