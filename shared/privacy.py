"""Personal data in the log: sealed on append, opened on read, erased by destroying the case's key.

Data keys are cached per process (a small LRU with a time limit) because every append and
every read needs one. Erasure must beat the cache, so three things bound a stale key:
- the process that erases forgets the key at once;
- any reader that meets a ``PersonalDataErased`` event forgets the case's key, and a history
  that holds one treats the key it names as destroyed whatever any cache says; services see
  every event through their consumers, so they forget it as soon as they reach it;
- any other cached key is dropped after ``RETHINK_KEY_CACHE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from .envelope import Envelope
from .fieldcrypt import (
    DataKey,
    PersonalDataLocked,
    has_personal_values,
    open_sealed,
    open_text,
    seal,
    seal_text,
    sealed_kids,
    sealed_text_kid,
)

ERASURE = "PersonalDataErased"
ACTOR = "envelope.actor"


def personal_actor(env: Envelope) -> bool:
    """A person acting is personal data too; a service is not, and whoever erased a case must stay
    known after its key is gone (the erasure is not sealed with the key it destroys)."""
    return (env.type != ERASURE and not env.actor.startswith("service:")
            and sealed_text_kid(env.actor) is None)


def envelope_kids(env: Envelope) -> set[str]:
    kid = sealed_text_kid(env.actor)
    return sealed_kids(env.data) | ({kid} if kid else set())


class KeyStore(Protocol):
    async def get(self, case_id: str) -> DataKey | None: ...
    async def create(self, case_id: str) -> DataKey: ...
    async def destroy(self, case_id: str) -> bool: ...


def erased_kids(envelopes: Iterable[Envelope]) -> frozenset[str]:
    """The keys a history itself says were destroyed."""
    # A kid that is not a string (an altered log) names nothing; the erasure's own validation refuses it.
    return frozenset(e.data["kid"] for e in envelopes if e.type == ERASURE and isinstance(e.data.get("kid"), str)
                     and e.data["kid"])


CACHE_SIZE = 1024  # cases whose keys a process keeps


class PersonalData:
    def __init__(self, store: KeyStore, cache_seconds: float = 60.0, cache_size: int = CACHE_SIZE,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._ttl = cache_seconds
        self._size = cache_size
        self._now = now
        self._cache: OrderedDict[str, tuple[DataKey, float]] = OrderedDict()

    def key_in_hand(self, case_id: str) -> DataKey | None:
        """The case's key if the cache holds it (no request made): what a one-pass read opens with."""
        return self._cached(case_id)

    def forget(self, case_id: str) -> None:
        self._cache.pop(case_id, None)

    async def seal(self, env: Envelope) -> Envelope:
        """The envelope as it is to be stored: personal values and a person's name as actor encrypted."""
        data_too, actor_too = has_personal_values(env.type, env.data), personal_actor(env)
        if not (data_too or actor_too):
            return env
        key = self._cached(env.case_id) or await self.store.create(env.case_id)
        self._remember(env.case_id, key)
        update: dict[str, Any] = {}
        if data_too:
            update["data"] = seal(env.data, env.case_id, env.type, key)
        if actor_too:
            update["actor"] = seal_text(env.actor, env.case_id, env.type, ACTOR, key)
        return env.model_copy(update=update)

    async def open(self, env: Envelope, destroyed: frozenset[str] = frozenset()) -> Envelope:
        """The envelope in clear; fields whose key was destroyed read as erased."""
        if env.type == ERASURE:
            self.forget(env.case_id)
        cached = self._cached(env.case_id)
        if cached is not None and cached.kid not in destroyed:
            # The usual case: one walk, every sealed value the case's cached key's (a case has one
            # key; another appears only after an erasure). The general way walks twice: once to
            # learn which keys to fetch, once to open.
            try:
                return _opened(env, only_key(cached))
            except OtherKey:
                pass  # sealed with a key the cache does not hold: the general way below
        kids = envelope_kids(env)
        if not kids:
            return env
        if destroyed & kids:
            self.forget(env.case_id)
        keys: dict[str, DataKey | None] = {}
        for kid in kids:
            keys[kid] = None if kid in destroyed else await self._key(env.case_id, kid)
        return _opened(env, keys.__getitem__)

    async def prefetch(self, case_ids: Iterable[str]) -> None:
        """Ask the store for many cases' keys at once, so that opening a batch of their events waits
        for about one round trip instead of one per case (a replay). The keys are cached as
        ``open`` would cache them; a case without a key is left to ``open`` to ask again."""
        wanted = [c for c in dict.fromkeys(case_ids) if self._cached(c) is None][:self._size]
        if not wanted:
            return
        many = getattr(self.store, "get_many", None)
        if many is not None:  # one request for them all (the key-value store's batched read)
            for case_id, key in (await many(wanted)).items():
                self._remember(case_id, key)
            return
        keys = await asyncio.gather(*(self.store.get(c) for c in wanted))
        for case_id, key in zip(wanted, keys, strict=True):
            if key is not None:
                self._remember(case_id, key)

    async def erase(self, case_id: str) -> bool:
        self.forget(case_id)
        return await self.store.destroy(case_id)

    async def current_kid(self, case_id: str) -> str | None:
        key = await self.store.get(case_id)
        return key.kid if key else None

    async def _key(self, case_id: str, kid: str) -> DataKey | None:
        cached = self._cached(case_id)
        if cached is not None and cached.kid == kid:
            return cached
        key = await self.store.get(case_id)  # unreachable -> KeyStoreUnavailable, never a guess
        if key is None:
            self.forget(case_id)
            return None
        self._remember(case_id, key)
        return key if key.kid == kid else None  # a key made after an erasure opens only what it sealed

    def _cached(self, case_id: str) -> DataKey | None:
        hit = self._cache.get(case_id)
        if hit is None:
            return None
        key, at = hit
        if self._now() - at > self._ttl:
            del self._cache[case_id]
            return None
        self._cache.move_to_end(case_id)
        return key

    def _remember(self, case_id: str, key: DataKey) -> None:
        if case_id in self._cache and self._cache[case_id][0] == key:
            self._cache.move_to_end(case_id)
            return
        self._cache[case_id] = (key, self._now())
        self._cache.move_to_end(case_id)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)


class OtherKey(LookupError):
    """A sealed value whose key is not the one in hand."""


def only_key(key: DataKey) -> Callable[[str], DataKey]:
    """``key`` for its own kid; any other stops the opening (``OtherKey``)."""

    def key_for(kid: str) -> DataKey:
        if kid != key.kid:
            raise OtherKey(kid)
        return key

    return key_for


def _opened(env: Envelope, key_for: Callable[[str], DataKey | None]) -> Envelope:
    """The envelope with every sealed value opened with ``key_for(kid)`` (None: read as erased);
    the envelope itself when nothing in it is sealed."""
    actor_kid = sealed_text_kid(env.actor)
    actor = (open_text(env.actor, env.case_id, env.type, ACTOR, key_for(actor_kid))
             if actor_kid is not None else None)
    found = False

    def seen(kid: str) -> DataKey | None:
        nonlocal found
        found = True
        return key_for(kid)

    data = open_sealed(env.data, env.case_id, env.type, seen)
    if not found and actor is None:
        return env
    update: dict[str, Any] = {"data": data}
    if actor is not None:
        update["actor"] = actor
    return env.model_copy(update=update)


def open_without_keys(env: Envelope) -> Envelope:
    """For a log read with no key store: plain envelopes pass, sealed ones are refused."""
    if envelope_kids(env):
        raise PersonalDataLocked(f"{env.type} of {env.case_id} holds encrypted personal data and this reader "
                                 "has no key store")
    return env


def personal_data(js: Any, settings: Any, at_once: int = 0) -> PersonalData:
    """The composition roots' one way to build it: keys from the settings' bucket. ``at_once``: how
    many cases' keys the cache must hold together (a replay's batch prefetches all of its cases')."""
    from .keystore import KvKeyStore

    return PersonalData(KvKeyStore(js, settings.keys_bucket), settings.key_cache_seconds,
                        max(CACHE_SIZE, at_once))
