"""The types a projection declares ``UNOPENED`` (its writes read none of their personal fields) are
replayed without opening any: sealed, then decoded as ``EventLog.decode_unopened`` does, every
event of the interleaved test log writes exactly what it writes opened, and a whole log so decoded
leaves every table as the opened events applied one at a time do (SQLite and PostgreSQL).

The comparisons would catch a declaration that is wrong: every declared type occurs in the log
with personal values of its own, and for each type a projection does open, erasing them changes
what it writes (so reading them as erased is seen).
"""

from __future__ import annotations

import importlib

import pytest

from rethink.shared.eventlog import EventLog
from rethink.shared.events import ERASED, EVENT_TYPES
from rethink.shared.fieldcrypt import DataKey, erase_sealed, personal_paths, seal, sealed_kids
from rethink.shared.privacy import ERASURE
from rethink.shared.projection import ProjectionStore, Unread
from rethink.shared.settings import SERVICES
from rethink.shared.upcasting import UPCASTERS
from tests.support import recorded
from tests.unit import test_projection_batches as batches

KEYS = {}
NOTES = {  # personal values the test log leaves out (all optional notes), so that they are compared too
    "ChecksConfirmed": lambda e: e.model_copy(update={"checks": e.checks.model_copy(update={
        "conversation_had": e.checks.conversation_had.model_copy(update={"note": "Spoke to Mum on Tuesday."})})}),
    "ActionCompleted": lambda e: e.model_copy(update={"note": "Done with the school's help."}),
    "CaseClosed": lambda e: e.model_copy(update={"note": "The network agreed a plan."})
    if e.reason == "agreed_by_network" else e,
}


def events():
    """The interleaved test log, with every optional personal value given."""
    return [recorded(NOTES[r.type](r.payload), case_id=r.envelope.case_id, seq=r.seq, producer="police",
                     at=r.envelope.occurred_at) if r.type in NOTES else r for r in batches.events()]


def sealed(r):
    """The event as the log stores it: personal values sealed with its case's key."""
    key = KEYS.setdefault(r.envelope.case_id, DataKey.new())
    env = r.envelope
    return env.model_copy(update={"data": seal(env.data, env.case_id, env.type, key)}).to_bytes()


def unopened(r):
    return EventLog.decode_unopened(sealed(r), r.seq)


def writes(module, r):
    return [(statement, params, scopes) for statement, params, scopes in module.plan("sqlite", r)]


@pytest.mark.parametrize("service", SERVICES)
def test_a_type_declared_unopened_writes_the_same_without_its_personal_fields_opened(service):
    module = importlib.import_module(f"rethink.{service}.projection")
    declared = module.UNOPENED
    assert ERASURE not in declared  # reading an erasure makes the key cache forget its case
    recs = events()
    for kind in declared:
        of_kind = [r for r in recs if r.type == kind]
        assert of_kind, f"{kind} is not in the test log: add it, or this test checks nothing for it"
        if personal_paths(kind):
            # Some of its events carry personal values, sealed in the log: the comparison reads them.
            assert any(sealed_kids(EventLog.decode_unopened(sealed(r), r.seq).envelope.data) for r in of_kind), kind
        for r in of_kind:
            assert writes(module, unopened(r)) == writes(module, r), (kind, r.seq)


@pytest.mark.parametrize("service", SERVICES)
def test_each_type_a_projection_opens_writes_some_personal_value(service):
    """The converse: a type opened although its writes read nothing personal would cost a rebuild
    its decryption for nothing (and shows this test's comparison does see an erased value)."""
    module = importlib.import_module(f"rethink.{service}.projection")
    handled = module.HANDLES if module.HANDLES is not None else frozenset(EVENT_TYPES)
    for kind in handled - module.UNOPENED - {ERASURE}:
        of_kind = [r for r in events() if r.type == kind]
        assert of_kind, kind
        assert any(writes(module, unopened(r)) != writes(module, r) for r in of_kind), kind


@pytest.mark.parametrize("service", SERVICES)
def test_no_upcaster_reads_a_declared_type_s_data(service):
    """An old event is upcast from the data as decoded: unopened, its personal values are erased
    there. The test log has no old events, so the comparisons above would not see an upcaster that
    derives a field from one; an upcaster for a declared type must be checked, and this relaxed."""
    module = importlib.import_module(f"rethink.{service}.projection")
    assert not [key for key in UPCASTERS if key[0] in module.UNOPENED]


def test_an_unopened_event_reads_as_an_erased_one_and_never_as_ciphertext():
    r = next(r for r in events() if r.type == "MeetingHeld")
    decoded = unopened(r)
    assert decoded.payload.attendees[0].name == ERASED and decoded.payload.stages.strengths == ERASED
    assert decoded.payload.meeting_id == r.payload.meeting_id and decoded.payload.held_at == r.payload.held_at
    assert len(decoded.payload.attendees) == len(r.payload.attendees)
    assert not sealed_kids(erase_sealed(decoded.envelope.data))
    assert decoded.opened is None and decoded.digest == ""


def test_an_erasure_is_never_decoded_unopened():
    erasure = next(r for r in events() if r.type == ERASURE)
    with pytest.raises(ValueError):
        EventLog.decode_unopened(erasure.envelope.to_bytes(), erasure.seq)
    with pytest.raises(ValueError):
        ProjectionStore(None, None, "x", plan=lambda *_: (), unopened={ERASURE})  # type: ignore[arg-type]


@pytest.mark.parametrize("service", SERVICES)
def test_a_log_replayed_with_its_unopened_types_unopened_leaves_the_projection_as_opened_events_do(
        projection_db, service):
    """As ``replay_into`` hands them over: outside ``HANDLES`` undecoded, ``UNOPENED`` types decoded
    unopened from their sealed bytes, the rest opened; one batch, and batches of four."""
    store = projection_db(service)
    recs = events()
    for r in recs:
        assert store.apply(r) is True
    one_by_one = batches.rows(store)
    assert all(one_by_one.values()), one_by_one

    def as_replayed(r):
        if store.handles is not None and r.type not in store.handles and r.type != ERASURE:
            return Unread(r.seq, r.envelope.case_id, r.type) if store.plan_unread is not None else None
        return unopened(r) if r.type in store.unopened else r

    replayed = [x for x in map(as_replayed, recs) if x is not None]
    assert any(r.type in store.unopened for r in replayed if not isinstance(r, Unread))
    for size in (len(replayed), 4):
        store.reset()
        for i in range(0, len(replayed), size):
            store.apply_batch(replayed[i:i + size], through=recs[-1].seq if i + size >= len(replayed) else 0)
        assert batches.rows(store) == one_by_one, size
        assert store.last_seq() == recs[-1].seq
