"""A copy of the event log for auditors: export the stream to a file, import it into a server of their own.

An auditor has read-only access to production, not its disks. ``export`` reads every message
of the log (as the read-only auditor user may) into a JSON-lines file: each message's stream
sequence, subject, headers and exact bytes, in order, then a trailer with the count and a
SHA-256 of everything before it, so a truncated or damaged file is refused (a checksum, not
a signature: a deliberate edit of an event still breaks its chain). ``import`` loads
that file into an *empty* stream on another server, with the same stream sequences: gaps
(messages deleted from production) are recreated as gaps. So on the copy, ``audit verify``
finds exactly what it would find on production, at the same sequences, and history, search
and rebuilds read the same events.

What the copy does not keep: the server's stored time of each message (the envelope's
``recorded_at`` is in the bytes and is kept) and the headers that steer the server on publish
(``Nats-Msg-Id``, ``Nats-Expected-*``): replaying them would let dedup or concurrency checks
drop or refuse the very messages an audit is about. The originals are in the file.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from .bootstrap import stream_config
from .eventlog import Subjects
from .settings import Settings

FORMAT = "rethink-log-export"
VERSION = 1
BATCH = 500
_STEERING = ("Nats-Msg-Id", "Nats-Expected-")
Progress = Callable[[int], None]


class CopyError(ValueError):
    """The file or the target cannot be used; nothing was written."""


@dataclass(frozen=True)
class Exported:
    messages: int
    first_seq: int
    last_seq: int


@dataclass(frozen=True)
class Imported:
    messages: int
    gaps: int
    first_seq: int
    last_seq: int


class _HashingWriter:
    def __init__(self, f: IO[str]) -> None:
        self.f, self.sha = f, hashlib.sha256()

    def line(self, obj: dict[str, Any]) -> None:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n"
        self.sha.update(text.encode())
        self.f.write(text)


async def export_log(js: JetStreamContext, settings: Settings, path: Path, progress: Progress | None = None) -> Exported:
    """Every message of the log up to its last sequence now, in order, into ``path``."""
    subjects = Subjects(settings.subject_prefix)
    info = await js.stream_info(settings.stream)
    last, count, first = info.state.last_seq, 0, 0
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        out = _HashingWriter(f)
        out.line({"format": FORMAT, "version": VERSION, "stream": settings.stream,
                  "subject_prefix": settings.subject_prefix, "exported_at": datetime.now(UTC).isoformat(),
                  "last_seq": last})
        if info.state.messages:
            sub = await js.pull_subscribe(subjects.all_events, stream=settings.stream, config=api.ConsumerConfig(
                ack_policy=api.AckPolicy.NONE, deliver_policy=api.DeliverPolicy.ALL, mem_storage=True,
                inactive_threshold=30.0))
            try:
                seq = 0
                while seq < last:
                    msgs = await sub.fetch(BATCH, timeout=5)
                    for m in msgs:
                        seq = m.metadata.sequence.stream
                        if seq > last:
                            break
                        first = first or seq
                        out.line({"seq": seq, "subject": m.subject, "time": m.metadata.timestamp.isoformat(),
                                  "headers": dict(m.headers or {}), "data": base64.b64encode(m.data).decode()})
                        count += 1
                    if progress:
                        progress(count)
                    if msgs and msgs[-1].metadata.num_pending == 0:
                        break
            finally:
                await sub.unsubscribe()
        f.write(json.dumps({"end": True, "messages": count, "sha256": out.sha.hexdigest()}) + "\n")
    tmp.replace(path)
    return Exported(count, first, last)


def read_export(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and messages of an export file, once it checks out whole; else a CopyError."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except FileNotFoundError:
        raise CopyError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise CopyError(f"{path}: not an export file (not UTF-8 text)") from None
    try:
        records = [json.loads(line) for line in lines]
    except json.JSONDecodeError as exc:
        raise CopyError(f"{path}: not an export file (malformed line: {exc.msg})") from None
    if not records or not isinstance(records[0], dict) or records[0].get("format") != FORMAT:
        raise CopyError(f"{path}: not an export file (made by `rethink audit export`)")
    trailer = records[-1]
    if not isinstance(trailer, dict) or trailer.get("end") is not True:
        raise CopyError(f"{path}: the export is incomplete (no end line): export it again")
    sha = hashlib.sha256("".join(lines[:-1]).encode()).hexdigest()
    messages = records[1:-1]
    if sha != trailer.get("sha256") or len(messages) != trailer.get("messages"):
        raise CopyError(f"{path}: the export does not match its own checksum: it was truncated or edited")
    return records[0], messages


def _decoded(messages: list[dict[str, Any]]) -> Iterator[tuple[int, str, dict[str, str], bytes]]:
    before = 0
    for m in messages:
        seq = m["seq"]
        if seq <= before:
            raise CopyError(f"messages out of order at seq {seq}")
        before = seq
        headers = {k: v for k, v in (m.get("headers") or {}).items() if not k.startswith(_STEERING)}
        yield seq, m["subject"], headers, base64.b64decode(m["data"])


async def import_log(js: JetStreamContext, settings: Settings, path: Path, progress: Progress | None = None) -> Imported:
    """Load an export into a new stream ``settings.stream``, keeping every stream sequence."""
    header, messages = read_export(path)
    if header["subject_prefix"] != settings.subject_prefix:
        raise CopyError(f"the export's subjects start with {header['subject_prefix']!r}: set "
                        f"RETHINK_SUBJECT_PREFIX={header['subject_prefix']} for the copy")
    try:
        await js.stream_info(settings.stream)
    except NotFoundError:
        pass
    else:
        raise CopyError(f"stream {settings.stream} already exists on this server: import only into a stream "
                        "that does not exist yet, on a server of your own (never production)")
    decoded = list(_decoded(messages))
    first = decoded[0][0] if decoded else 1
    config = stream_config(settings, Subjects(settings.subject_prefix))
    config.first_seq = first
    await js.add_stream(config)
    gap_subject = f"{settings.subject_prefix}.events.copy-gap.filler"  # not a case id: never read as one
    fillers: list[int] = []
    expected = first
    for n, (seq, subject, headers, data) in enumerate(decoded, 1):
        while expected < seq:  # a message production no longer has: keep its sequence empty here too
            fillers.append((await js.publish(gap_subject, b"", stream=settings.stream)).seq)
            expected += 1
        ack = await js.publish(subject, data, stream=settings.stream, headers=headers or None)
        if ack.seq != seq:
            raise CopyError(f"the copy stored seq {seq} as {ack.seq}: is something else writing to {settings.stream}?")
        expected = seq + 1
        if progress and n % BATCH == 0:
            progress(n)
    while decoded and expected <= header["last_seq"]:  # production's last messages were deleted too
        fillers.append((await js.publish(gap_subject, b"", stream=settings.stream)).seq)
        expected += 1
    for seq in fillers:
        await js.delete_msg(settings.stream, seq)
    return Imported(len(decoded), len(fillers), first, expected - 1 if decoded else 0)
