"""A backup of the key store: every case's data key, to a file and back.

The log's personal fields are sealed with per-case keys kept in a JetStream key-value bucket
apart from the log (rethink.shared.keystore). A restored log without its keys reads as
erased, so a backup of the log is only whole with a backup of the keys taken after it. The
file holds the keys in the clear: keep it apart from the log's export, encrypted, on a short
rotation (docs/privacy.md: erasure completes when the oldest key backup expires).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import nats.js.errors
from nats.js import JetStreamContext

FORMAT = "rethink-keys-backup"
VERSION = 1


class KeyCopyError(ValueError):
    pass


@dataclass(frozen=True)
class KeysCopied:
    keys: int
    skipped: int = 0  # already in the bucket, with the same value


async def export_keys(js: JetStreamContext, bucket: str, path: Path) -> KeysCopied:
    kv = await js.key_value(bucket)
    try:
        names = sorted(await kv.keys())
    except nats.js.errors.NoKeysError:
        names = []
    lines = [json.dumps({"format": FORMAT, "version": VERSION, "bucket": bucket})]
    for name in names:
        try:
            entry = await kv.get(name)
        except nats.js.errors.KeyNotFoundError:  # erased while we read: it stays erased
            continue
        if entry.value:
            lines.append(json.dumps({"key": name, "value": base64.b64encode(entry.value).decode()}))
    count = len(lines) - 1
    lines.append(json.dumps({"end": True, "keys": count}))
    tmp = path.with_name(path.name + ".part")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)
    return KeysCopied(count)


def _read(path: Path) -> list[tuple[str, bytes]]:
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise KeyCopyError(f"{path}: not a key backup ({exc})") from None
    if not rows or rows[0].get("format") != FORMAT or rows[-1].get("end") is not True:
        raise KeyCopyError(f"{path}: not a whole key backup (its header or its end is missing)")
    entries = [(r["key"], base64.b64decode(r["value"])) for r in rows[1:-1]]
    if len(entries) != rows[-1].get("keys"):
        raise KeyCopyError(f"{path}: {len(entries)} keys, but the backup says {rows[-1].get('keys')}")
    return entries


async def import_keys(js: JetStreamContext, bucket: str, path: Path) -> KeysCopied:
    """Put every key of a backup into the bucket (`rethink bootstrap` makes it); never overwrites one."""
    entries = _read(path)
    kv = await js.key_value(bucket)
    added = skipped = 0
    for name, value in entries:
        try:
            await kv.create(name, value)
            added += 1
        except nats.js.errors.KeyWrongLastSequenceError:
            if (await kv.get(name)).value != value:
                raise KeyCopyError(f"case {name} has a different key in {bucket} already; not overwritten") from None
            skipped += 1
    return KeysCopied(added, skipped)
