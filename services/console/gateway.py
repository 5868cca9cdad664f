"""The console's line to the services: the same request/reply subjects the CLI and agencies use.

The console never reads a service's tables; everything it shows comes from a query reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import nats
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import api

from rethink.shared import natsheaders, natsparser
from rethink.shared.access import AccessLog
from rethink.shared.envelope import InvalidEvent, Recorded
from rethink.shared.eventlog import EventLog, Subjects
from rethink.shared.keystore import KeyStoreUnavailable
from rethink.shared.privacy import PersonalData, PersonalDataLocked, personal_data
from rethink.shared.settings import Settings


class Unavailable(Exception):
    """A service did not answer: the page says so instead of guessing."""

    def __init__(self, service: str, why: str) -> None:
        super().__init__(f"{service}: {why}")
        self.service = service


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.subjects = Subjects(settings.subject_prefix)
        self.nc: nats.NATS | None = None
        self._log: list[Recorded] = []  # every event read so far, for the reports (see read_log)
        self._log_lock = asyncio.Lock()
        self._personal: PersonalData | None = None

    async def connect(self) -> None:
        # A web server outlives blips in NATS, so unlike the CLI it keeps reconnecting.
        natsheaders.install()
        natsparser.install()
        self.nc = await nats.connect(**self.settings.nats_connect_kwargs(), connect_timeout=3,
                                     max_reconnect_attempts=-1, inbox_prefix=self.settings.nats_inbox_prefix)

    async def close(self) -> None:
        if self.nc is not None:
            nc, self.nc = self.nc, None
            with contextlib.suppress(Exception):  # already closed: there is nothing left to drain
                await nc.drain()

    async def _request(self, subject: str, payload: dict[str, Any], service: str) -> dict[str, Any]:
        if self.nc is None:
            raise Unavailable(service, "not connected to NATS")
        body = json.dumps(payload, default=str).encode()
        for attempt in range(4):
            try:
                msg = await self.nc.request(subject, body, timeout=self.settings.command_timeout_seconds)
                return json.loads(msg.data)
            except NoRespondersError:
                # Nothing was processed, so asking again is safe (a service may be restarting).
                if attempt == 3:
                    raise Unavailable(service, "no instance is running") from None
                await asyncio.sleep(0.05 * 2**attempt)
            except NatsTimeout:
                raise Unavailable(service, f"no answer within {self.settings.command_timeout_seconds}s") from None
        raise AssertionError("unreachable")

    async def command(self, service: str, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        return await self._request(self.subjects.command(service, name), payload, service)

    async def agency_command(self, agency: str, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        return await self._request(self.subjects.intake(agency, name), payload, "intake")

    async def query(self, service: str, name: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self._request(self.subjects.query(service, name), payload or {}, service)

    async def result(self, service: str, name: str, payload: dict[str, Any] | None = None) -> Any:
        """A query's ``result``; None when the service does not know the case."""
        reply = await self.query(service, name, payload)
        if reply.get("status") == "ok":
            return reply.get("result")
        if reply.get("status") == "not_found":
            return None
        raise Unavailable(service, f"refused the query {name}: {reply.get('reasons')}")

    def _event_log(self) -> EventLog:
        """The log with its key store: personal fields opened, erased ones read as erased."""
        assert self.nc is not None
        if self._personal is None:
            self._personal = personal_data(self.nc.jetstream(), self.settings)
        return EventLog(self.nc.jetstream(), self.settings.stream, self.subjects, personal=self._personal)

    async def history(self, case_id: str) -> list[Recorded]:
        """A case's events from the log (the audit trail), oldest first; ``case_id`` must be checked already."""
        if self.nc is None:
            raise Unavailable("event log", "not connected to NATS")
        try:
            return await self._event_log().read_case(case_id)
        except (KeyStoreUnavailable, PersonalDataLocked) as exc:
            raise Unavailable("key store", str(exc)) from None

    async def read_log(self) -> list[Recorded]:
        """Every event in the log, in stream order, for the partnership's reports.

        Kept in memory and topped up from where the last read stopped, so a report reads only
        what was appended since. A replay, like ``rethink projections rebuild``: an ephemeral,
        unacknowledged consumer; nothing of another service is read.
        """
        if self.nc is None:
            raise Unavailable("event log", "not connected to NATS")
        async with self._log_lock:
            js = self.nc.jetstream()
            try:
                last = (await js.stream_info(self.settings.stream)).state.last_seq
            except Exception as exc:  # noqa: BLE001 - whatever NATS says, the page says it is unavailable
                raise Unavailable("event log", str(exc) or type(exc).__name__) from None
            start = self._log[-1].seq + 1 if self._log else 1
            if last < start:
                return self._log
            sub = await js.pull_subscribe(self.subjects.all_events, stream=self.settings.stream,
                                          config=api.ConsumerConfig(
                                              ack_policy=api.AckPolicy.NONE, mem_storage=True, inactive_threshold=30.0,
                                              deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start))
            try:
                seq = start - 1
                while seq < last:
                    msgs = await sub.fetch(500, timeout=5)
                    for m in msgs:
                        seq = m.metadata.sequence.stream
                        if seq > last:
                            break
                        try:
                            self._log.extend(await self._event_log().decode([(m.data, seq)]))
                        except InvalidEvent:
                            continue  # the services skip (and log) these too
                        except (KeyStoreUnavailable, PersonalDataLocked) as exc:
                            raise Unavailable("key store", str(exc)) from None
                    if msgs and msgs[-1].metadata.num_pending == 0:
                        break
            except NatsTimeout:
                raise Unavailable("event log", "the replay did not finish") from None
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            erased = {r.envelope.case_id for r in self._log if r.seq >= start and r.type == "PersonalDataErased"}
            if erased:
                await self._forget_personal(erased)
            return self._log

    async def _forget_personal(self, case_ids: set[str]) -> None:
        """Replace the cached events of erased cases by what the log now gives: fields erased.

        The events were opened while the case's key existed; an erasure must reach this copy
        too, not only the next console that starts."""
        for case_id in case_ids:
            try:
                fresh = {r.seq: r for r in await self._event_log().read_case(case_id)}
            except (KeyStoreUnavailable, PersonalDataLocked) as exc:
                self._log = [r for r in self._log if r.envelope.case_id != case_id]  # never keep it opened
                raise Unavailable("key store", str(exc)) from None
            self._log = [fresh.get(r.seq, r) if r.envelope.case_id == case_id else r for r in self._log]

    async def record_access(self, case_id: str, who: str, what: str) -> None:
        """A person is about to see a case: record it first (docs/privacy.md); no record, no page."""
        if self.nc is None:
            raise Unavailable("access records", "not connected to NATS")
        try:
            await AccessLog(self.nc.jetstream(), self.settings).record(case_id, who, what, None)
        except Exception as exc:
            raise Unavailable("access records", f"cannot record this read ({type(exc).__name__})") from None
