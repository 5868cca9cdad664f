"""Local console accounts for the embedded default: a JSON file of people and argon2 password hashes.

``rethink users add`` writes it; the console reads it (again whenever it changes on disk). In
production, sign-in is OpenID Connect against the partnership's identity provider instead
(``oidc.py``), and this file can stay empty.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .users import Role, User

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,39}$")
AGENCY_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")  # the token of the agency's intake subject
MIN_PASSWORD = 12
HASHER = PasswordHasher()  # argon2id, the library's current recommended parameters


class AccountError(ValueError):
    """A clear reason the account cannot be added or changed."""


class Accounts:
    def __init__(self, path: Path, hasher: PasswordHasher = HASHER) -> None:
        self.path = path
        self.hasher = hasher
        self._dummy: str | None = None
        self._seen: tuple[float, int] | None = None
        self._data: dict[str, dict[str, Any]] = {}

    # --- reading -------------------------------------------------------------------------------

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._seen, self._data = None, {}
            return self._data
        if self._seen != (stat.st_mtime, stat.st_size):
            self._data = json.loads(self.path.read_text(encoding="utf-8")).get("users", {})
            self._seen = (stat.st_mtime, stat.st_size)
        return self._data

    def get(self, username: str) -> User | None:
        record = self._load().get(username)
        return _user(username, record) if record else None

    def all(self) -> list[User]:
        return [_user(name, record) for name, record in sorted(self._load().items())]

    def verify(self, username: str, password: str) -> User | None:
        record = self._load().get(username.strip().lower())
        if record is None and self._dummy is None:
            # Verifying against this when the name is unknown makes a wrong name cost as long as a
            # wrong password, so timing does not tell which names exist.
            self._dummy = self.hasher.hash("not a password of anyone's")
        try:
            self.hasher.verify(record["password_hash"] if record else self._dummy, password)
        except (VerificationError, InvalidHashError):
            return None
        return _user(username.strip().lower(), record) if record else None

    # --- writing (the CLI) ------------------------------------------------------------------------

    def add(self, user: User, password: str, replace: bool = False) -> None:
        if not USERNAME.fullmatch(user.id):
            raise AccountError(f"{user.id!r} is not a user name: 2 to 40 of a-z, 0-9, '.', '_' or '-', "
                               "starting with a letter or digit")
        if user.role is Role.PRACTITIONER and not (user.agency and AGENCY_ID.fullmatch(user.agency)):
            raise AccountError("a practitioner needs --agency: their agency's id, as in its intake subject "
                               "(for example northside-school)")
        if user.role is not Role.PRACTITIONER and user.agency:
            raise AccountError(f"only practitioners belong to an agency; leave out --agency for a {user.role.value}")
        if len(password) < MIN_PASSWORD:
            raise AccountError(f"the password must be at least {MIN_PASSWORD} characters")
        data = dict(self._load())
        if user.id in data and not replace:
            raise AccountError(f"there is already a user {user.id!r}")
        record = {k: v for k, v in asdict(user).items() if k != "id"}
        record["role"] = user.role.value
        data[user.id] = {**record, "password_hash": self.hasher.hash(password)}
        self._write(data)

    def remove(self, username: str) -> None:
        data = dict(self._load())
        if data.pop(username, None) is None:
            raise AccountError(f"there is no user {username!r}")
        self._write(data)

    def _write(self, data: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".users-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp makes it readable by its owner only
                json.dump({"users": data}, f, indent=2, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self._seen = None


def _user(username: str, record: dict[str, Any]) -> User:
    return User(id=username, name=record["name"], email=record["email"], role=Role(record["role"]),
                job_title=record.get("job_title") or "", agency=record.get("agency"),
                agency_name=record.get("agency_name"))
