"""Who can sign in, and what each role may do.

DEVELOPMENT ONLY: a fixed list of demo people, chosen on the sign-in page without a password.
Production sign-in is OpenID Connect against the partnership's identity provider (see
docs/console.md); the rest of the console only ever asks ``current_user(request)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

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
BY_ID = {u.id: u for u in DEMO_USERS}

# The partnership's agencies, offered on the "agencies involved" page.
PARTNERSHIP_AGENCIES = (
    "Children's Social Care", "Police", "Community Health", "Northside School Trust",
    "Probation Service", "Adult Mental Health",
)


def current_user(request: Request) -> User | None:
    return BY_ID.get(request.session.get("user_id", ""))


def require(request: Request, *roles: Role) -> User:
    """The signed-in user, if they hold one of ``roles``; otherwise sign-in (401 page) or 403."""
    user = current_user(request)
    if user is None:
        raise HTTPException(401)
    if roles and user.role not in roles:
        raise HTTPException(403)
    return user
