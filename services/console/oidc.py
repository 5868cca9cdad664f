"""Sign-in with OpenID Connect against the partnership's identity provider (authlib).

Configured by RETHINK_CONSOLE_OIDC_*: the provider's issuer (its discovery document is read
from ``<issuer>/.well-known/openid-configuration``), the console's client id and secret, and
the claims that carry a person's role and, for a practitioner, their agency. The authorization
code flow, with state and nonce kept in the signed session; the ID token's signature, issuer,
audience and nonce are checked by authlib.
"""

from __future__ import annotations

from typing import Any

import httpx
from authlib.integrations.starlette_client import OAuth, OAuthError
from starlette.requests import Request
from starlette.responses import Response

from rethink.shared.settings import Settings

from .accounts import AGENCY_ID
from .users import Role, User

__all__ = ["OAuthError", "OidcSignIn", "SignInRefused", "user_from_claims"]


class SignInRefused(Exception):
    """The provider vouched for the person, but the console cannot let them in; the message says why."""


def user_from_claims(claims: dict[str, Any], role_claim: str, agency_claim: str) -> User:
    sub, email = claims.get("sub"), claims.get("email")
    if not sub or not email:
        raise SignInRefused("Your account at the identity provider has no email address.")
    try:
        role = Role(str(claims.get(role_claim, "")))
    except ValueError:
        raise SignInRefused("Your account has no Re-think role. Ask the partnership to give you one.") from None
    agency = claims.get(agency_claim)
    if role is Role.PRACTITIONER:
        if not isinstance(agency, str) or not AGENCY_ID.fullmatch(agency):
            raise SignInRefused("Your account has no agency. Ask the partnership to record your agency.")
    else:
        agency = None
    name = str(claims.get("name") or email)
    return User(id=f"oidc:{sub}", name=name, email=str(email), role=role, job_title=str(claims.get("job_title", "")),
                agency=agency, agency_name=str(claims.get("agency_name") or agency) if agency else None, via="oidc")


class OidcSignIn:
    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        if not (settings.console_oidc_issuer and settings.console_oidc_client_id):
            raise ValueError("OpenID Connect needs RETHINK_CONSOLE_OIDC_ISSUER and RETHINK_CONSOLE_OIDC_CLIENT_ID")
        self.settings = settings
        client_kwargs: dict[str, Any] = {"scope": "openid email profile", "code_challenge_method": "S256"}
        if transport is not None:  # tests talk to a fake provider in-process
            client_kwargs["transport"] = transport
        secret = settings.console_oidc_client_secret
        self.oauth = OAuth()
        self.oauth.register(
            "idp", client_id=settings.console_oidc_client_id,
            client_secret=secret.get_secret_value() if secret else None,
            server_metadata_url=settings.console_oidc_issuer.rstrip("/") + "/.well-known/openid-configuration",
            client_kwargs=client_kwargs)

    async def start(self, request: Request) -> Response:
        return await self.oauth.idp.authorize_redirect(request, str(request.url_for("oidc_callback")))

    async def finish(self, request: Request) -> User:
        token = await self.oauth.idp.authorize_access_token(request)
        claims = token.get("userinfo") or {}
        return user_from_claims(dict(claims), self.settings.console_oidc_role_claim,
                                self.settings.console_oidc_agency_claim)
