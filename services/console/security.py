"""Protections every request passes: CSRF on form posts, auditors change nothing, a Content
Security Policy with a per-response nonce, and a limit on sign-in attempts."""

from __future__ import annotations

import hmac
import secrets
import time
from collections import defaultdict, deque
from collections.abc import Callable

from starlette.datastructures import FormData, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .users import Role, User

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
            user = User.from_session(scope.get("session", {}).get("user"))
            if user is not None and user.role is Role.AUDITOR:
                await self.refuse(Request(scope, receive))(scope, receive, send)
                return
        await self.app(scope, receive, send)


def content_security_policy(nonce: str) -> str:
    # No inline script but the GOV.UK template's one js-enabled line, which carries the nonce.
    # Sign-in with the identity provider is a link (GET), so form-action stays 'self'.
    return "; ".join((
        "default-src 'self'", f"script-src 'self' 'nonce-{nonce}'", "style-src 'self'", "img-src 'self' data:",
        "font-src 'self'", "connect-src 'self'", "object-src 'none'", "base-uri 'none'", "form-action 'self'",
        "frame-ancestors 'none'",
    ))


class SecurityHeaders:
    """A fresh nonce per response (``request.state.csp_nonce``) and the headers that use it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(18)
        scope.setdefault("state", {})["csp_nonce"] = nonce

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["content-security-policy"] = content_security_policy(nonce)
                headers["x-content-type-options"] = "nosniff"
                headers["referrer-policy"] = "same-origin"
                headers["x-frame-options"] = "DENY"
                if not scope["path"].startswith("/assets/"):
                    headers.setdefault("cache-control", "no-store")  # case details never sit in a cache
            await send(message)

        await self.app(scope, receive, with_headers)


class SignInLimiter:
    """At most ``attempts`` failed sign-ins per user name in a sliding window, and ten times as many
    per address (many people may share one address behind a proxy or an agency's network).

    In memory: a console restart forgets the count (argon2 keeps each guess slow regardless).
    Once over the limit, sign-in is refused without checking the password, until the oldest
    failure leaves the window.
    """

    PER_ADDRESS = 10

    def __init__(self, attempts: int, window_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.attempts = attempts
        self.window = window_seconds
        self.clock = clock
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def _recent(self, key: str) -> deque[float]:
        q = self._failures[key]
        while q and self.clock() - q[0] > self.window:
            q.popleft()
        return q

    def blocked(self, user_key: str, address_key: str) -> bool:
        return (len(self._recent(user_key)) >= self.attempts
                or len(self._recent(address_key)) >= self.attempts * self.PER_ADDRESS)

    def failed(self, *keys: str) -> None:
        for k in keys:
            self._recent(k).append(self.clock())
        if len(self._failures) > 100_000:  # a flood of made-up names must not exhaust memory
            for k in [k for k in self._failures if not self._recent(k)]:
                del self._failures[k]

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
