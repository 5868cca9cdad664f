"""Sign-in: local accounts with argon2 hashes, rate-limited attempts, cookie flags, and OpenID Connect
against a small fake identity provider (in-process, over httpx)."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from typer.testing import CliRunner

from rethink.console.accounts import Accounts
from rethink.console.app import build_app
from rethink.console.users import Role, User
from tests.console.conftest import CHEAP, PASSWORD, Browser

pytestmark = pytest.mark.nats
ISSUER = "https://idp.example.org"


async def test_a_wrong_password_gets_one_message_that_does_not_say_which_part_was_wrong(browser):
    await browser.get("/sign-in")
    for name in ("priya", "nobody-at-all"):
        r = await browser.post("/sign-in", {"username": name, "password": "not the password"})
        assert r.status_code == 400 and "There is a problem" in r.text
        assert "Enter a correct user name and password" in r.text
        assert f'value="{name}"' in r.text and "not the password" not in r.text  # the password is never echoed
    r = await browser.post("/sign-in", {"username": "", "password": ""})
    assert "Enter your user name" in r.text and "Enter your password" in r.text
    r = await browser.post("/sign-in", {"username": "Priya", "password": PASSWORD})
    assert r.url.path == "/requests"


async def test_sign_in_attempts_are_limited_per_user_name(settings, console_app, accounts):
    app = build_app(settings.model_copy(update={"console_sign_in_attempts": 3}), accounts=accounts)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        browser = Browser(client)
        await browser.get("/sign-in")
        for _ in range(3):
            r = await browser.post("/sign-in", {"username": "jo", "password": "guess"})
            assert r.status_code == 400
        r = await browser.post("/sign-in", {"username": "jo", "password": PASSWORD})  # right, but too late
        assert r.status_code == 429 and "Too many failed attempts" in r.text
        assert (await browser.get("/queue")).url.path == "/sign-in"


async def test_the_session_cookie_is_secure_when_served_over_https(settings, console_app, accounts):
    app = build_app(settings.model_copy(update={"console_secure_cookies": True}), accounts=accounts)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="https://127.0.0.1") as client:
        browser = Browser(client)
        await browser.get("/sign-in")
        r = await client.post("/sign-in", data={"username": "priya", "password": PASSWORD,
                                                "csrf_token": browser.token()})
        cookie = r.headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie and "samesite=lax" in cookie


async def test_a_removed_account_is_signed_out_at_its_next_request(settings, console_app, tmp_path):
    own = Accounts(tmp_path / "users.json", hasher=CHEAP)
    own.add(User("temp-fac", "Temp Facilitator", "temp@example.org", Role.FACILITATOR, "Facilitator"), PASSWORD)
    app = build_app(settings, accounts=own)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        browser = Browser(client)
        await browser.sign_in("temp-fac")
        assert (await browser.get("/queue")).url.path == "/queue"
        own.remove("temp-fac")
        assert (await browser.get("/queue")).url.path == "/sign-in"


def test_rethink_users_add_stores_an_argon2_hash_and_refuses_bad_accounts(tmp_path, monkeypatch):
    from rethink.shared.cli.main import app

    users = tmp_path / "users.json"
    monkeypatch.setenv("RETHINK_CONSOLE_USERS_FILE", str(users))
    runner = CliRunner()
    args = ["users", "add", "j.smith", "--role", "practitioner", "--agency", "police", "--agency-name", "Police",
            "--full-name", "Jay Smith", "--email", "jay.smith@police.example.org"]
    done = runner.invoke(app, args, input="a long enough password\na long enough password\n")
    assert done.exit_code == 0, done.output
    record = json.loads(users.read_text())["users"]["j.smith"]
    assert record["password_hash"].startswith("$argon2id$") and "a long enough password" not in users.read_text()
    assert Accounts(users).verify("j.smith", "a long enough password").agency == "police"
    again = runner.invoke(app, args, input="a long enough password\na long enough password\n")
    assert again.exit_code == 1 and "already a user" in again.output
    no_agency = runner.invoke(app, ["users", "add", "x1", "--role", "practitioner", "--full-name", "X",
                                    "--email", "x@example.org"], input="a long enough password\n" * 2)
    assert no_agency.exit_code == 1 and "needs --agency" in no_agency.output
    short = runner.invoke(app, ["users", "add", "x2", "--role", "auditor", "--full-name", "X",
                                "--email", "x@example.org"], input="short\nshort\n")
    assert short.exit_code == 1 and "at least 12 characters" in short.output


class FakeProvider:
    """Just enough of an OpenID provider: discovery, keys, and a token endpoint issuing signed ID tokens."""

    def __init__(self, claims: dict) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-key"})
        self.claims = claims
        self.nonces: dict[str, str] = {}  # code -> the nonce the console sent

    def app(self) -> Starlette:
        async def discovery(request: Request) -> JSONResponse:
            return JSONResponse({"issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/authorize",
                                 "token_endpoint": f"{ISSUER}/token", "jwks_uri": f"{ISSUER}/jwks",
                                 "response_types_supported": ["code"], "subject_types_supported": ["public"],
                                 "id_token_signing_alg_values_supported": ["RS256"]})

        async def jwks(request: Request) -> JSONResponse:
            return JSONResponse({"keys": [self.key.as_dict(private=False)]})

        async def token(request: Request) -> JSONResponse:
            form = await request.form()
            nonce = self.nonces.pop(str(form["code"]), None)
            if nonce is None or not form.get("code_verifier"):
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            now = int(time.time())
            claims = {"iss": ISSUER, "aud": "rethink-console", "iat": now, "exp": now + 300, "nonce": nonce,
                      **self.claims}
            id_token = jwt.encode({"alg": "RS256", "kid": "test-key"}, claims, self.key)
            return JSONResponse({"access_token": "at", "token_type": "Bearer", "expires_in": 300,
                                 "id_token": id_token})

        return Starlette(routes=[Route("/.well-known/openid-configuration", discovery), Route("/jwks", jwks),
                                 Route("/token", token, methods=["POST"])])


async def oidc_sign_in(settings, claims: dict) -> tuple[httpx.Response, Browser]:
    provider = FakeProvider(claims)
    configured = settings.model_copy(update={"console_oidc_issuer": ISSUER, "console_oidc_client_id": "rethink-console",
                                             "console_oidc_client_secret": SecretStr("s3cret-for-tests")})
    app = build_app(configured, accounts=Accounts(settings.state_dir / "none.json"),
                    oidc_transport=httpx.ASGITransport(app=provider.app()))
    async with app.router.lifespan_context(app):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
        browser = Browser(client)
        page = await browser.get("/sign-in")
        assert 'href="/sign-in/oidc"' in page.text
        start = await client.get("/sign-in/oidc")
        assert start.status_code == 302
        sent = parse_qs(urlparse(start.headers["location"]).query)
        assert start.headers["location"].startswith(f"{ISSUER}/authorize")
        assert sent["code_challenge_method"] == ["S256"] and sent["client_id"] == ["rethink-console"]
        provider.nonces["code-1"] = sent["nonce"][0]  # the person signs in at the provider, which sends them back
        done = await browser.get(f"/sign-in/oidc/callback?code=code-1&state={sent['state'][0]}")
        return done, browser


async def test_openid_connect_signs_in_a_practitioner_with_the_role_and_agency_from_the_claims(
        settings, console_app):
    done, browser = await oidc_sign_in(settings, {
        "sub": "abc-123", "email": "dsl@northside-school.example.org", "name": "Priya Example",
        "rethink_role": "practitioner", "rethink_agency": "northside-school"})
    assert done.url.path == "/requests" and "Priya Example" in done.text
    await browser.client.aclose()


async def test_openid_connect_refuses_an_account_without_a_rethink_role(settings, console_app):
    done, browser = await oidc_sign_in(settings, {"sub": "x", "email": "someone@example.org"})
    assert done.status_code == 403 and "no Re-think role" in done.text
    assert (await browser.get("/queue")).url.path == "/sign-in"
    await browser.client.aclose()


async def test_a_forged_callback_is_refused(settings, console_app):
    configured = settings.model_copy(update={"console_oidc_issuer": ISSUER, "console_oidc_client_id": "rethink-console"})
    app = build_app(configured, accounts=Accounts(settings.state_dir / "none.json"),
                    oidc_transport=httpx.ASGITransport(app=FakeProvider({}).app()))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        r = await client.get("/sign-in/oidc/callback?code=stolen&state=made-up")
        assert r.status_code == 400 and "Sign-in did not complete" in r.text


def test_the_limit_per_address_is_wider_than_per_user_name_and_the_window_slides():
    from rethink.console.security import SignInLimiter

    now = [0.0]
    limiter = SignInLimiter(2, 60, clock=lambda: now[0])
    limiter.failed("user:a", "ip:1")
    limiter.failed("user:a", "ip:1")
    assert limiter.blocked("user:a", "ip:1") and not limiter.blocked("user:b", "ip:1")
    for n in range(18):
        limiter.failed(f"user:x{n}", "ip:1")
    assert limiter.blocked("user:b", "ip:1") and not limiter.blocked("user:b", "ip:2")
    now[0] = 61
    assert not limiter.blocked("user:a", "ip:1")
