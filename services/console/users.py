"""Who is signed in, and what each role may do.

Sign-in (local accounts or OpenID Connect) puts the person into the signed session cookie;
every route asks ``current_user(request)`` and checks the role with ``require``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request


class Role(StrEnum):
    PRACTITIONER = "practitioner"
    FACILITATOR = "facilitator"
    MANAGER = "partnership_manager"
    AUDITOR = "auditor"


ROLE_NAMES = {
    Role.PRACTITIONER: "Practitioner",
    Role.FACILITATOR: "Facilitator",
    Role.MANAGER: "Partnership manager",
    Role.AUDITOR: "Auditor",
}


@dataclass(frozen=True)
class User:
    id: str
    name: str
    email: str
    role: Role
    job_title: str
    agency: str | None = None  # the agency's id: the token of its intake subject
    agency_name: str | None = None
    via: str = "local"  # local | oidc: how they signed in

    def as_session(self) -> dict[str, Any]:
        return {**asdict(self), "role": self.role.value}

    @classmethod
    def from_session(cls, data: Any) -> User | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(**{**data, "role": Role(data["role"])})
        except (KeyError, TypeError, ValueError):
            return None


# The demo people: `rethink demo` creates them as local accounts and prints their passwords.
DEMO_USERS: tuple[User, ...] = (
    User("priya", "Priya Example", "dsl@northside-school.example.org", Role.PRACTITIONER,
         "Designated safeguarding lead", "northside-school", "Northside School Trust"),
    User("jo", "Jo Example", "health.visitor@nhs-trust.example.org", Role.PRACTITIONER,
         "Health visitor", "community-health", "Community Health"),
    User("lee", "DC Lee Example", "safeguarding.unit@police.example.org", Role.PRACTITIONER,
         "Detective constable", "police", "Police"),
    User("fac-1", "Facilitator One", "facilitator.one@example.org", Role.FACILITATOR, "Re-think facilitator"),
    User("morgan", "Morgan Example", "partnership.manager@example.org", Role.MANAGER, "Partnership manager"),
    User("ash", "Ash Example", "auditor@example.org", Role.AUDITOR, "Auditor"),
)

# The partnership's agencies, offered on the "agencies involved" page.
PARTNERSHIP_AGENCIES = (
    "Children's Social Care", "Police", "Community Health", "Northside School Trust",
    "Probation Service", "Adult Mental Health",
)


def current_user(request: Request) -> User | None:
    user = User.from_session(request.session.get("user"))
    if user is None:
        return None
    accounts = getattr(request.app.state, "accounts", None)
    if user.via == "local" and accounts is not None:
        # A local account removed (or given another role) since sign-in signs its sessions out.
        on_file = accounts.get(user.id)
        if on_file is None or on_file.role is not user.role or on_file.agency != user.agency:
            return None
    return user


def require(request: Request, *roles: Role) -> User:
    """The signed-in user, if they hold one of ``roles``; otherwise sign-in (401 page) or 403."""
    user = current_user(request)
    if user is None:
        raise HTTPException(401)
    if roles and user.role not in roles:
        raise HTTPException(403)
    return user
