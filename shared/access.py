"""Access records: who read which case, when, how and why, in an append-only stream of their own.

The stream denies deleting and purging, so a record, once written, stays. A read through the
CLI is recorded *before* the case is read: when the record cannot be written, nothing is shown.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from nats.js import JetStreamContext, api

from .envelope import CASE_ID_PATTERN
from .eventlog import Subjects
from .settings import Settings

NO_REASON = "(no reason given)"


def access_stream_config(settings: Settings, subjects: Subjects) -> api.StreamConfig:
    return api.StreamConfig(
        name=settings.access_stream,
        subjects=[f"{subjects.prefix}.access.>"],
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        max_age=0,
        deny_delete=True,
        deny_purge=True,
        allow_rollup_hdrs=False,
        num_replicas=settings.stream_replicas,
    )


@dataclass(frozen=True)
class AccessRecord:
    case_id: str
    who: str
    at: str
    what: str  # the command that read it, e.g. "audit history"
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def who_is_reading(settings: Settings) -> str:
    if settings.user:
        return settings.user
    try:
        return f"os:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (containers)
        return "os:unknown"


class AccessLog:
    def __init__(self, js: JetStreamContext, settings: Settings) -> None:
        self._js = js
        self.stream = settings.access_stream
        self.prefix = settings.subject_prefix

    def subject(self, case_id: str) -> str:
        if not re.fullmatch(CASE_ID_PATTERN.strip("^$"), case_id):  # never a wildcard into a subject
            raise ValueError(f"not a case id: {case_id[:40]!r} (expected RT- and ten letters or digits 2-7)")
        return f"{self.prefix}.access.{case_id}"

    async def record(self, case_id: str, who: str, what: str, reason: str | None) -> AccessRecord:
        entry = AccessRecord(case_id, who, datetime.now(UTC).isoformat(timespec="seconds"), what,
                             reason.strip() if reason and reason.strip() else NO_REASON)
        await self._js.publish(self.subject(case_id), json.dumps(entry.as_dict()).encode(), stream=self.stream)
        return entry

    async def list(self, case_id: str) -> list[AccessRecord]:
        sub = await self._js.pull_subscribe(self.subject(case_id), stream=self.stream, config=api.ConsumerConfig(
            ack_policy=api.AckPolicy.NONE, deliver_policy=api.DeliverPolicy.ALL, mem_storage=True,
            inactive_threshold=30.0))
        try:
            pending = (await sub.consumer_info()).num_pending or 0
            out: list[AccessRecord] = []
            while len(out) < pending:
                msgs = await sub.fetch(min(pending - len(out), 256), timeout=5)
                out += [AccessRecord(**json.loads(m.data)) for m in msgs]
            return out
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
