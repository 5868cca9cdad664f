"""Configuration, read from the environment (prefix ``RETHINK_``) by the composition root only.

Nothing here connects to anything; a Settings object is passed into each service's factory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator, BaseModel, EmailStr, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from .events import NOT_ASCII_LOCAL_PART, deliverable

SERVICES = ("intake", "scheduling", "meeting", "escalation")
WorkingDays = Annotated[int, Field(ge=0, le=60)]  # a reminder's distance from its deadline, in working days


def _sendable(address: str) -> str:
    if not deliverable(address):
        raise ValueError(NOT_ASCII_LOCAL_PART)
    return address


# Mail goes to or from these: one the mail cannot carry (see ``events.deliverable``) stops the
# service at start-up, where it is set, rather than failing each message.
SendableEmail = Annotated[EmailStr, AfterValidator(_sendable)]


class Facilitator(BaseModel):
    id: str = Field(pattern=r"^[a-z0-9-]{1,40}$")
    name: str = Field(min_length=1, max_length=120)
    email: SendableEmail


DEFAULT_FACILITATORS = [
    Facilitator(id="fac-1", name="Facilitator One", email="facilitator.one@example.org"),
    Facilitator(id="fac-2", name="Facilitator Two", email="facilitator.two@example.org"),
]


class Settings(BaseSettings):
    """Every setting has a default that runs the embedded system on this machine."""

    model_config = SettingsConfigDict(env_prefix="RETHINK_", env_nested_delimiter="__", extra="ignore")

    nats_url: str | None = Field(
        default=None,
        description="NATS server URL, or several comma-separated (one per cluster node); unset = start the embedded nats-server.",
    )
    nats_inbox_prefix: str = Field(default="_INBOX", pattern=r"^[A-Za-z0-9_-]+$",
                                   description="Reply inbox prefix; an agency's user must use _INBOX_<agency>.")
    state_dir: Path = Field(default=Path(".rethink"), description="Folder for the embedded server, databases and mail.")
    embedded_nats_port: int = Field(default=14222, description="Port of the embedded nats-server (127.0.0.1).")
    stream: str = Field(default="RETHINK_EVENTS", description="JetStream stream holding case events.")
    dead_letter_stream: str = Field(default="RETHINK_DEADLETTER", description="Where events that always fail are parked.")
    receipt_stream: str = Field(default="RETHINK_RECEIPTS", description="JetStream stream keeping agencies' receipts.")
    receipt_retention_days: int = Field(default=90, ge=1, description="How long receipts are kept for agencies to collect.")
    inbound_stream: str = Field(default="RETHINK_INBOUND",
                                description="JetStream stream where agencies' stored messages wait for intake.")
    keys_nats_url: str | None = Field(
        default=None, description="CLI: NATS server of the key store and access records when it is not the log's "
                                  "(an auditor's copy of the log); unset = the log's server.")
    keys_bucket: str = Field(default="RETHINK_KEYS", pattern=r"^[A-Za-z0-9_-]+$",
                             description="JetStream key-value bucket holding each case's data key.")
    key_cache_seconds: float = Field(default=60.0, ge=0,
                                     description="How long a process may reuse a data key it fetched.")
    access_stream: str = Field(default="RETHINK_ACCESS", pattern=r"^[A-Za-z0-9_-]+$",
                               description="Append-only stream of who read which case, when and why.")
    retention_years: int = Field(default=6, ge=1, le=100,
                                 description="Years after a case closes before `privacy sweep` erases it.")
    user: str | None = Field(default=None, max_length=200,
                             description="Who is using the CLI, for access records; unset = the OS user.")
    max_handler_attempts: int = Field(default=8, ge=1, description="Tries before an event that always fails is parked.")
    subject_prefix: str = Field(default="rethink", pattern=r"^[A-Za-z0-9_-]+$", description="First token of every subject.")
    stream_replicas: int = Field(default=1, ge=1, le=5,
                                 description="Copies of each stream `rethink bootstrap` keeps; 3 on a three-node cluster.")
    duplicate_window_seconds: int = Field(default=24 * 3600, ge=1, description="JetStream Nats-Msg-Id dedup window.")
    database_url: dict[str, str] = Field(
        default_factory=dict,
        description="Per-service SQLAlchemy URL, e.g. RETHINK_DATABASE_URL__MEETING; default SQLite in state_dir.",
    )
    database_schema: dict[str, str] = Field(
        default_factory=dict,
        description="Per-service PostgreSQL schema, e.g. RETHINK_DATABASE_SCHEMA__MEETING; default the service's name.",
    )
    health_port: int = Field(
        default=8080, ge=0, le=65535,
        description="Port of /healthz, /readyz and /metrics served by `rethink service run`; 0 = off.",
    )
    ready_max_pending: int = Field(
        default=0, ge=0,
        description="/readyz fails while the service's consumer has more events pending than this; 0 = no bound.",
    )
    facilitators: list[Facilitator] = Field(
        default_factory=lambda: list(DEFAULT_FACILITATORS),
        description='JSON list of {"id", "name", "email"}; a new case goes to the one with the fewest open cases.',
    )
    partnership_email: SendableEmail = Field(default="rethink@example.org",
                                             description="Sender of every email and ORGANIZER of calendar invitations.")
    partnership_contact: str = Field(
        default="the Re-think coordinator at rethink@example.org", min_length=3, max_length=200,
        description="Whom recipients should contact, as the emails' footer names it.")
    mail_adapter: Literal["eml", "smtp"] = Field(
        default="eml", description="eml = write .eml files to state_dir/mail; smtp = send through smtp_host.")
    smtp_host: str | None = Field(default=None, description="SMTP server (needed when mail_adapter is smtp).")
    smtp_port: int = Field(default=587, ge=1, le=65535, description="SMTP port (587 STARTTLS, 465 TLS, 25 plain).")
    smtp_security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="starttls = upgrade after connecting; tls = implicit TLS; none = plain.")
    smtp_username: str | None = Field(default=None, description="SMTP login; unset = no authentication.")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password (never logged).")
    smtp_ca_file: Path | None = Field(
        default=None, description="CA certificates (PEM) to verify the SMTP server with; unset = the system's.")
    smtp_timeout_seconds: float = Field(default=30.0, gt=0, description="Timeout of each SMTP connection and command.")
    outbox_interval_seconds: float = Field(default=2.0, gt=0, description="How often the outbox is drained.")
    outbox_keep_sent_days: float = Field(
        default=30.0, gt=0, description="Days a sent email's content and recipient are kept before being erased.")
    outbox_max_attempts: int = Field(default=8, ge=1, description="Tries per email before it is marked failed.")
    outbox_backoff_seconds: float = Field(default=30.0, gt=0,
                                          description="Wait after the first failed try; doubles per try.")
    outbox_backoff_max_seconds: float = Field(default=3600.0, gt=0, description="Longest wait between tries.")
    outbox_claim_timeout_seconds: float = Field(
        default=300.0, gt=0, description="A send claimed longer ago than this is taken as interrupted.")
    reminder_interval_seconds: float = Field(default=900.0, gt=0, description="How often due reminders are looked for.")
    reminder_meeting_working_days: list[WorkingDays] = Field(
        default_factory=lambda: [1], description="Invitees are reminded this many working days before the meeting.")
    reminder_action_working_days: list[WorkingDays] = Field(
        default_factory=lambda: [3, 0], description="Action owners are reminded this many working days before "
        "the due date (0 = on the day).")
    reminder_escalation_working_days: list[WorkingDays] = Field(
        default_factory=lambda: [1], description="A stage's holder is reminded this many working days before "
        "its deadline.")
    escalation_policy_file: Path | None = Field(default=None, description="YAML escalation policy; unset = built-in HIPS default.")
    overdue_check_interval_seconds: float = Field(default=3600.0, gt=0, description="How often overdue actions are checked.")
    command_timeout_seconds: float = Field(default=10.0, gt=0, description="How long the CLI waits for a reply.")
    max_message_bytes: int = Field(default=256 * 1024, ge=1024, description="Largest command/request payload accepted.")
    audit_signing_key_file: Path | None = Field(
        default=None, description="Ed25519 private key (PEM) that signs anchors files; `rethink audit keygen` makes one.")
    audit_public_key_file: Path | None = Field(
        default=None, description="Ed25519 public key (PEM) that `audit verify --anchors` checks signatures with.")
    console_port: int = Field(default=8000, ge=0, le=65535,
                              description="Port of the web console on 127.0.0.1; 0 = do not serve it.")
    console_secret: SecretStr | None = Field(
        default=None, min_length=32,
        description="Key that signs console session cookies; unset = a new random key at each start.")
    console_users_file: Path | None = Field(
        default=None, description="Local console accounts (`rethink users add`); unset = state_dir/console-users.json.")
    console_secure_cookies: bool = Field(
        default=False, description="Mark the session cookie Secure: set it when the console is served over HTTPS.")
    console_read_log_at_start: bool = Field(
        default=True, description="Read the log for the reports in the background when the console starts, so the "
                                  "first person to open them does not wait for the whole log.")
    console_sign_in_attempts: int = Field(
        default=5, ge=1, le=1000, description="Failed sign-ins allowed per user name in 15 minutes (ten times as many per address).")
    console_oidc_issuer: str | None = Field(
        default=None, description="OpenID Connect issuer URL of the partnership's identity provider; unset = off.")
    console_oidc_client_id: str | None = Field(default=None, description="The console's client id at the provider.")
    console_oidc_client_secret: SecretStr | None = Field(
        default=None, description="The console's client secret at the provider.")
    console_oidc_role_claim: str = Field(
        default="rethink_role", description="Claim holding the person's console role (practitioner, facilitator, "
                                            "partnership_manager or auditor).")
    console_oidc_agency_claim: str = Field(
        default="rethink_agency", description="Claim holding a practitioner's agency id (its intake subject token).")
    log_level: str = Field(default="INFO", pattern=r"^(?i)(debug|info|warning|error)$", description="Service log level.")
    log_format: str = Field(default="auto", pattern=r"^(auto|json|console)$",
                            description="auto = JSON unless on a terminal.")

    def db_url(self, service: str) -> str:
        if service in self.database_url:
            return self.database_url[service]
        return f"sqlite:///{(self.state_dir / f'{service}.db').resolve()}"

    def db_schema(self, service: str) -> str:
        """The PostgreSQL schema holding one service's projection (SQLite ignores it)."""
        return self.database_schema.get(service, service)

    @property
    def auth_dir(self) -> Path:
        return self.state_dir / "auth"

    @property
    def console_users_path(self) -> Path:
        return self.console_users_file or self.state_dir / "console-users.json"

    @property
    def mail_dir(self) -> Path:
        return self.state_dir / "mail"

    def resolved_nats_url(self) -> str:
        return self.nats_url or f"nats://127.0.0.1:{self.embedded_nats_port}"

    def nats_servers(self) -> list[str]:
        """Every server to try, in order: a client must be able to start while one cluster node is down."""
        return [url.strip() for url in self.resolved_nats_url().split(",") if url.strip()]

    def nats_connect_kwargs(self) -> dict[str, Any]:
        """``servers`` and, when the URLs carry them, ``user`` and ``password`` for nats.connect.

        Credentials must not stay in the URLs: a cluster tells its clients about the other
        nodes, nats-py adds those to its pool without credentials, and a reconnect to one of
        them is refused (FastStream then gives up reconnecting). Given as options, the
        credentials are sent to every server, listed or discovered.
        """
        servers, creds = [], set()
        for url in self.nats_servers():
            parts = urlsplit(url if "://" in url else f"nats://{url}")
            if parts.password is None:
                servers.append(url)  # no credentials, or a token alone: leave it as it is
                continue
            creds.add((parts.username, parts.password))
            servers.append(urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])))
        if len(creds) > 1:
            raise ValueError("RETHINK_NATS_URL: every server must carry the same user and password")
        if not creds:
            return {"servers": servers}
        user, password = creds.pop()
        return {"servers": servers, "user": user, "password": password}

    def printable_nats_url(self) -> str:
        """The URL with any password masked: for logs and messages."""
        return redact_url(self.resolved_nats_url())


def redact_url(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)
