"""The event log: one JetStream stream, one subject per case and event type.

Appends check the *whole case* has not moved since it was read
(``Nats-Expected-Last-Subject-Sequence-Subject`` with a case wildcard), so two writers can
never interleave decisions on one case; the loser re-reads and decides again.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError

from . import onepass
from .envelope import CASE_ID_PATTERN, Envelope, InvalidEvent, Recorded, digest
from .fieldcrypt import UnreadableCiphertext, erase_sealed
from .privacy import ERASURE, PersonalData, erased_kids, open_without_keys

WRONG_LAST_SEQUENCE = 10071
_CASE_ID = re.compile(CASE_ID_PATTERN.strip('^$'))
_TRANSIENT = ("temporarily unavailable", "in process")


class ConcurrencyConflict(RuntimeError):
    """The case moved on between reading it and appending to it."""


class DuplicateEvent(RuntimeError):
    """JetStream already holds an event with this id (it acked the original, storing nothing)."""


@dataclass(frozen=True)
class Subjects:
    prefix: str = "rethink"

    def event(self, case_id: str, event_type: str) -> str:
        return f"{self.prefix}.events.{case_id}.{event_type}"

    def case(self, case_id: str) -> str:
        return f"{self.prefix}.events.{case_id}.>"

    @property
    def all_events(self) -> str:
        return f"{self.prefix}.events.>"

    def command(self, service: str, name: str) -> str:
        return f"{self.prefix}.cmd.{service}.{name}"

    def query(self, service: str, name: str) -> str:
        return f"{self.prefix}.query.{service}.{name}"

    def intake(self, agency: str, name: str) -> str:
        return f"{self.prefix}.intake.{agency}.{name}"


@dataclass(frozen=True)
class _Link:
    event_id: uuid.UUID
    digest: str

    @classmethod
    def of(cls, r: Recorded) -> _Link:
        return cls(r.envelope.event_id, r.digest)


class CaseCache:
    """Recent cases' histories, kept by a service from the events its own consumer delivers.

    A reaction would otherwise read its case back from JetStream (three round trips and a decode
    of every event) for every event it reacts to. Every entry is a *complete prefix* of its case:
    - it starts from a full read (``store``) or from the case's first event (no ``prev_event_id``);
    - an event extends it only if it names the entry's last event as its predecessor (the hash
      chain), so an event this process never saw (another replica took it from the shared
      durable; an event that could not be decoded) drops the entry instead of leaving a hole.
    A prefix may be stale (the case moved on since); that is what the append's case-wide
    optimistic concurrency catches: the loser re-reads from the log and decides again.
    """

    # Reactions follow their causes closely, and commands the events a person just saw: a few
    # hundred cases cover the work in flight. Every cached event is ~10 Python objects that each
    # full garbage collection walks: 1,024 cases made that a ~80 ms pause (the p99's tail).
    def __init__(self, max_cases: int = 256) -> None:
        self.max_cases = max_cases
        self._cases: OrderedDict[str, list[Recorded]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, case_id: str, at_least_seq: int) -> list[Recorded] | None:
        history = self._cases.get(case_id)
        if history is None or history[-1].seq < at_least_seq:
            self.misses += 1
            return None
        self.hits += 1
        self._cases.move_to_end(case_id)
        return list(history)

    def last_seq(self, case_id: str) -> int | None:
        """Where the held copy of the case ends (None: not held)."""
        history = self._cases.get(case_id)
        return history[-1].seq if history else None

    def store(self, case_id: str, history: list[Recorded]) -> None:
        """A full read of the case from the log."""
        have = self._cases.get(case_id)
        if history and (have is None or have[-1].seq < history[-1].seq):
            self._put(case_id, list(history))

    def observe(self, r: Recorded) -> None:
        """An event, in log order (the service's consumer, or our own append just acknowledged)."""
        case_id, env = r.envelope.case_id, r.envelope
        if r.type == ERASURE:
            # Earlier events of the case read differently now (their key is destroyed): drop the
            # copies opened before, and let the next reaction read the case afresh.
            self._cases.pop(case_id, None)
            return
        history = self._cases.get(case_id)
        if history is None:
            if env.prev_event_id is None:
                self._put(case_id, [r])  # the case's first event: the whole case so far
            return
        last = history[-1]
        if r.seq <= last.seq:
            return  # already held (a read or our own append got there first)
        if env.prev_event_id == last.envelope.event_id:
            history.append(r)
            self._cases.move_to_end(case_id)
        else:
            del self._cases[case_id]  # an event in between was not seen here: no longer complete

    def forget(self, case_id: str) -> None:
        self._cases.pop(case_id, None)

    def _put(self, case_id: str, history: list[Recorded]) -> None:
        self._cases[case_id] = history
        self._cases.move_to_end(case_id)
        while len(self._cases) > self.max_cases:
            self._cases.popitem(last=False)

    def __len__(self) -> int:
        return len(self._cases)


class EventLog:
    """``personal``: seals personal fields on append and opens them on read. None only for a
    reader without keys (it refuses sealed fields) or tests of the log's mechanics."""

    def __init__(self, js: JetStreamContext, stream: str, subjects: Subjects, *,
                 personal: PersonalData | None, cache: CaseCache | None = None) -> None:
        self._js = js
        self.stream = stream
        self.subjects = subjects
        self.personal = personal
        self.cache = cache

    @property
    def js(self) -> JetStreamContext:
        return self._js

    async def read_case(self, case_id: str) -> list[Recorded]:
        """Every event of one case, in order, personal fields opened. Cost follows the case, not the log."""
        events = await self.decode(await self._read_raw(case_id))
        if self.cache is not None:
            self.cache.store(case_id, events)
        return events

    async def history_for(self, case_id: str, seq: int) -> list[Recorded]:
        """The case's history up to at least ``seq``: from the cache when it holds that much, else read.

        Only a complete prefix of the case is ever cached (see ``CaseCache``), so deciding on it is
        deciding on a read made a moment earlier; an append checks the case has not moved since.
        """
        cached = self.cache.get(case_id, seq) if self.cache is not None else None
        return cached if cached is not None else await self.read_case(case_id)

    def held(self, case_id: str) -> list[Recorded] | None:
        """The copy of the case this process holds, as it is, unconfirmed: [] when it holds none
        (most often a new case); None without a cache. See ``decide_and_append`` for its use."""
        self._one_case(case_id)  # a hostile id is refused here as a read would refuse it
        if self.cache is None:
            return None
        last = self.cache.last_seq(case_id)
        return (self.cache.get(case_id, last) or []) if last is not None else []

    async def ends_at(self, case_id: str, seq: int) -> bool:
        """Is ``seq`` the case's last event in the log (0: has it none)? One small request."""
        try:
            return (await self._js.get_msg(self.stream, subject=self._one_case(case_id))).seq == seq
        except NotFoundError:
            return seq == 0

    async def current_history(self, case_id: str) -> list[Recorded]:
        """The case's whole history as of now: the cached copy when the log confirms the case ends
        where that copy ends, else a full read.

        Confirming is one small request (the case's last message) instead of a consumer made,
        read and deleted, and every event decoded again: a command's usual case, since this
        service's consumer has normally delivered the case already. The same request says when
        there is no case yet (a submission), so nothing is read then either."""
        if self.cache is None:
            return await self.read_case(case_id)
        try:
            last = (await self._js.get_msg(self.stream, subject=self._one_case(case_id))).seq
        except NotFoundError:
            return []  # no event at all: a new case (an agency's submission), nothing to read
        held = self.cache.last_seq(case_id)
        if last == held and (cached := self.cache.get(case_id, held)) is not None:
            return cached
        return await self.read_case(case_id)

    async def read_sealed(self, case_id: str) -> list[Recorded]:
        """Every event of one case as stored, payloads left unread (``payload`` is None): no key needed.

        Enough to verify the hash chain, and to find events by type or envelope."""
        return [Recorded.sealed(data, seq) for data, seq in await self._read_raw(case_id)]

    async def read_stored(self, case_id: str) -> list[tuple[bytes, int]]:
        """Every message of one case as stored, (bytes, stream sequence), nothing parsed: for a
        reader that reports what cannot be read rather than stopping at it (``audit verify``)."""
        return await self._read_raw(case_id)

    async def decode(self, raw: Sequence[tuple[bytes, int]], envelopes: Sequence[Envelope] | None = None
                     ) -> list[Recorded]:
        """Stored messages (bytes, stream sequence) of one case, in order, as events with personal fields opened.

        ``envelopes``: the messages already parsed (a consumer parses each first, to log and park)."""
        if envelopes is None:
            envelopes = [Envelope.from_bytes(data) for data, _ in raw]
        destroyed = erased_kids(envelopes)
        out = []
        for env, (data, seq) in zip(envelopes, raw, strict=True):
            try:
                opened = (await self.personal.open(env, destroyed) if self.personal is not None
                          else open_without_keys(env))
            except UnreadableCiphertext as exc:
                raise InvalidEvent(str(exc)) from exc
            out.append(Recorded(env, seq, env.payload(opened.data), digest(data), opened=opened))
        return out

    async def decode_for_projection(self, data: bytes, seq: int, kind: str) -> Recorded:
        """A stored message (its subject naming ``kind``) as ``decode`` reads it, for a reader that
        reads its payload only (a rebuild's projection): decoded in one pass when its case's key is
        in hand (``onepass.decode_opened``), with no digest, no envelope to show a person and the
        envelope's ``data`` left empty; otherwise by ``decode``."""
        if self.personal is not None:
            fast = onepass.decode_opened(data, seq, kind, self.personal.key_in_hand)
            if fast is not None:
                return fast
        return (await self.decode([(data, seq)]))[0]

    @staticmethod
    def decode_unopened(data: bytes, seq: int, kind: str | None = None) -> Recorded:
        """A stored message as an event with none of its personal fields opened: each reads as an
        erased case's does (``erase_sealed``), so a reader that reads none of them gets what it
        would have got from ``decode``, with no key fetched and nothing decrypted (a rebuild's
        projection, for the types it declares). Only for such readers: ``digest`` is left empty and
        ``opened`` None (nothing to show a person). An erasure is never read this way: reading one
        makes the key cache forget its case (``PersonalData.open``). An upcaster sees the data
        erased too, so one that derived a field from a personal value would differ here.

        ``kind``: the type its subject names. Given, the event is decoded in one pass where that
        gives the same (``onepass.decode_unopened``), and its envelope's ``data`` is left empty."""
        if kind is not None:
            fast = onepass.decode_unopened(data, seq, kind)
            if fast is not None:
                return fast
        env = Envelope.from_bytes(data)
        if env.type == ERASURE:
            # Its subject named another type (the caller chose by it): the log contradicts itself.
            raise InvalidEvent(f"{ERASURE} of {env.case_id} at {seq} read as a type whose personal data is not opened")
        return Recorded(env, seq, env.payload(erase_sealed(env.data)))

    def _one_case(self, case_id: str) -> str:
        """The subjects of one case's events, for a read's filter. Checked here, where every read
        builds it: a case id holding "*" or ">" would read every case."""
        if not _CASE_ID.fullmatch(case_id):
            raise ValueError(f"not a case id: {case_id[:40]!r} (expected RT- and ten letters or digits 2-7)")
        return self.subjects.case(case_id)

    async def _read_raw(self, case_id: str) -> list[tuple[bytes, int]]:
        filter_subject = self._one_case(case_id)
        name = self._js._nc._nuid.next().decode()
        info = await self._js.add_consumer(self.stream, config=api.ConsumerConfig(
            name=name,
            filter_subject=filter_subject,
            ack_policy=api.AckPolicy.NONE,
            deliver_policy=api.DeliverPolicy.ALL,
            mem_storage=True,
            inactive_threshold=30.0,
        ))
        sub = None
        try:
            pending = info.num_pending or 0
            raw: list[tuple[bytes, int]] = []
            if pending:
                sub = await self._js.pull_subscribe_bind(consumer=name, stream=self.stream)
            while len(raw) < pending:
                assert sub is not None
                msgs = await sub.fetch(min(pending - len(raw), 256), timeout=5)
                raw.extend((m.data, m.metadata.sequence.stream) for m in msgs)
            return raw
        finally:
            await self._delete_quietly(name, sub)

    async def case_ids(self) -> list[str]:
        """Every case with events in the log, from the stream's per-subject counts (no message reads).

        The server lists at most 100,000 subjects per stream-info reply (in subject order) and
        says how many there are (``total``), so this pages with ``offset`` until it has them
        all. nats-py's ``stream_info`` cannot send an offset, hence the plain API request.
        """
        depth = len(self.subjects.all_events.split(".")) - 1  # the case id's token
        found: set[str] = set()
        offset = 0
        while True:
            page = await self.subjects_page(offset)
            subjects = page.get("state", {}).get("subjects") or {}
            found.update(subject.split(".")[depth] for subject in subjects)
            offset += len(subjects)
            if not subjects or offset >= page.get("total", 0):
                return sorted(found)

    async def subjects_page(self, offset: int) -> dict[str, Any]:
        """One ``$JS.API.STREAM.INFO`` reply listing the log's subjects from ``offset`` (with total, limit)."""
        request = json.dumps({"subjects_filter": self.subjects.all_events, "offset": offset}).encode()
        return await self._js._api_request(f"{self._js._prefix}.STREAM.INFO.{self.stream}", request,
                                           timeout=max(self._js._timeout, 10.0))

    async def _delete_quietly(self, name: str, sub: JetStreamContext.PullSubscription | None) -> None:
        try:
            if sub is not None:
                await sub.unsubscribe()
            await self._js.delete_consumer(self.stream, name)
        except Exception:  # an abandoned ephemeral consumer expires by itself (inactive_threshold)
            pass

    async def append(
        self, case_id: str, events: Sequence[Envelope], expected_last_seq: int, after: Recorded | None = None
    ) -> list[int]:
        """Append in order; the first must find the case at ``expected_last_seq`` (0 = new case).

        Each event is chained to the case's previous one (``prev_event_id``, ``prev_hash``).
        ``after`` is that previous event when the caller has it; otherwise it is fetched.
        """
        seqs: list[int] = []
        expected = expected_last_seq
        link = _Link.of(after) if after is not None else await self._link_at(expected)
        for env in events:
            if env.case_id != case_id:
                raise ValueError("an append writes one case only")
            sealed = await self.personal.seal(env) if self.personal is not None else env
            chained = sealed.model_copy(update={"prev_event_id": link.event_id if link else None,
                                                "prev_hash": link.digest if link else None})
            body = chained.to_bytes()
            headers = {
                "Nats-Msg-Id": str(env.event_id),
                "Nats-Expected-Last-Subject-Sequence": str(expected),
                "Nats-Expected-Last-Subject-Sequence-Subject": self.subjects.case(case_id),
                "Rethink-Event-Type": env.type,
            }
            ack = await self._publish(self.subjects.event(case_id, env.type), body, headers)
            if ack.duplicate:
                raise DuplicateEvent(f"event {env.event_id} is already in the log at seq {ack.seq}")
            expected = ack.seq
            link = _Link(env.event_id, digest(body))
            seqs.append(ack.seq)
        return seqs

    async def _link_at(self, seq: int) -> _Link | None:
        if seq == 0:
            return None
        msg = await self._js.get_msg(self.stream, seq)
        return _Link(Envelope.from_bytes(msg.data).event_id, digest(msg.data))

    async def _publish(self, subject: str, body: bytes, headers: dict[str, str]) -> api.PubAck:
        for attempt in range(8):
            try:
                return await self._js.publish(subject, body, stream=self.stream, headers=headers)
            except APIError as exc:
                if exc.err_code == WRONG_LAST_SEQUENCE:
                    raise ConcurrencyConflict(str(exc.description)) from exc
                if any(t in (exc.description or "") for t in _TRANSIENT) and attempt < 7:
                    await asyncio.sleep(0.01 * 2**attempt)
                    continue
                raise
        raise AssertionError("unreachable")


Decide = Callable[[list[Recorded]], Sequence[Envelope]]


async def decide_and_append(log: EventLog, case_id: str, decide: Decide, attempts: int = 6,
                            seen_seq: int | None = None) -> list[Envelope]:
    """Read the case, decide against it, append; on a conflict read again and decide again.

    Events already in the log (same id: a redelivery or a retried command) are not
    appended twice. Returns the events written now. With ``seen_seq`` (a reaction to the event
    at that sequence) the first try may decide on the cached history, if it reaches that far.

    A command (no ``seen_seq``) decides first on the copy of the case this process holds, without
    asking the log: an append proves that copy current, since it expects the case's last event
    to be the copy's last (case-wide), and loses otherwise. Only an outcome that appends nothing
    (a refusal, a repeat) is checked by asking the log where the case ends; a refusal is never
    given on a copy the log has moved past. That saves a command its round trip to the log.
    """
    held = log.held(case_id) if seen_seq is None else None
    for attempt in range(attempts):
        if held is not None:
            history, held = held, None
            try:
                new = _new_events(history, decide)
            except Exception:
                if await log.ends_at(case_id, _last_seq(history)):
                    raise  # decided on the case as it is
                continue  # the case moved on: read it and decide again
            if not new:
                if await log.ends_at(case_id, _last_seq(history)):
                    return []
                continue
        else:
            if attempt == 0:  # a reaction; or a command whose log has no cache
                history = (await log.history_for(case_id, seen_seq) if seen_seq is not None
                           else await log.current_history(case_id))
            else:  # a conflict means the copy was behind: read the log itself
                history = await log.read_case(case_id)
            new = _new_events(history, decide)
            if not new:
                return []
        try:
            last = history[-1] if history else None
            await log.append(case_id, new, last.seq if last else 0, after=last)
            return new
        except (ConcurrencyConflict, DuplicateEvent):
            # Read again: an event already stored by an earlier attempt is then filtered out.
            continue
    raise ConcurrencyConflict(f"case {case_id} kept changing; gave up after {attempts} attempts")


def _new_events(history: list[Recorded], decide: Decide) -> list[Envelope]:
    seen = {r.envelope.event_id for r in history}
    return [e for e in decide(history) if e.event_id not in seen]


def _last_seq(history: list[Recorded]) -> int:
    return history[-1].seq if history else 0
