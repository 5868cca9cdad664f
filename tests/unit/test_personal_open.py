"""Opening an event's personal data with the case's cached key in one walk gives what the general
way (collect the key ids, fetch each key, open) gives, and defers to it whenever it must."""

from __future__ import annotations

import pytest

from rethink.shared.events import ERASED
from rethink.shared.fieldcrypt import DataKey, UnreadableCiphertext, _aad, _b64, sealed_kids
from rethink.shared.privacy import PersonalData, envelope_kids
from tests.unit.test_projection_batches import events


class Keys:
    """An in-memory key store that counts its reads."""

    def __init__(self) -> None:
        self.keys: dict[str, DataKey] = {}
        self.reads = 0

    async def get(self, case_id: str) -> DataKey | None:
        self.reads += 1
        return self.keys.get(case_id)

    async def create(self, case_id: str) -> DataKey:
        return self.keys.setdefault(case_id, DataKey.new())

    async def destroy(self, case_id: str) -> bool:
        return self.keys.pop(case_id, None) is not None


async def sealed_log(store: Keys) -> list:
    writer = PersonalData(store)
    recs = [r for r in events() if r.type != "PersonalDataErased"]
    return [await writer.seal(r.envelope.model_copy(update={"actor": "sw@council.example.org"})) for r in recs]


async def test_one_walk_with_the_cached_key_opens_every_event_as_the_general_way_does():
    store = Keys()
    sealed = await sealed_log(store)
    assert sum(bool(envelope_kids(e)) for e in sealed) == len(sealed)  # every event has something sealed
    warm = PersonalData(store)
    for env in sealed:
        cold = await PersonalData(store).open(env)  # nothing cached: the general way
        await warm.prefetch([env.case_id])
        reads = store.reads
        opened = await warm.open(env)
        assert store.reads == reads  # the cached key was used, the store not asked
        assert opened == cold
        assert opened.actor == "sw@council.example.org" and not sealed_kids(opened.data)


async def test_a_value_sealed_with_an_earlier_key_reads_as_erased_beside_the_current_keys_values():
    # After an erasure a case may get a new key; a value sealed with the destroyed one must read as
    # erased even though a key for the case is cached.
    store = Keys()
    env = (await sealed_log(store))[0]  # a RequestSubmitted
    old = store.keys[env.case_id]
    new = store.keys[env.case_id] = DataKey.new()
    reader = PersonalData(store)
    await reader.prefetch([env.case_id])
    resealed_actor = env.model_copy(update={"actor": env.actor.replace(old.kid, new.kid, 1)})
    # the actor is sealed with the old key, under the new kid: it must not open with either
    with pytest.raises(UnreadableCiphertext):
        await reader.open(resealed_actor)
    opened = await reader.open(env)
    assert opened.actor == ERASED
    assert opened.data["requester"]["name"] == ERASED and opened.data["description"] == ERASED
    by_a_service = await reader.open(env.model_copy(update={"actor": "service:intake"}))  # only the data sealed
    assert by_a_service.data["requester"]["name"] == ERASED and by_a_service.data["description"] == ERASED


async def test_a_destroyed_key_in_the_history_wins_over_the_cache():
    store = Keys()
    env = (await sealed_log(store))[0]
    reader = PersonalData(store)
    await reader.prefetch([env.case_id])
    kid = store.keys[env.case_id].kid
    opened = await reader.open(env, destroyed=frozenset({kid}))
    assert opened.actor == ERASED and opened.data["requester"]["email"] == ERASED


async def test_a_value_that_decrypts_to_no_json_is_unreadable_not_a_crash():
    store = Keys()
    env = (await sealed_log(store))[0]
    key = store.keys[env.case_id]
    nonce = b"\0" * 12
    ct = key.cipher.encrypt(nonce, b"{not json", _aad(env.case_id, env.type, "description"))
    bad = {**env.data, "description": {"enc": "v1", "kid": key.kid, "nonce": _b64(nonce), "ct": _b64(ct)}}
    reader = PersonalData(store)
    await reader.prefetch([env.case_id])
    with pytest.raises(UnreadableCiphertext, match="description"):
        await reader.open(env.model_copy(update={"data": bad}))


async def test_a_replay_keeps_every_key_its_batch_prefetched():
    """A batch's cases' keys are fetched before its events are opened: a cache smaller than a batch
    would drop some first, and each of those would cost a round trip to the key store."""
    from rethink.shared.privacy import CACHE_SIZE, personal_data
    from rethink.shared.rebuild import BATCH
    from rethink.shared.settings import Settings

    store = Keys()
    cases = [f"RT-{n:010d}" for n in range(max(BATCH, CACHE_SIZE + 1))]
    for case_id in cases:
        await store.create(case_id)
    reader = personal_data(None, Settings(), BATCH)
    reader.store = store
    await reader.prefetch(cases[:BATCH])
    reads = store.reads
    assert all(reader._cached(c) is store.keys[c] for c in cases[:BATCH])
    assert store.reads == reads
