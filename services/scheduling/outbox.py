"""The outbox: every email is recorded before it is sent, sent with retries, and marked sent once.

States: ``pending`` (waiting for its next try) -> ``sending`` (claimed by a sender) -> ``sent``,
or back to ``pending`` with a later ``next_attempt_at`` after a failure (exponential backoff),
or ``failed`` after a permanent refusal or the last allowed try (``rethink notifications``
lists and retries them).

Each row has a unique key derived from its cause (event id and position, or the reminder's
identity), so recording the same message again, after a redelivered event or a restart,
adds nothing. The rendered bytes are stored, so a resend is byte-for-byte the same message
with the same Message-ID.

Exactly once, and its limit: a row is claimed (``sending``, committed) just before it is
handed to the transport, and marked ``sent`` (committed) straight after. A row that is still
``sending`` after ``claim_timeout`` belonged to a sender that stopped mid-send; its outcome is
unknown (the server may or may not have accepted it), so it is tried again. If the server had
accepted it, the recipient gets the same message twice: at-least-once is unavoidable between
the server's "250 OK" and our commit, and that window is one local database write wide.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    case,
    func,
    select,
)
from sqlalchemy.exc import IntegrityError

from rethink.shared.clock import Clock
from rethink.shared.events import ERASED
from rethink.shared.logs import get_logger
from rethink.shared.projection import UtcDateTime

from .mail import PermanentFailure, Transport
from .mime import render
from .notifier import Email

logger = get_logger("rethink.outbox")

# Its own metadata and its own database: a projection rebuild replaces the projection's tables
# (and, on SQLite, its file), but what was sent cannot be rebuilt from the log.
metadata = MetaData()
outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(200), nullable=False, unique=True),
    Column("kind", String(20), nullable=False),
    Column("sender", String(320), nullable=False),
    Column("recipient", String(320), nullable=False),
    Column("subject", String(400), nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("status", String(10), nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime(), nullable=False),
    Column("claimed_at", UtcDateTime()),
    Column("sent_at", UtcDateTime()),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("last_error", Text),
)
# Which case each message is about, so erasing a case's personal data reaches its emails too.
outbox_cases = Table(
    "outbox_cases",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("case_id", String(16), nullable=False, index=True),
)


Outcome = tuple[int, str, dict[str, Any]]  # a sent message's row id, new status, and the values to set


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    backoff: timedelta = timedelta(seconds=30)
    backoff_max: timedelta = timedelta(hours=1)
    claim_timeout: timedelta = timedelta(minutes=5)

    def delay(self, attempts: int) -> timedelta:
        """After the first failed try ``backoff``, then twice as long each time, at most ``backoff_max``."""
        return min(self.backoff * (2 ** max(attempts - 1, 0)), self.backoff_max)


@dataclass(frozen=True)
class Drained:
    sent: int = 0
    retrying: int = 0
    failed: int = 0


# The statements of the per-message path, built once: building one costs more CPU than running it.
_INSERT = outbox.insert()
_INSERT_CASE = outbox_cases.insert()
_KNOWN = select(outbox.c.key).where(outbox.c.key.in_(bindparam("keys", expanding=True)))
_CLAIM = (outbox.update().where(outbox.c.id == bindparam("p_id"), outbox.c.status == "pending")
          .values(status="sending", claimed_at=bindparam("p_claimed_at"), attempts=outbox.c.attempts + 1))
_SENDING = outbox.update().where(outbox.c.id == bindparam("p_id"), outbox.c.status == "sending")
_FINISH = {  # by the outcome's status; a row no longer ``sending`` (taken as abandoned meanwhile) is left alone
    "sent": _SENDING.values(status="sent", sent_at=bindparam("p_sent_at"), claimed_at=None, last_error=None),
    "failed": _SENDING.values(status="failed", last_error=bindparam("p_error"), claimed_at=None),
    "pending": _SENDING.values(status="pending", last_error=bindparam("p_error"),
                               next_attempt_at=bindparam("p_next"), claimed_at=None),
}


class Outbox:
    def __init__(self, engine: Engine, clock: Clock, transport: Transport, policy: RetryPolicy | None = None,
                 batch: int = 50) -> None:
        self.engine, self.clock, self.transport = engine, clock, transport
        self.policy = policy or RetryPolicy()
        self.batch = batch
        self._draining = asyncio.Lock()

    def create_schema(self) -> None:
        metadata.create_all(self.engine)

    def enqueue(self, messages: Sequence[Email], kind: str, case_id: str | None = None) -> int:
        """Record messages to send; a key already recorded is left as it is. Returns how many are new.

        One transaction for the batch: look up which keys are recorded, render only the others
        (a redelivery renders nothing), insert them all. Should another writer record one of the
        keys between our look and our insert, the batch is recorded again one message at a time.
        """
        if not messages:
            return 0
        now, rows = self.clock.now(), []
        try:
            with self.engine.begin() as conn:
                known = self._known(conn, [m.key for m in messages])
                fresh = [m for m in messages if m.key not in known]
                rows = [dict(key=m.key, kind=kind, sender=m.sender, recipient=str(m.recipient.email),
                             subject=m.subject, data=data, status="pending", attempts=0, next_attempt_at=now,
                             created_at=now)
                        for m, data in zip(fresh, render(fresh), strict=True)]
                if rows:
                    conn.execute(_INSERT, rows)
                    if case_id is not None:
                        conn.execute(_INSERT_CASE, [dict(key=row["key"], case_id=case_id) for row in rows])
            return len(rows)
        except IntegrityError:
            pass  # someone else recorded one of them between our look and our insert: one at a time, then
        return sum(self._enqueue_one(row, case_id) for row in rows)

    @staticmethod
    def _known(conn: Connection, keys: list[str]) -> set[str]:
        return set(conn.execute(_KNOWN, {"keys": keys}).scalars())

    def _enqueue_one(self, row: dict[str, Any], case_id: str | None) -> bool:
        try:
            with self.engine.begin() as conn:
                if self._known(conn, [row["key"]]):
                    return False
                conn.execute(_INSERT, [row])
                if case_id is not None:
                    conn.execute(_INSERT_CASE, [dict(key=row["key"], case_id=case_id)])
                return True
        except IntegrityError:
            return False  # recorded by someone else between our look and our insert: same message, same key

    def _recover_interrupted(self, now: datetime) -> None:
        """Rows a stopped sender left ``sending``: outcome unknown, so they are tried again (see above)."""
        stale = now - self.policy.claim_timeout
        with self.engine.begin() as conn:
            rows = conn.execute(select(outbox.c.id, outbox.c.key, outbox.c.attempts).where(
                outbox.c.status == "sending", outbox.c.claimed_at <= stale)).all()
            for row_id, key, attempts in rows:
                last = attempts >= self.policy.max_attempts
                conn.execute(outbox.update().where(outbox.c.id == row_id, outbox.c.status == "sending").values(
                    status="failed" if last else "pending", next_attempt_at=now, claimed_at=None,
                    last_error="interrupted while sending (the sender stopped); outcome unknown, "
                               + ("not retried: attempts exhausted" if last else "sending again")))
                logger.warning("outbox_send_interrupted", outbox_id=row_id, key=key, retried=not last)

    def _step(self, outcome: Outcome | None, claim: int | None, now: datetime) -> bool:
        """Record the last message's outcome and claim the next one, in one transaction.

        Both happen straight after the last ``deliver`` returns, with no await in between, just as
        two transactions would: one commit instead of two per message, and the same guarantees.
        Returns whether ``claim`` was claimed (another sender may have it).
        """
        with self.engine.begin() as conn:
            if outcome is not None:
                row_id, status, values = outcome
                conn.execute(_FINISH[status], {"p_id": row_id, **values})
            if claim is None:
                return False
            return conn.execute(_CLAIM, {"p_id": claim, "p_claimed_at": now}).rowcount == 1

    async def drain(self) -> Drained:
        """Send what is due, one message at a time, oldest first."""
        async with self._draining:
            now = self.clock.now()
            self._recover_interrupted(now)
            with self.engine.connect() as conn:
                due = conn.execute(select(outbox.c.id, outbox.c.key, outbox.c.sender, outbox.c.recipient,
                                          outbox.c.data).where(outbox.c.status == "pending",
                                                               outbox.c.next_attempt_at <= now)
                                   .order_by(outbox.c.id).limit(self.batch)).all()
            sent = retrying = failed = 0
            outcome: Outcome | None = None  # written with the next claim, or at the end
            for row_id, key, sender, recipient, data in due:
                claimed, outcome = self._step(outcome, row_id, now), None
                if not claimed:
                    continue
                try:
                    await self.transport.deliver(key, sender, recipient, data)
                except PermanentFailure as exc:
                    failed += 1
                    outcome = row_id, "failed", {"p_error": f"refused: {exc}"[:2000]}
                    logger.error("outbox_send_refused", outbox_id=row_id, key=key, error=str(exc))
                except Exception as exc:  # the server or network may recover: try again after a while
                    attempts = self._attempts(row_id)
                    error = f"{type(exc).__name__}: {exc}"[:2000]
                    if attempts >= self.policy.max_attempts:
                        failed += 1
                        outcome = row_id, "failed", {"p_error": error}
                        logger.error("outbox_send_failed", outbox_id=row_id, key=key, attempts=attempts, error=error)
                    else:
                        retrying += 1
                        outcome = row_id, "pending", {"p_error": error,
                                                        "p_next": now + self.policy.delay(attempts)}
                        logger.warning("outbox_send_retrying", outbox_id=row_id, key=key, attempts=attempts,
                                       error=error)
                else:
                    sent += 1
                    outcome = row_id, "sent", {"p_sent_at": self.clock.now()}
                    logger.info("outbox_sent", outbox_id=row_id, key=key)
            if outcome is not None:
                self._step(outcome, None, now)
            return Drained(sent, retrying, failed)

    def _attempts(self, row_id: int) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(outbox.c.attempts).where(outbox.c.id == row_id)).scalar_one()

    def list(self, failed_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        q = select(outbox.c.id, outbox.c.key, outbox.c.kind, outbox.c.recipient, outbox.c.subject,
                   outbox.c.status, outbox.c.attempts, outbox.c.next_attempt_at, outbox.c.created_at,
                   outbox.c.sent_at, outbox.c.last_error)
        if failed_only:
            q = q.where(outbox.c.status == "failed")
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(outbox.c.id.desc()).limit(limit)).mappings().all()
        return [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()} for row in rows]

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return dict(conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status)).all())

    def retry(self, row_id: int | None) -> list[int]:
        """Put failed messages (one, or all when ``row_id`` is None) back in line, with fresh attempts."""
        now = self.clock.now()
        with self.engine.begin() as conn:
            q = select(outbox.c.id).where(outbox.c.status == "failed")
            if row_id is not None:
                q = q.where(outbox.c.id == row_id)
            ids = list(conn.execute(q).scalars())
            if ids:
                conn.execute(outbox.update().where(outbox.c.id.in_(ids), outbox.c.status == "failed")
                             .values(status="pending", attempts=0, next_attempt_at=now, last_error=None))
        return ids

    def erase_sent_before(self, cutoff: datetime) -> int:
        """Forget what emails sent before ``cutoff`` said and to whom, keeping that they were sent.

        The rendered email holds names and addresses; once sent it is needed only for a while
        (a question about what someone received). The row and its key stay, so a late
        redelivery of the event that caused it still finds it sent and sends nothing again.
        """
        with self.engine.begin() as conn:
            return conn.execute(
                outbox.update()
                .where(outbox.c.status == "sent", outbox.c.sent_at < cutoff, outbox.c.recipient != ERASED)
                .values(recipient=ERASED, sender=ERASED, subject=ERASED, data=b"")
            ).rowcount

    def erase_case(self, case_id: str) -> int:
        """After a case's personal data is erased: its messages keep their status and dates, lose
        who they were to and what they said, and any not yet sent never will be ("erased")."""
        with self.engine.begin() as conn:
            keys = select(outbox_cases.c.key).where(outbox_cases.c.case_id == case_id)
            done = conn.execute(outbox.update().where(outbox.c.key.in_(keys)).values(
                recipient=ERASED, sender=ERASED, subject=ERASED, data=b"", last_error=None,
                status=case((outbox.c.status == "sent", "sent"), else_="erased"))).rowcount
        if self.engine.dialect.name == "sqlite":  # no copy of the old rows left in the write-ahead log
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return done

    def status_of(self, row_id: int) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(outbox.c.status).where(outbox.c.id == row_id)).scalar()
