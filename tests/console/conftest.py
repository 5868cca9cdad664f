"""The console against the four real services and a real nats-server, driven over HTTP in-process."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import httpx
import pytest
from argon2 import PasswordHasher

from rethink.console.accounts import Accounts
from rethink.console.app import build_app
from rethink.console.users import DEMO_USERS
from rethink.escalation.app import build as escalation
from rethink.intake.app import build as intake
from rethink.meeting.app import build as meeting
from rethink.scheduling.app import build as scheduling
from rethink.shared.settings import Settings
from tests.integration.conftest import event_log, run_services, subjects  # noqa: F401 - fixtures

CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
PASSWORD = "correct horse battery staple"  # every demo account's, in the tests
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


class Browser:
    """A person at a browser with JavaScript off: links are GETs, forms are plain POSTs."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.page = ""

    async def get(self, path: str) -> httpx.Response:
        r = await self.client.get(path, follow_redirects=True)
        self.page = r.text
        return r

    def token(self) -> str:
        found = TOKEN.search(self.page)
        assert found, "the page has no form with a CSRF token"
        return found.group(1)

    async def post(self, path: str, data: dict | list | None = None, follow: bool = True) -> httpx.Response:
        body = list(data.items()) if isinstance(data, dict) else list(data or [])
        r = await self.client.post(path, content=urlencode([("csrf_token", self.token()), *body]),
                                   headers={"content-type": "application/x-www-form-urlencoded"},
                                   follow_redirects=follow)
        self.page = r.text
        return r

    async def sign_in(self, user_id: str) -> httpx.Response:
        await self.get("/sign-in")
        return await self.post("/sign-in", {"username": user_id, "password": PASSWORD})


class ShiftedClock:
    """The services' clock: real time, moved on by the test (a meeting is recorded "later" than it was
    arranged without waiting for the minute to turn, since people type times to the minute)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
def service_clock() -> ShiftedClock:
    return ShiftedClock()


@pytest.fixture(scope="session")
def accounts(tmp_path_factory) -> Accounts:
    """The demo people as local accounts, made once. argon2 is slow on purpose (over a second a
    guess here); the tests use the same argon2id with the smallest costs so the suite stays quick."""
    made = Accounts(tmp_path_factory.mktemp("console") / "users.json", hasher=CHEAP)
    for user in DEMO_USERS:
        made.add(user, PASSWORD)
    return made


@pytest.fixture
async def console_app(settings: Settings, run_services, service_clock, accounts):  # noqa: F811 - the imported fixture
    await run_services(intake, scheduling, meeting, escalation, clock=service_clock)
    app = build_app(settings, accounts=accounts)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def browser(console_app) -> AsyncIterator[Browser]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=console_app), base_url="http://127.0.0.1") as c:
        yield Browser(c)


@pytest.fixture
async def second_browser(console_app) -> AsyncIterator[Browser]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=console_app), base_url="http://127.0.0.1") as c:
        yield Browser(c)
