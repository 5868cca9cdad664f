"""Who may do what on the NATS server: a registry of users, rendered as nats-server authorization.

The server enforces it; Re-think's code does not have to be trusted to. Roles:

- ``services``: the four services and the operator's CLI (everything).
- ``auditor``: reads the event log and nothing else. It may read stream info and single
  messages, and create, read from and delete consumers of its own. It may not publish to any
  other subject (so never to the log), delete or purge anything but its own consumers, and it
  may not touch the services' durable consumers (pulling from one would steal a service's
  events). To read personal fields it may *read* the case data keys (never create, change or
  destroy one), and it appends a record of each read to the access stream, which it can also
  read (see docs/privacy.md).
- ``agency``: publishes only on its own inbound subjects (``<prefix>.intake.<agency>.>``),
  receives replies only on its own inbox prefix (``_INBOX_<agency>.>``) and pulls only from its
  own receipt consumer, so it can neither act as another agency nor read another's receipts,
  and it cannot read or write the log.

The registry keeps bcrypt hashes only; a password is shown once, when it is made.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import bcrypt

from .settings import SERVICES, Settings

AGENCY_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,39}$")
CORE_USERS = {"rethink-services": "services", "auditor": "auditor"}


class AuthError(ValueError):
    pass


@dataclass(frozen=True)
class Entry:
    name: str
    role: str  # services | auditor | agency
    password_hash: str


def inbox_prefix(agency: str) -> str:
    return f"_INBOX_{agency}"


def _own_consumers(api: str, stream: str) -> list[str]:
    # Consumers of its own (nats-py names even ephemeral ones in the subject).
    return [f"{api}.CONSUMER.CREATE.{stream}", f"{api}.CONSUMER.CREATE.{stream}.>",
            f"{api}.CONSUMER.INFO.{stream}.*", f"{api}.CONSUMER.MSG.NEXT.{stream}.*",
            f"{api}.CONSUMER.DELETE.{stream}.*"]


def privacy_permissions(keys_bucket: str, access_stream: str, prefix: str) -> list[str]:
    """What an auditor needs to read personal fields and be accountable for it: *read* the
    data keys (never create or destroy one), and append and read access records."""
    api, kv = "$JS.API", f"KV_{keys_bucket}"
    return [f"{api}.STREAM.INFO.{kv}", f"{api}.DIRECT.GET.{kv}", f"{api}.DIRECT.GET.{kv}.>",
            f"{api}.STREAM.INFO.{access_stream}", f"{prefix}.access.>", *_own_consumers(api, access_stream)]


def auditor_permissions(stream: str, settings: Settings | None = None) -> dict[str, Any]:
    api = "$JS.API"
    durables = [f"{api}.CONSUMER.{verb}.{stream}.{name}" for verb in ("MSG.NEXT", "DELETE", "CREATE")
                for name in SERVICES]
    extra = (privacy_permissions(settings.keys_bucket, settings.access_stream, settings.subject_prefix)
             if settings is not None else [])
    return {
        "publish": {
            "allow": [
                f"{api}.INFO",
                f"{api}.STREAM.INFO.{stream}",
                f"{api}.STREAM.MSG.GET.{stream}",
                # The services' durables are denied below, and deny wins over allow.
                *_own_consumers(api, stream),
                *extra,
            ],
            "deny": durables + [d + ".>" for d in durables if ".CREATE." in d],
        },
        "subscribe": {"allow": ["_INBOX.>"]},
    }


def receipt_consumer_apis(agency: str, receipt_stream: str) -> list[str]:
    """JetStream API subjects an agency needs to collect its receipts, and no others.

    Re-think creates each agency's durable pull consumer (named after the agency, filtered to
    its receipt subjects); the agency may only read its info, pull from it and ack. It may not
    create consumers at all: even with the filter pinned in the create subject (server 2.10+
    refuses a config whose filter differs), a *push* consumer's deliver subject is not checked
    against the creator's permissions, so the server would publish on any subject it was given
    (another agency's intake subject, for one). Checked against a real server in
    tests/integration/test_agency_permissions.py.
    """
    api, s = "$JS.API", receipt_stream
    return [f"{api}.CONSUMER.INFO.{s}.{agency}", f"{api}.CONSUMER.MSG.NEXT.{s}.{agency}", f"$JS.ACK.{s}.{agency}.>"]


def agency_permissions(agency: str, prefix: str, receipt_stream: str) -> dict[str, Any]:
    return {
        "publish": {"allow": [f"{prefix}.intake.{agency}.>", f"{prefix}.inbound.{agency}.>",
                              *receipt_consumer_apis(agency, receipt_stream)]},
        "subscribe": {"allow": [f"{inbox_prefix(agency)}.>"]},
    }


def permissions_for(entry: Entry, settings: Settings) -> dict[str, Any] | None:
    if entry.role == "services":
        return None
    if entry.role == "auditor":
        return auditor_permissions(settings.stream, settings)
    if entry.role == "agency":
        return agency_permissions(entry.name, settings.subject_prefix, settings.receipt_stream)
    raise AuthError(f"unknown role {entry.role!r} for user {entry.name}")


def new_password() -> str:
    return secrets.token_urlsafe(24)


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(11)).decode()


class Registry:
    """The users file (hashes only) and the nats-server config rendered from it."""

    def __init__(self, folder: Path, settings: Settings) -> None:
        self.folder = Path(folder)
        self.settings = settings
        self.users_file = self.folder / "users.json"
        self.config_file = self.folder / "nats-auth.conf"

    def entries(self) -> list[Entry]:
        if not self.users_file.exists():
            return []
        try:
            return [Entry(**e) for e in json.loads(self.users_file.read_text())]
        except (ValueError, TypeError) as exc:
            raise AuthError(f"{self.users_file}: unreadable users file ({exc})") from None

    def _save(self, entries: list[Entry]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.users_file.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(e) for e in entries], indent=2))
        tmp.chmod(0o600)
        tmp.replace(self.users_file)
        self.config_file.write_text(self.render(entries))

    def ensure_core(self) -> dict[str, str]:
        """Create the services and auditor users if missing; returns their new passwords."""
        entries, made = self.entries(), {}
        names = {e.name for e in entries}
        for name, role in CORE_USERS.items():
            if name not in names:
                made[name] = new_password()
                entries.append(Entry(name, role, hash_password(made[name])))
        self._save(entries)
        return made

    def add_agency(self, agency: str) -> str:
        if not AGENCY_NAME.fullmatch(agency):
            raise AuthError(f"agency name {agency[:60]!r}: use 2-40 lower-case letters, digits and '-' "
                            "(it becomes part of NATS subjects)")
        entries = self.entries()
        if any(e.name == agency for e in entries):
            raise AuthError(f"agency {agency} exists; revoke it first to issue new credentials")
        if agency in CORE_USERS:
            raise AuthError(f"{agency} is a reserved name")
        password = new_password()
        self._save([*entries, Entry(agency, "agency", hash_password(password))])
        return password

    def revoke(self, agency: str) -> None:
        entries = self.entries()
        if not any(e.name == agency and e.role == "agency" for e in entries):
            raise AuthError(f"no agency {agency}")
        self._save([e for e in entries if e.name != agency])

    def rotate(self, name: str) -> str:
        """A new password for an existing user (any role); the old one stops working once the
        nats-server reloads the rendered config."""
        entries = self.entries()
        if not any(e.name == name for e in entries):
            known = ", ".join(sorted(e.name for e in entries)) or "none yet: run `rethink auth init`"
            raise AuthError(f"no user {name[:60]!r} (users: {known})")
        password = new_password()
        self._save([Entry(e.name, e.role, hash_password(password)) if e.name == name else e for e in entries])
        return password

    def agencies(self) -> list[str]:
        return sorted(e.name for e in self.entries() if e.role == "agency")

    def render(self, entries: list[Entry] | None = None) -> str:
        """The ``authorization`` block of a nats-server config (the format accepts JSON)."""
        users = []
        for e in entries if entries is not None else self.entries():
            user: dict[str, Any] = {"user": e.name, "password": e.password_hash}
            perms = permissions_for(e, self.settings)
            if perms is not None:
                user["permissions"] = perms
            users.append(user)
        return "authorization " + json.dumps({"users": users}, indent=2) + "\n"


def url_with(name: str, password: str, host: str = "127.0.0.1", port: int = 4222) -> str:
    return f"nats://{name}:{password}@{host}:{port}"
