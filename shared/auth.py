"""Who may do what on the NATS server: generated nats-server authorization, enforced by the server.

Roles so far:
- ``services``: the four services and the operator's CLI (everything);
- ``auditor``: reads the event log and nothing else. It may read stream info and single
  messages, and create, read from and delete consumers of its own. It may not publish to any
  other subject (so never to the log), delete or purge anything but its own consumers, and it
  may not touch the services' durable consumers (pulling from one would steal a service's
  events).

Agencies (publish only on their own inbound subjects) come with the agencies work.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

import bcrypt

from .settings import SERVICES, Settings


@dataclass(frozen=True)
class User:
    name: str
    password: str  # plain text: hashed when written into the server's config
    permissions: dict[str, Any] | None  # None = everything


def auditor_permissions(stream: str) -> dict[str, Any]:
    api = "$JS.API"
    durables = [f"{api}.CONSUMER.{verb}.{stream}.{name}" for verb in ("MSG.NEXT", "DELETE", "CREATE")
                for name in SERVICES]
    return {
        "publish": {
            "allow": [
                f"{api}.INFO",
                f"{api}.STREAM.INFO.{stream}",
                f"{api}.STREAM.MSG.GET.{stream}",
                # Consumers of its own (nats-py names even ephemeral ones in the subject); the
                # services' durables are denied below, and deny wins over allow.
                f"{api}.CONSUMER.CREATE.{stream}",
                f"{api}.CONSUMER.CREATE.{stream}.>",
                f"{api}.CONSUMER.INFO.{stream}.*",
                f"{api}.CONSUMER.MSG.NEXT.{stream}.*",
                f"{api}.CONSUMER.DELETE.{stream}.*",
            ],
            "deny": durables + [d + ".>" for d in durables if ".CREATE." in d],
        },
        "subscribe": {"allow": ["_INBOX.>"]},
    }


def default_users(settings: Settings) -> list[User]:
    return [
        User("rethink-services", secrets.token_urlsafe(24), None),
        User("auditor", secrets.token_urlsafe(24), auditor_permissions(settings.stream)),
    ]


def authorization_config(users: list[User]) -> str:
    """The ``authorization`` block of a nats-server config (the format accepts JSON)."""
    entries = []
    for u in users:
        entry: dict[str, Any] = {"user": u.name,
                                 "password": bcrypt.hashpw(u.password.encode(), bcrypt.gensalt(11)).decode()}
        if u.permissions is not None:
            entry["permissions"] = u.permissions
        entries.append(entry)
    return "authorization " + json.dumps({"users": entries}, indent=2) + "\n"


def url_for(user: User, host: str = "127.0.0.1", port: int = 4222) -> str:
    return f"nats://{user.name}:{user.password}@{host}:{port}"
