"""Where the per-case data keys live: a JetStream key-value bucket, apart from the log.

One key per case (the KV key is the case id). Separate credentials guard it (see
rethink.shared.auth): an agency never reaches it, and the log's readers need it only to read
personal fields. Destroying a case's key is what erases the case's personal data.
"""

from __future__ import annotations

import base64
import json

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from .fieldcrypt import DataKey


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
