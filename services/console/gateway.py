"""The console's line to the services: the same request/reply subjects the CLI and agencies use.

The console never reads a service's tables; everything it shows comes from a query reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any

import nats
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

from rethink.shared import natsheaders, natsparser
from rethink.shared.access import AccessLog
from rethink.shared.envelope import InvalidEvent, Recorded
from rethink.shared.eventlog import EventLog, Subjects
from rethink.shared.keystore import KeyStoreUnavailable
from rethink.shared.privacy import ERASURE, PersonalData, PersonalDataLocked, personal_data
from rethink.shared.rebuild import BATCH, Interrupted, scan_log
from rethink.shared.settings import Settings

from . import reports


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
        # What the reports read of each case, folded from the log up to ``_read_to`` (see report_facts).
        self._facts: dict[str, reports.CaseFacts] = {}
        self._read_to = 0
        self._to_refold: set[str] = set()  # erased cases whose facts still hold what was opened before
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
            self._personal = personal_data(self.nc.jetstream(), self.settings, BATCH)  # a batch's keys at once
        return EventLog(self.nc.jetstream(), self.settings.stream, self.subjects, personal=self._personal)

    async def history(self, case_id: str) -> list[Recorded]:
        """A case's events from the log (the audit trail), oldest first; ``case_id`` must be checked already."""
        if self.nc is None:
            raise Unavailable("event log", "not connected to NATS")
        try:
            return await self._event_log().read_case(case_id)
        except (KeyStoreUnavailable, PersonalDataLocked) as exc:
            raise Unavailable("key store", str(exc)) from None

    @property
    def reports_read_to(self) -> int:
        """The last event of the log folded into the reports' facts (0: none yet)."""
        return self._read_to

    async def report_facts(self) -> Mapping[str, reports.CaseFacts]:
        """What the partnership's reports read of every case, folded from the whole log.

        Topped up from where the last read stopped, so a report reads only what was appended
        since; each event is folded into its case's facts and let go, so what is kept grows with
        the cases, not with the log. A replay, like ``rethink projections rebuild``: an ephemeral,
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
            if last > self._read_to:
                await self._top_up(js, last)
            await self._refold_erased()
            return self._facts

    async def _top_up(self, js: Any, last: int) -> None:
        """Fold the events after ``_read_to`` up to ``last``, read as a rebuild reads them (``scan_log``:
        a raw pull consumer, each message's bytes only): nats-py's ``fetch`` spent more on each
        message than folding it costs."""
        log = self._event_log()
        # One the consumer sent that never came: nothing of its batch is folded, the page says the read
        # was cut short, and the next request reads on from the last event folded.
        scan = scan_log(js, self.settings.stream, self.subjects, last, after=self._read_to, batch=BATCH, resume=False)
        try:
            async with contextlib.aclosing(scan):
                async for events in scan:
                    if log.personal is not None:  # the keys of the cases whose events are opened: one request
                        await log.personal.prefetch([e.case_id for e in events if e.kind in reports.OPENS])
                    for seq, case_id, kind, data in events:
                        try:
                            read = await self._for_reports(log, data, seq, kind)
                        except InvalidEvent:
                            read = []  # the services skip (and park) these too
                        except (KeyStoreUnavailable, PersonalDataLocked) as exc:
                            raise Unavailable("key store", str(exc)) from None
                        reports.fold(self._facts, read)
                        if kind == ERASURE:
                            self._to_refold.add(case_id)
                        self._read_to = seq
        except (Interrupted, NatsTimeout, ServiceUnavailableError, NoStreamResponseError) as exc:
            raise Unavailable("event log", f"the read of the log was cut short ({str(exc) or type(exc).__name__}); "
                                           "the next request reads on from where it stopped") from None

    @staticmethod
    async def _for_reports(log: EventLog, data: bytes, seq: int, kind: str) -> list[Recorded]:
        """The event as the reports' facts read it (``kind``: the type its subject names)."""
        if kind == ERASURE:  # always read whole: reading one makes the key cache forget its case
            return await log.decode([(data, seq)])
        if kind in reports.OPENS:
            return [await log.decode_for_projection(data, seq, kind)]
        if kind in reports.READS:
            return [EventLog.decode_unopened(data, seq, kind)]
        return []  # no fact comes from it

    async def _refold_erased(self) -> None:
        """Fold erased cases again from what the log now gives: fields erased.

        Their events were opened while the case's key existed (an action's description, the
        learning's words); an erasure must reach these facts too, not only the next console that
        starts. Until it has, the case is left out of the reports, never kept as it was opened."""
        for case_id in sorted(self._to_refold):
            self._facts.pop(case_id, None)
            try:
                history = await self._event_log().read_case(case_id)
            except (KeyStoreUnavailable, PersonalDataLocked) as exc:
                raise Unavailable("key store", str(exc)) from None
            # Only what was folded already: later events come with the next top-up, as any do.
            reports.fold(self._facts, [r for r in history if r.seq <= self._read_to])
            self._to_refold.discard(case_id)

    async def record_access(self, case_id: str, who: str, what: str) -> None:
        """A person is about to see a case: record it first (docs/privacy.md); no record, no page."""
        if self.nc is None:
            raise Unavailable("access records", "not connected to NATS")
        try:
            await AccessLog(self.nc.jetstream(), self.settings).record(case_id, who, what, None)
        except Exception as exc:
            raise Unavailable("access records", f"cannot record this read ({type(exc).__name__})") from None
