"""The CLI's view of a running system: commands and queries over NATS, history from the log."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats
from nats.errors import NoRespondersError, NoServersError
from nats.errors import TimeoutError as NatsTimeout

from rethink.shared import natsheaders, natsparser
from rethink.shared.access import AccessLog, AccessRecord, who_is_reading
from rethink.shared.envelope import Recorded
from rethink.shared.eventlog import EventLog, Subjects
from rethink.shared.keystore import KeyStoreUnavailable
from rethink.shared.privacy import PersonalData, PersonalDataLocked, personal_data
from rethink.shared.settings import Settings, redact_url


class CliError(Exception):
    """One line for the person at the terminal; the CLI exits non-zero."""


class Client:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.subjects = Subjects(settings.subject_prefix)
        self.nc: nats.NATS | None = None
        self._personal: PersonalData | None = None
        self.keys_nc: nats.NATS | None = None  # only when the keys are on another server (RETHINK_KEYS_NATS_URL)

    async def __aenter__(self) -> Client:
        url = self.settings.resolved_nats_url()
        natsheaders.install()
        natsparser.install()
        try:
            self.nc = await nats.connect(**self.settings.nats_connect_kwargs(), connect_timeout=3, max_reconnect_attempts=1, allow_reconnect=False,
                                         error_cb=_quiet, inbox_prefix=self.settings.nats_inbox_prefix)
        except (NoServersError, OSError, TimeoutError) as exc:
            raise CliError(f"cannot reach NATS at {redact_url(url)} ({type(exc).__name__}); "
                           "is `rethink up` running?") from None
        keys_url = self.settings.keys_nats_url
        if keys_url and keys_url != url:
            try:
                self.keys_nc = await nats.connect(keys_url, connect_timeout=3, max_reconnect_attempts=1,
                                                  allow_reconnect=False, error_cb=_quiet,
                                                  inbox_prefix=self.settings.nats_inbox_prefix)
            except (NoServersError, OSError, TimeoutError) as exc:
                await self.nc.close()
                raise CliError(f"cannot reach the key store's NATS at {redact_url(keys_url)} "
                               f"({type(exc).__name__})") from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.keys_nc is not None:
            await self.keys_nc.close()
        if self.nc is not None:
            await self.nc.close()

    @property
    def keys_js(self):
        """JetStream of the key store and the access records: the log's server unless told otherwise."""
        assert self.nc is not None
        return (self.keys_nc or self.nc).jetstream()

    async def request(self, subject: str, payload: dict[str, Any], what: str) -> dict[str, Any]:
        assert self.nc is not None
        body = json.dumps(payload, default=str).encode()
        try:
            for attempt in range(6):
                try:
                    msg = await self.nc.request(subject, body, timeout=self.settings.command_timeout_seconds)
                    break
                except NoRespondersError:
                    # Nothing was processed, so asking again is safe; a service that has just
                    # started may not have its subscriptions registered yet.
                    if attempt == 5:
                        raise
                    await asyncio.sleep(0.05 * 2**attempt)
        except NoRespondersError:
            raise CliError(f"no {what} service is running to answer {subject}; start it with `rethink up`") from None
        except NatsTimeout:
            raise CliError(f"the {what} service did not answer within {self.settings.command_timeout_seconds}s") from None
        return json.loads(msg.data)

    async def command(self, service: str, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        return _or_raise(await self.request(self.subjects.command(service, name), payload, service))

    async def agency_command(self, agency: str, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        return _or_raise(await self.request(self.subjects.intake(agency, name), payload, "intake"))

    async def query(self, service: str, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        return await self.request(self.subjects.query(service, name), payload, service)

    @property
    def personal(self) -> PersonalData:
        assert self.nc is not None
        if self._personal is None:
            self._personal = personal_data(self.keys_js, self.settings)
        return self._personal

    @property
    def log(self) -> EventLog:
        assert self.nc is not None
        return EventLog(self.nc.jetstream(), self.settings.stream, self.subjects, personal=self.personal)

    async def history(self, case_id: str) -> list[Recorded]:
        """The case with personal fields opened; fails (never shows ciphertext) without the key store."""
        try:
            return await self.log.read_case(case_id)
        except (KeyStoreUnavailable, PersonalDataLocked) as exc:
            raise CliError(str(exc)) from None

    async def sealed_history(self, case_id: str) -> list[Recorded]:
        """The case as stored, payloads unread: for checks that need no personal data (the hash chain)."""
        return await self.log.read_sealed(case_id)

    async def stored_history(self, case_id: str) -> list[tuple[bytes, int]]:
        """The case's messages as stored, (bytes, stream sequence), nothing parsed (``verify_stored``)."""
        return await self.log.read_stored(case_id)

    @property
    def access(self) -> AccessLog:
        assert self.nc is not None
        return AccessLog(self.keys_js, self.settings)

    async def record_access(self, case_id: str, what: str, reason: str | None) -> AccessRecord:
        """Written before a person sees the case: no record, no read."""
        try:
            return await self.access.record(case_id, who_is_reading(self.settings), what, reason)
        except ValueError:
            raise
        except Exception as exc:
            raise CliError(f"cannot record this read of {case_id} in {self.settings.access_stream} "
                           f"({type(exc).__name__}: {exc}); nothing is shown without a record") from None


async def _quiet(_: Exception) -> None:
    """nats-py prints every connection error with a traceback; the CLI reports one line instead."""


def _or_raise(reply: dict[str, Any]) -> dict[str, Any]:
    if reply.get("status") == "accepted":
        return reply
    reasons = "; ".join(f"{r['field']}: {r['message']}" if r.get("field") else r["message"]
                        for r in reply.get("reasons", []))
    guidance = f" — {reply['guidance']}" if reply.get("guidance") else ""
    raise CliError(f"{reply.get('status', 'rejected')}: {reasons}{guidance}")
