"""Every form POST passes here: the CSRF token must match the session's, and auditors change nothing."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .users import BY_ID, Role

# Signing in and out changes nothing in the system, so an auditor may do both.
OPEN_TO_AUDITORS = ("/sign-in", "/sign-out")


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


async def checked_form(request: Request) -> FormData:
    form = await request.form()
    sent = str(form.get("csrf_token", ""))
    expected = request.session.get("csrf", "")
    if not expected or not hmac.compare_digest(sent, expected):
        raise HTTPException(403, "The form had expired or did not come from this site.")
    return form


class AuditorsReadOnly:
    """Refuses any state-changing request from an auditor, whichever route it names.

    Routes check roles too; this is the backstop that keeps the promise if a route forgets.
    """

    def __init__(self, app: ASGIApp, refuse: Callable[[Request], Response]) -> None:
        self.app = app
        self.refuse = refuse  # it runs outside the exception handlers, so it answers itself

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD", "OPTIONS") \
                and scope["path"] not in OPEN_TO_AUDITORS:
            user = BY_ID.get(scope.get("session", {}).get("user_id", ""))
            if user is not None and user.role is Role.AUDITOR:
                await self.refuse(Request(scope, receive))(scope, receive, send)
                return
        await self.app(scope, receive, send)
