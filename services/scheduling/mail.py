"""Where the outbox hands each message: an .eml folder (the embedded default) or an SMTP server.

A transport either returns (the message was handed over), raises ``PermanentFailure`` (the
server refused it for good: retrying cannot help), or raises anything else (try again later).
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

import aiosmtplib

from rethink.shared.settings import Settings


class PermanentFailure(Exception):
    """The server answered 5xx: the message is marked failed at once, for a person to look at."""


class Transport(Protocol):
    async def deliver(self, key: str, sender: str, recipient: str, data: bytes) -> None: ...


class EmlFolderTransport:
    """Writes each message as an RFC 5322 file, for a mail relay or a person to pick up.

    The same message always lands in the same file, written whole (temp file, then rename),
    so a second delivery rewrites rather than duplicates, and no reader sees half a file.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path_for(self, key: str) -> Path:
        return self.folder / (re.sub(r"[^A-Za-z0-9._-]", "_", key) + ".eml")

    async def deliver(self, key: str, sender: str, recipient: str, data: bytes) -> None:
        # Creating a file costs this VM ~0.4-1 ms in the kernel: in a worker thread, so a drain of
        # a meeting's worth of invitations does not stall the service's events for tens of ms.
        await asyncio.to_thread(self._write, key, data)

    def _write(self, key: str, data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.path_for(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class SmtpTransport:
    """One SMTP session per message: simple, and a broken connection never strands a batch."""

    def __init__(self, host: str, port: int, security: str, username: str | None, password: str | None,
                 timeout: float, ca_file: str | None = None) -> None:
        self.host, self.port, self.security = host, port, security
        self.username, self.password, self.timeout = username, password, timeout
        self.ca_file = ca_file  # a partnership's own mail relay often has a certificate from a private CA

    async def deliver(self, key: str, sender: str, recipient: str, data: bytes) -> None:
        try:
            await aiosmtplib.send(
                data, sender=sender, recipients=[recipient], hostname=self.host, port=self.port,
                username=self.username, password=self.password, timeout=self.timeout,
                use_tls=self.security == "tls",
                # STARTTLS is required when chosen (never silently plain); "none" never upgrades.
                start_tls=True if self.security == "starttls" else False,
                # The server's certificate is always verified: against this file, or the system's CAs.
                validate_certs=True, cert_bundle=self.ca_file,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            if all(r.code >= 500 for r in exc.recipients):
                raise PermanentFailure("; ".join(f"{r.code} {r.message}" for r in exc.recipients)) from None
            raise
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code >= 500:
                raise PermanentFailure(f"{exc.code} {exc.message}") from None
            raise


def make_transport(settings: Settings) -> Transport:
    if settings.mail_adapter == "eml":
        return EmlFolderTransport(settings.mail_dir)
    if not settings.smtp_host:
        raise ValueError("RETHINK_MAIL_ADAPTER=smtp needs RETHINK_SMTP_HOST")
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    return SmtpTransport(settings.smtp_host, settings.smtp_port, settings.smtp_security, settings.smtp_username,
                         password, settings.smtp_timeout_seconds,
                         str(settings.smtp_ca_file) if settings.smtp_ca_file else None)
