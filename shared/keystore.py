"""Where the per-case data keys live: a JetStream key-value bucket, apart from the log.

One key per case (the KV key is the case id). Separate credentials guard it (see
rethink.shared.auth): an agency never reaches it, and the log's readers need it only to read
personal fields. Destroying a case's key is what erases the case's personal data.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from collections.abc import Sequence

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from .envelope import CASE_ID_PATTERN
from .fieldcrypt import DataKey

MANY = 256  # cases per batched read: a request's subjects stay well inside a message's size
MANY_TIMEOUT = 5.0
_CASE_ID = re.compile(CASE_ID_PATTERN)  # one safe subject token: no wildcard, no dot


class KeyStoreUnavailable(RuntimeError):
    """The key store cannot be asked: personal fields can be neither written nor read."""


_UNREACHABLE = (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.errors.ConnectionClosedError,
                nats.errors.NoServersError, nats.errors.StaleConnectionError, nats.js.errors.ServiceUnavailableError,
                nats.js.errors.NoStreamResponseError,  # the bucket's stream is electing a leader
                TimeoutError, ConnectionError)


def kv_stream_config(bucket: str, replicas: int = 1) -> api.StreamConfig:
    """The bucket's stream, as nats-py would make it, but one revision per key and deletable messages.

    ``deny_delete`` is off so that erasure can securely erase the key's message (the server
    overwrites it on disk) before the purge removes what is left of the key's history.
    """
    return api.StreamConfig(
        name=f"KV_{bucket}", subjects=[f"$KV.{bucket}.>"], allow_direct=True, allow_rollup_hdrs=True,
        deny_delete=False, deny_purge=False, discard=api.DiscardPolicy.NEW, max_msgs_per_subject=1,
        max_msgs=-1, max_consumers=-1, storage=api.StorageType.FILE, duplicate_window=120.0,
        num_replicas=replicas, description="Re-think per-case data keys",
    )


class KvKeyStore:
    def __init__(self, js: JetStreamContext, bucket: str) -> None:
        self._js = js
        self.bucket = bucket
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            try:
                self._kv = await self._js.key_value(self.bucket)
            except nats.js.errors.BucketNotFoundError:
                raise KeyStoreUnavailable(f"key store {self.bucket} does not exist; run `rethink bootstrap`") from None
        return self._kv

    async def get(self, case_id: str) -> DataKey | None:
        async with self._guard("read"):
            kv = await self._bucket()
            try:
                entry = await kv.get(case_id)
            except nats.js.errors.KeyNotFoundError:
                return None
            return _decode(entry.value) if entry.value else None

    async def get_many(self, case_ids: Sequence[str]) -> dict[str, DataKey]:
        """The keys of many cases, in one request per ``MANY`` of them (a replay's batch).

        A batched direct get (NATS 2.11+): the last message of each case's subject, then an
        end-of-batch status. A case missing from the result has no key (never made, or erased:
        an erased key's last message is the purge marker, which has no data).
        """
        found: dict[str, DataKey] = {}
        async with self._guard("read"):
            await self._bucket()  # a bucket that is not there says so, rather than leave the read unanswered
            for i in range(0, len(case_ids), MANY):
                chunk = [c for c in case_ids[i:i + MANY] if _CASE_ID.fullmatch(c)]
                if chunk:
                    found.update(await self._last_of(chunk))
        return found

    async def _last_of(self, case_ids: list[str]) -> dict[str, DataKey]:
        nc = self._js._nc  # type: ignore[attr-defined]
        subject = f"{self._js._prefix}.DIRECT.GET.KV_{self.bucket}"  # type: ignore[attr-defined]
        prefix = f"$KV.{self.bucket}."
        found: dict[str, DataKey] = {}
        ended = asyncio.Event()
        status: list[str] = []

        async def arrived(msg: Msg) -> None:
            headers = msg.headers or {}
            if not msg.data:  # a status (204: end of batch; 404: none of them), or a deletion marker
                if headers.get("Status"):
                    status.append(f"{headers.get('Status')} {headers.get('Description', '')}".strip())
                    ended.set()
                return
            name = headers.get("Nats-Subject", "")
            if name.startswith(prefix) and headers.get("KV-Operation") is None:
                found[name[len(prefix):]] = _decode(msg.data)

        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, cb=arrived)
        try:
            request = {"multi_last": [prefix + c for c in case_ids], "batch": len(case_ids)}
            await nc.publish(subject, json.dumps(request).encode(), reply=inbox)
            await asyncio.wait_for(ended.wait(), MANY_TIMEOUT)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if status and not status[0].startswith(("204", "404")):
            raise nats.js.errors.ServiceUnavailableError(description=f"batched key read answered {status[0]}")
        return found

    async def create(self, case_id: str) -> DataKey:
        """The case's key: a new one, or the one another writer created first (both converge)."""
        async with self._guard("write"):
            kv = await self._bucket()
            key = DataKey.new()
            try:
                await kv.create(case_id, _encode(key))
                return key
            except nats.js.errors.KeyWrongLastSequenceError:
                pass
        existing = await self.get(case_id)
        if existing is None:  # created and destroyed in between: erasure wins, try once more
            return await self.create(case_id)
        return existing

    async def destroy(self, case_id: str) -> bool:
        """Erase the key: its message is securely erased, then the key's whole history purged."""
        async with self._guard("erase"):
            kv = await self._bucket()
            try:
                entry = await kv.get(case_id)
            except nats.js.errors.KeyNotFoundError:
                entry = None
            if entry is not None:
                await self._js.delete_msg(f"KV_{self.bucket}", entry.revision)
            await kv.purge(case_id)
            return entry is not None

    def _guard(self, what: str) -> _Guard:
        return _Guard(self.bucket, what)


class _Guard:
    """Turns 'cannot reach the key store' into one clear error, whatever nats-py raised."""

    def __init__(self, bucket: str, what: str) -> None:
        self.bucket, self.what = bucket, what

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc is None or isinstance(exc, KeyStoreUnavailable):
            return False
        denied = isinstance(exc, nats.errors.Error) and "permissions violation" in str(exc).lower()
        if isinstance(exc, _UNREACHABLE) or denied:
            raise KeyStoreUnavailable(
                f"key store {self.bucket} unreachable ({type(exc).__name__}); cannot {self.what} "
                "personal data: nothing is shown or written without it") from exc
        return False


def _encode(key: DataKey) -> bytes:
    return json.dumps({"kid": key.kid, "key": base64.b64encode(key.secret).decode()}).encode()


def _decode(raw: bytes) -> DataKey:
    data = json.loads(raw)
    return DataKey(data["kid"], base64.b64decode(data["key"]))
