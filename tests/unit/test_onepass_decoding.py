"""A rebuild's one-pass decoding (``rethink.shared.onepass``) reads every message exactly as the slow
path does: unopened (``EventLog.decode_unopened`` without the subject's type) and opened
(``EventLog.decode``): the same payload, the same envelope but its data (for an opened event, the
one shown to people), the same refusals; and it is the path taken for the messages our services
write, so the comparison is not of the slow path with itself.
"""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from rethink.shared import onepass
from rethink.shared.envelope import InvalidEvent
from rethink.shared.eventlog import EventLog, Subjects
from rethink.shared.events import ERASED, EVENT_TYPES, MeetingCancelled
from rethink.shared.fieldcrypt import DataKey, personal_paths, seal_text
from rethink.shared.privacy import ACTOR, ERASURE, PersonalData
from rethink.shared.upcasting import UPCASTERS
from tests.unit.test_unopened_types import KEYS, events, sealed

STORED = [(r.type, sealed(r), r.seq) for r in events() if r.type != ERASURE]


def outcome(data: bytes, seq: int, kind: str | None):
    """What decoding gives: the payload and envelope (its data aside), or the refusal's class."""
    try:
        r = EventLog.decode_unopened(data, seq, kind)
    except InvalidEvent as exc:
        return type(exc)
    return r.seq, r.payload, r.envelope.model_dump(exclude={"data"}), r.digest, r.opened


def test_every_type_of_the_test_log_occurs_sealed():
    kinds = {kind for kind, _, _ in STORED}
    assert kinds == set(EVENT_TYPES) - {ERASURE}
    with_personal = {kind for kind in kinds if personal_paths(kind)}
    assert {kind for kind, data, _ in STORED if b'"enc":"v1"' in data} == with_personal
    assert len(with_personal) > 10


@pytest.mark.parametrize(("kind", "data", "seq"), STORED, ids=[f"{k}-{s}" for k, _, s in STORED])
def test_each_stored_event_decodes_in_one_pass_to_what_the_slow_path_gives(kind, data, seq):
    fast = onepass.decode_unopened(data, seq, kind)
    assert fast is not None  # the fast path is the one taken
    assert outcome(data, seq, kind) == outcome(data, seq, None)
    assert fast.envelope.data == {}  # its data is in the payload only


def test_a_subject_naming_another_type_is_left_to_the_slow_path():
    kind, data, seq = next(s for s in STORED if s[0] == "MeetingHeld")
    assert onepass.decode_unopened(data, seq, "MeetingCancelled") is None
    assert onepass.decode_unopened(data, seq, "NoSuchType") is None
    assert outcome(data, seq, "MeetingCancelled") == outcome(data, seq, None)


def test_an_erasure_is_never_decoded_unopened_even_in_one_pass():
    erasure = next(r for r in events() if r.type == ERASURE)
    data = erasure.envelope.to_bytes()
    assert onepass.decode_unopened(data, erasure.seq, ERASURE) is None
    with pytest.raises(InvalidEvent, match="not opened"):
        EventLog.decode_unopened(data, erasure.seq, ERASURE)


def test_an_event_of_another_schema_version_is_upcast_as_before(monkeypatch):
    """Written as v1 of a class now at v2: the upcaster decides what it reads as, so not this path."""
    kind, data, seq = next(s for s in STORED if s[0] == "MeetingCancelled")
    monkeypatch.setattr(MeetingCancelled, "schema_version", 2)
    monkeypatch.setitem(UPCASTERS, ("MeetingCancelled", 1), lambda d: {**d, "meeting_id": "M-UPCAST01"})
    assert onepass.decode_unopened(data, seq, kind) is None
    assert outcome(data, seq, kind) == outcome(data, seq, None)
    assert outcome(data, seq, kind)[1].meeting_id == "M-UPCAST01"
    newer = json.loads(data)
    newer["schema_version"] = 3
    assert outcome(json.dumps(newer).encode(), seq, kind) == InvalidEvent


def test_a_sealed_value_written_otherwise_is_erased_the_slow_way():
    kind, data, seq = next(s for s in STORED if s[0] == "MeetingHeld")
    spaced = json.dumps(json.loads(data)).encode()  # ", " and ": ": the pattern matches no sealed value
    reordered = data.replace(b'{"enc":"v1","kid":', b'{"kid":').replace(b',"nonce":', b',"enc":"v1","nonce":')
    for variant in (spaced, reordered):
        assert onepass.decode_unopened(variant, seq, kind) is None
        assert outcome(variant, seq, kind) == outcome(data, seq, kind)


def test_text_that_looks_sealed_inside_a_string_is_left_as_it_is():
    kind, data, seq = next(s for s in STORED if s[0] == "MeetingCancelled")
    lookalike = '{"enc":"v1","kid":"abc","nonce":"AAAA","ct":"AAAA"}'
    env = json.loads(data)
    env["producer"] = lookalike
    forged = json.dumps(env, separators=(",", ":")).encode()
    fast = onepass.decode_unopened(forged, seq, kind)
    assert fast is not None and fast.envelope.producer == lookalike
    assert outcome(forged, seq, kind) == outcome(forged, seq, None)


def altered_copies(stored, per_message: int):
    """Each message ``per_message`` times with bytes changed, cut or inserted at random (hostile
    input), with the seed to name on failure."""
    seed = random.randrange(2**32)
    rnd = random.Random(seed)
    alphabet = b'{}[]",:0123456789abcdefv\\ enctkidnoce'
    for kind, data, seq in stored:
        for _ in range(per_message):
            raw = bytearray(data)
            at = rnd.randrange(len(raw))
            change = rnd.randrange(3)
            if change == 0:
                raw[at] = rnd.choice(alphabet)
            elif change == 1:
                del raw[at:at + rnd.randrange(1, 40)]
            else:
                raw[at:at] = bytes(rnd.choice(alphabet) for _ in range(rnd.randrange(1, 8)))
            yield seed, kind, bytes(raw), seq


def test_altered_messages_read_the_same_both_ways():
    """Every outcome, a payload or a refusal, is the slow path's."""
    tried = 0
    for seed, kind, raw, seq in altered_copies(STORED, 12):
        assert outcome(raw, seq, kind) == outcome(raw, seq, None), f"seed {seed}"
        tried += 1
    assert tried == 12 * len(STORED)


# Opened: every sealed value opened with its case's key, when that key is in hand.

ACTOR_PERSON = "Alex Social, Children's Social Care"


class _Keys:
    """The cases' keys as a key store gives them (the cache starts empty)."""

    def __init__(self, keys):
        self.keys = keys

    async def get(self, case_id):
        return self.keys.get(case_id)


def a_log(keys=None, warm: bool = True) -> EventLog:
    """A log reading with these keys; ``warm``: every case's key in hand, as a replay prefetches them."""
    keys = KEYS if keys is None else keys
    personal = PersonalData(_Keys(keys))
    if warm:
        asyncio.run(personal.prefetch(keys))
    return EventLog(None, "S", Subjects("t"), personal=personal)


def sealed_with_actor(r) -> bytes:
    """Stored as a person acting writes it: the payload's personal values and the actor sealed."""
    env = json.loads(sealed(r))
    env["actor"] = seal_text(ACTOR_PERSON, r.envelope.case_id, r.type, ACTOR, KEYS[r.envelope.case_id])
    return json.dumps(env, separators=(",", ":")).encode()


OPENED = [(r.type, sealed_with_actor(r), r.seq) for r in events() if r.type != ERASURE]


def opened_outcome(log: EventLog, data: bytes, seq: int, kind: str | None):
    """What decoding gives: the payload and the envelope shown to people (its data aside), or the
    refusal's class. ``kind`` None: the slow way (``EventLog.decode``)."""
    try:
        if kind is None:
            r = asyncio.run(log.decode([(data, seq)]))[0]
        else:
            r = asyncio.run(log.decode_for_projection(data, seq, kind))
    except InvalidEvent as exc:
        return type(exc)
    return r.seq, r.payload, r.shown.model_dump(exclude={"data"})


def in_hand(keys):
    return lambda case_id: keys.get(case_id)


@pytest.mark.parametrize(("kind", "data", "seq"), OPENED, ids=[f"{k}-{s}" for k, _, s in OPENED])
def test_each_stored_event_opens_in_one_pass_to_what_the_slow_path_gives(kind, data, seq):
    fast = onepass.decode_opened(data, seq, kind, in_hand(KEYS))
    assert fast is not None  # the fast path is the one taken
    assert ACTOR_PERSON == fast.envelope.actor
    assert opened_outcome(a_log(), data, seq, kind) == opened_outcome(a_log(), data, seq, None)
    assert fast.envelope.data == {} and fast.digest == "" and fast.opened is None  # for a projection's writes only


def test_opening_some_personal_values_shows_them_in_clear():
    kind, data, seq = next(s for s in OPENED if s[0] == "ActionRecorded")
    fast = onepass.decode_opened(data, seq, kind, in_hand(KEYS))
    assert fast is not None and fast.payload.description.startswith("Action ")
    assert str(fast.payload.owner.email).endswith("example.org")


def test_a_key_not_in_hand_is_left_to_the_slow_path_which_fetches_it():
    kind, data, seq = next(s for s in OPENED if s[0] == "MeetingScheduled")
    assert onepass.decode_opened(data, seq, kind, lambda _case: None) is None
    log = a_log(warm=False)  # nothing in hand: decode_for_projection goes the slow way, which fetches the key
    assert opened_outcome(log, data, seq, kind) == opened_outcome(a_log(), data, seq, None)
    assert log.personal.key_in_hand(json.loads(data)["case_id"]) is not None


def test_a_value_sealed_with_another_key_is_left_to_the_slow_path():
    """After an erasure a case has a new key; its earlier events' values read as erased."""
    kind, data, seq = next(s for s in OPENED if s[0] == "FacilitatorAssigned")
    case = json.loads(data)["case_id"]
    newer = {**KEYS, case: DataKey.new()}
    assert onepass.decode_opened(data, seq, kind, in_hand(newer)) is None
    got = opened_outcome(a_log(newer), data, seq, kind)
    assert got == opened_outcome(a_log(newer), data, seq, None)
    assert got[1].facilitator_name == ERASED


def test_an_altered_ciphertext_is_refused_as_the_slow_path_refuses_it():
    kind, data, seq = next(s for s in OPENED if s[0] == "ActionRecorded")
    env = json.loads(data)
    ct = env["data"]["description"]["ct"]
    env["data"]["description"]["ct"] = ("B" if ct[0] != "B" else "C") + ct[1:]
    altered = json.dumps(env, separators=(",", ":")).encode()
    assert onepass.decode_opened(altered, seq, kind, in_hand(KEYS)) is None
    assert opened_outcome(a_log(), altered, seq, kind) == InvalidEvent == opened_outcome(a_log(), altered, seq, None)


def test_an_erasure_and_other_types_than_the_subject_s_are_left_to_the_slow_path():
    erasure = next(r for r in events() if r.type == ERASURE)
    assert onepass.decode_opened(sealed(erasure), erasure.seq, ERASURE, in_hand(KEYS)) is None
    kind, data, seq = next(s for s in OPENED if s[0] == "MeetingHeld")
    assert onepass.decode_opened(data, seq, "MeetingCancelled", in_hand(KEYS)) is None
    assert opened_outcome(a_log(), data, seq, "MeetingCancelled") == opened_outcome(a_log(), data, seq, None)


def test_altered_messages_open_the_same_both_ways():
    tried = 0
    for seed, kind, raw, seq in altered_copies(OPENED, 6):
        assert opened_outcome(a_log(), raw, seq, kind) == opened_outcome(a_log(), raw, seq, None), f"seed {seed}"
        tried += 1
    assert tried == 6 * len(OPENED)


def test_a_sealed_value_naming_no_key_makes_the_event_unreadable_both_ways():
    """An altered log (a key id that is not a string) is an unreadable event, never a reader's error."""
    kind, data, seq = next(s for s in OPENED if s[0] == "ActionRecorded")
    env = json.loads(data)
    env["data"]["description"]["kid"] = ["not", "a", "key id"]
    bad = json.dumps(env, separators=(",", ":")).encode()
    assert onepass.decode_opened(bad, seq, kind, in_hand(KEYS)) is None
    assert opened_outcome(a_log(), bad, seq, kind) == InvalidEvent == opened_outcome(a_log(), bad, seq, None)
    erasure = next(r for r in events() if r.type == ERASURE)
    env = json.loads(sealed(erasure))
    env["data"]["kid"] = ["x"]
    with pytest.raises(InvalidEvent):
        asyncio.run(a_log().decode([(json.dumps(env).encode(), erasure.seq)]))
