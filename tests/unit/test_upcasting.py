"""Schema evolution: an event written at v1 is read with the v2 model; the stored bytes never change."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from typing import ClassVar

import pytest

from rethink.shared import events as catalogue
from rethink.shared import upcasting
from rethink.shared.audit import verify_chain
from rethink.shared.envelope import InvalidEvent, Origin, Recorded, digest, stamp
from rethink.shared.events import ActionCompleted, Event
from tests.support import recorded


class ActionCompletedV2(Event):
    """v2 renames ``completed_on`` to ``completed_date`` and adds who confirmed it."""

    type: ClassVar[str] = "ActionCompleted"
    schema_version: ClassVar[int] = 2
    action_id: str
    completed_date: date
    confirmed_by: str = "not recorded"
    note: str | None = None


def _v1_to_v2(data: dict) -> dict:
    data["completed_date"] = data.pop("completed_on")
    return data


@pytest.fixture
def v2(monkeypatch):
    monkeypatch.setitem(catalogue.EVENT_TYPES, "ActionCompleted", ActionCompletedV2)
    monkeypatch.setitem(upcasting.UPCASTERS, ("ActionCompleted", 1), _v1_to_v2)


def _stored_v1_event(prev: Recorded | None = None) -> bytes:
    env = stamp(ActionCompleted(action_id="A1", completed_on=date(2026, 11, 20)), "RT-AAAAAAAAAA",
                Origin("meeting", "test", uuid.uuid4()), datetime.now(UTC), datetime.now(UTC), uuid.uuid4())
    if prev is not None:
        env = env.model_copy(update={"prev_event_id": prev.envelope.event_id, "prev_hash": prev.digest})
    return env.to_bytes()


def test_a_v1_event_is_read_as_v2_after_the_model_changes(v2):
    data = _stored_v1_event()
    event = Recorded.from_message(data, seq=1).payload
    assert isinstance(event, ActionCompletedV2)
    assert event.completed_date == date(2026, 11, 20) and event.confirmed_by == "not recorded"
    assert json.loads(data)["schema_version"] == 1  # the log keeps what was written


def test_the_hash_chain_still_verifies_after_the_model_changes(v2):
    first = recorded(ActionCompleted(action_id="A0", completed_on=date(2026, 11, 19)), seq=1)
    data = _stored_v1_event(prev=first)
    again = Recorded.from_message(data, seq=2)
    assert again.digest == digest(data)
    assert verify_chain("RT-AAAAAAAAAA", [first, again]).intact


def test_an_event_from_a_newer_version_is_refused_clearly():
    data = _stored_v1_event()
    newer = json.loads(data)
    newer["schema_version"] = 9
    with pytest.raises(InvalidEvent, match="newer Re-think"):
        Recorded.from_message(json.dumps(newer).encode(), seq=1)


def test_a_missing_upcaster_is_named(monkeypatch):
    monkeypatch.setitem(catalogue.EVENT_TYPES, "ActionCompleted", ActionCompletedV2)
    data = _stored_v1_event()
    with pytest.raises(InvalidEvent, match="no upcaster for ActionCompleted v1 -> v2"):
        Recorded.from_message(data, seq=1)


def test_upcasters_chain_one_version_step_at_a_time():
    steps = {("X", 1): lambda d: {**d, "b": d["a"]}, ("X", 2): lambda d: {"c": d["b"] * 2}}
    assert upcasting.upcast("X", 1, {"a": 2}, current=3, registry=steps) == {"c": 4}
