"""A rebuild's one-pass decoding of an event read unopened (``rethink.shared.unopened``) reads every
message exactly as the slow path does (``EventLog.decode_unopened`` without the subject's type):
the same payload, the same envelope but its data, the same refusals; and it is the path taken for
the messages our services write, so the comparison is not of the slow path with itself.
"""

from __future__ import annotations

import json
import random

import pytest

from rethink.shared import unopened
from rethink.shared.envelope import InvalidEvent
from rethink.shared.eventlog import EventLog
from rethink.shared.events import EVENT_TYPES, MeetingCancelled
from rethink.shared.fieldcrypt import personal_paths
from rethink.shared.privacy import ERASURE
from rethink.shared.upcasting import UPCASTERS
from tests.unit.test_unopened_types import events, sealed

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
    fast = unopened.decode(data, seq, kind)
    assert fast is not None  # the fast path is the one taken
    assert outcome(data, seq, kind) == outcome(data, seq, None)
    assert fast.envelope.data == {}  # its data is in the payload only


def test_a_subject_naming_another_type_is_left_to_the_slow_path():
    kind, data, seq = next(s for s in STORED if s[0] == "MeetingHeld")
    assert unopened.decode(data, seq, "MeetingCancelled") is None
    assert unopened.decode(data, seq, "NoSuchType") is None
    assert outcome(data, seq, "MeetingCancelled") == outcome(data, seq, None)


def test_an_erasure_is_never_decoded_unopened_even_in_one_pass():
    erasure = next(r for r in events() if r.type == ERASURE)
    data = erasure.envelope.to_bytes()
    assert unopened.decode(data, erasure.seq, ERASURE) is None
    with pytest.raises(InvalidEvent, match="not opened"):
        EventLog.decode_unopened(data, erasure.seq, ERASURE)


def test_an_event_of_another_schema_version_is_upcast_as_before(monkeypatch):
    """Written as v1 of a class now at v2: the upcaster decides what it reads as, so not this path."""
    kind, data, seq = next(s for s in STORED if s[0] == "MeetingCancelled")
    monkeypatch.setattr(MeetingCancelled, "schema_version", 2)
    monkeypatch.setitem(UPCASTERS, ("MeetingCancelled", 1), lambda d: {**d, "meeting_id": "M-UPCAST01"})
    assert unopened.decode(data, seq, kind) is None
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
        assert unopened.decode(variant, seq, kind) is None
        assert outcome(variant, seq, kind) == outcome(data, seq, kind)


def test_text_that_looks_sealed_inside_a_string_is_left_as_it_is():
    kind, data, seq = next(s for s in STORED if s[0] == "MeetingCancelled")
    lookalike = '{"enc":"v1","kid":"abc","nonce":"AAAA","ct":"AAAA"}'
    env = json.loads(data)
    env["producer"] = lookalike
    forged = json.dumps(env, separators=(",", ":")).encode()
    fast = unopened.decode(forged, seq, kind)
    assert fast is not None and fast.envelope.producer == lookalike
    assert outcome(forged, seq, kind) == outcome(forged, seq, None)


def test_altered_messages_read_the_same_both_ways():
    """Bytes changed, cut or swapped at random (hostile input): every outcome, a payload or a refusal,
    is the slow path's."""
    seed = random.randrange(2**32)
    rnd = random.Random(seed)
    alphabet = b'{}[]",:0123456789abcdefv\\ enctkidnoce'
    tried = 0
    for kind, data, seq in STORED:
        for _ in range(12):
            raw = bytearray(data)
            at = rnd.randrange(len(raw))
            change = rnd.randrange(3)
            if change == 0:
                raw[at] = rnd.choice(alphabet)
            elif change == 1:
                del raw[at:at + rnd.randrange(1, 40)]
            else:
                raw[at:at] = bytes(rnd.choice(alphabet) for _ in range(rnd.randrange(1, 8)))
            assert outcome(bytes(raw), seq, kind) == outcome(bytes(raw), seq, None), f"seed {seed}"
            tried += 1
    assert tried == 12 * len(STORED)
