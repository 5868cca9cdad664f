"""The console's composition root: settings in, an ASGI app out. Nothing connects until it starts."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from rethink.shared.logs import get_logger
from rethink.shared.settings import Settings

from . import views_audit, views_common, views_facilitator, views_queue, views_reports, views_request
from .accounts import Accounts
from .drafts import Drafts
from .forms import LONDON
from .gateway import Gateway, Unavailable
from .oidc import OidcSignIn
from .security import AuditorsReadOnly, SecurityHeaders, SignInLimiter
from .web import STATIC, Pages

logger = get_logger("rethink.console")
SESSION_COOKIE = "rethink_session"
SESSION_SECONDS = 8 * 3600  # a working day
SIGN_IN_WINDOW_SECONDS = 15 * 60


async def read_ahead(gateway: Gateway) -> None:
    """The reports' first read of the whole log, at start and in the background: a report opened
    meanwhile waits only for the rest of it (the gateway reads the log once at a time)."""
    try:
        facts = await gateway.report_facts()
        logger.info("console_reports_read_ahead", cases=len(facts), read_to=gateway.reports_read_to)
    except Exception as exc:  # noqa: BLE001 - the first report reads it instead, and says what is wrong
        logger.warning("console_reports_read_ahead_failed", error=str(exc) or type(exc).__name__)


def build_app(settings: Settings, *, now: Callable[[], datetime] | None = None,
              accounts: Accounts | None = None, oidc_transport: httpx.AsyncBaseTransport | None = None) -> Starlette:
    pages = Pages()
    accounts = accounts or Accounts(settings.console_users_path)
    limiter = SignInLimiter(settings.console_sign_in_attempts, SIGN_IN_WINDOW_SECONDS)
    oidc = OidcSignIn(settings, oidc_transport) if settings.console_oidc_issuer else None
    gateway = Gateway(settings)
    drafts = Drafts()
    clock = now or (lambda: datetime.now(UTC))

    def today() -> date:
        return clock().astimezone(LONDON).date()
    secret = settings.console_secret.get_secret_value() if settings.console_secret else secrets.token_urlsafe(48)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.connect()
        ahead = asyncio.create_task(read_ahead(gateway)) if settings.console_read_log_at_start else None
        try:
            yield
        finally:
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ahead
            await gateway.close()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 401:
            return RedirectResponse("/sign-in", status_code=303)
        titles = {403: "You do not have permission to see or do this", 404: "Page not found"}
        return pages.render(request, "error.html", status=exc.status_code,
                            title=titles.get(exc.status_code, "Sorry, there is a problem"), detail=exc.detail)

    async def unavailable(request: Request, exc: Exception) -> Response:
        return pages.render(request, "error.html", status=503, title="Sorry, the service is unavailable",
                            detail=f"Part of Re-think is not answering ({exc}). Try again in a few minutes.")

    def refuse(request: Request) -> Response:
        return pages.render(request, "error.html", status=403,
                            title="You do not have permission to see or do this",
                            detail="Auditors can read but not change anything.")

    routes = [
        Mount("/assets", StaticFiles(directory=STATIC), name="assets"),
        *views_common.routes(pages, gateway, accounts, limiter, oidc),
        *views_request.routes(pages, gateway, drafts),
        *views_queue.routes(pages, gateway, clock, settings.facilitators),
        *views_facilitator.routes(pages, gateway, drafts, today),
        *views_audit.routes(pages, gateway, today),
        *views_reports.routes(pages, gateway, today),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeaders),
            # HTTP-only and same-site by Starlette's design; Secure when served over HTTPS (a setting).
            Middleware(SessionMiddleware, secret_key=secret, session_cookie=SESSION_COOKIE,
                       max_age=SESSION_SECONDS, same_site="lax", https_only=settings.console_secure_cookies),
            Middleware(AuditorsReadOnly, refuse=refuse),
        ],
        exception_handlers={HTTPException: http_error, Unavailable: unavailable},
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.state.accounts = accounts
    return app
