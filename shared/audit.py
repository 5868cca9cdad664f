"""Tamper evidence: each case's events form a hash chain; this finds where it breaks and how.

Every event records the id and the SHA-256 of the stored bytes of the case's previous event.
Walking the case in stream order, each event must point at the last event of the chain so
far (its *tail*). Where one does not, what it points at tells what happened:

- at the tail, but the tail's bytes differ from what it recorded -> the tail was **altered**;
- at an event that is not in the log any more -> that event was **removed**;
- at an event found *later* in the log -> that event was deleted and published again:
  **reordered** if its bytes are unchanged, **altered** if not (it is reported once, here);
- at an earlier event that is not the tail, or at nothing although the case has begun ->
  a forged event: **inserted** (the chain carries on from the tail, without it).

What a chain alone cannot show: removing or rewriting a case's *last* event, since nothing
points at it yet. Anchors close that gap: an auditor keeps each case's head (event id and
digest) outside the log (`rethink audit anchor`), and verifying against them checks that the
anchored event is still there, unchanged.

Pure: histories in, a report out.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from .envelope import InvalidEvent, Recorded


@dataclass(frozen=True)
class Break:
    kind: str  # removed | altered | reordered | inserted | unreadable
    seq: int  # the stream sequence of the event where the chain breaks
    event_type: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "seq": self.seq, "event_type": self.event_type, "detail": self.detail}


@dataclass(frozen=True)
class ChainReport:
    case_id: str
    events: int
    breaks: list[Break] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.breaks

    def as_dict(self) -> dict[str, Any]:
        return {"case_id": self.case_id, "events": self.events, "intact": self.intact,
                "breaks": [b.as_dict() for b in self.breaks]}

    def one_line(self) -> str:
        if self.intact:
            return f"{self.case_id}: intact ({self.events} events)"
        first = self.breaks[0]
        more = f" (+{len(self.breaks) - 1} more)" if len(self.breaks) > 1 else ""
        return f"{self.case_id}: BROKEN at seq {first.seq} ({first.event_type}): {first.kind}: {first.detail}{more}"


@dataclass(frozen=True)
class Anchor:
    """A case's head as an auditor saw it, kept outside the log."""

    event_id: str
    digest: str
    seq: int
    anchored_at: str

    @classmethod
    def of(cls, head: Recorded | Link, at: str) -> Anchor:
        link = head if isinstance(head, Link) else Link.of(head)
        return cls(str(link.event_id), link.digest, link.seq, at)


@dataclass(frozen=True, slots=True)
class Link:
    """What the chain reads of one event: its id, what it points at, the digest of its bytes."""

    event_id: uuid.UUID
    prev_event_id: uuid.UUID | None
    prev_hash: str | None
    digest: str
    seq: int
    type: str

    @classmethod
    def of(cls, r: Recorded) -> Link:
        env = r.envelope
        return cls(env.event_id, env.prev_event_id, env.prev_hash, r.digest, r.seq, env.type)


class ChainWalk:
    """One case's chain, an event at a time in stream order, for reading the whole log in one pass.

    Only the last event is kept. While each event points at the one before it with that event's
    digest, the chain is whole, and ``verify_chain`` of the same history would find no break (its
    first event points at nothing, each next at the tail). At the first event that does anything
    else, or that cannot be read, the walk stops judging (``whole`` False): classifying a break needs
    the case's whole history, looking ahead (an event deleted and published again is found later),
    so the caller reads that case in full and asks ``verify_stored``. Breaks are rare; memory stays
    one event per case, not one per event.
    """

    __slots__ = ("anchor_id", "anchored_digest", "events", "last", "readable", "whole")

    def __init__(self, anchor: Anchor | None = None) -> None:
        # Compared as a UUID: a string made of each event's id cost more than the rest of the walk.
        self.anchor_id = _uuid_or_none(anchor.event_id) if anchor is not None else None
        self.anchored_digest: str | None = None  # of the anchored event, as first found
        self.events = 0
        self.last: Link | None = None  # of the events that could be read
        self.readable = True
        self.whole = True

    def add(self, link: Link) -> None:
        if self.whole:
            tail = self.last
            self.whole = (link.prev_event_id is None if tail is None
                          else link.prev_event_id == tail.event_id and link.prev_hash == tail.digest)
        if self.anchored_digest is None and self.anchor_id is not None and link.event_id == self.anchor_id:
            self.anchored_digest = link.digest
        self.events += 1
        self.last = link

    def unreadable(self) -> None:
        self.events += 1
        self.readable = self.whole = False

    def report(self, case_id: str, anchor: Anchor | None = None) -> ChainReport | None:
        """The case's report when the walk can give it (whole, and its anchor found unchanged); else None."""
        if not self.whole or self.last is None:
            return None
        if anchor is not None and self.anchored_digest != anchor.digest:
            return None
        return ChainReport(case_id, self.events)


def _uuid_or_none(text: str) -> uuid.UUID | None:
    """An anchor's event id as the log's ids are read; None unless written as ``verify_chain``
    matches it (the id's usual lowercase text): then no event is it, for either."""
    try:
        parsed = uuid.UUID(text)
    except ValueError:
        return None
    return parsed if str(parsed) == text else None


def verify_chain(case_id: str, history: list[Recorded], anchor: Anchor | None = None) -> ChainReport:
    report = _verify_links(case_id, history)
    if anchor is None:
        return report
    held = next((r for r in history if str(r.envelope.event_id) == anchor.event_id), None)
    if held is None:
        report.breaks.append(Break("removed", anchor.seq, "?", f"the event anchored as the case's head on "
                                                               f"{anchor.anchored_at} is missing from the log"))
    elif held.digest != anchor.digest:
        report.breaks.append(Break("altered", held.seq, held.type, f"the event anchored as the case's head on "
                                                                   f"{anchor.anchored_at} has changed"))
    return report


def verify_stored(case_id: str, stored: list[tuple[bytes, int]], anchor: Anchor | None = None) -> ChainReport:
    """``verify_chain`` of a case's stored messages (bytes, stream sequence), each that cannot be
    read as an event reported where it stands (``unreadable``) and the chain checked without it:
    so the event after it reads as following a ``removed`` one, which to the chain it is."""
    history, unreadable = [], []
    for data, seq in stored:
        try:
            history.append(Recorded.sealed(data, seq))
        except InvalidEvent as exc:
            unreadable.append(Break("unreadable", seq, "?", f"it cannot be read as an event ({exc})"))
    report = verify_chain(case_id, history, anchor)
    return ChainReport(case_id, len(stored), sorted(report.breaks + unreadable, key=lambda b: b.seq))


def _verify_links(case_id: str, history: list[Recorded]) -> ChainReport:
    position = {r.envelope.event_id: i for i, r in enumerate(history)}
    breaks: list[Break] = []
    moved: set[Any] = set()  # events found again later, already reported where they were missed
    tail: Recorded | None = None
    for i, r in enumerate(history):
        env = r.envelope
        if env.event_id in moved:
            continue

        def brk(kind: str, detail: str, r: Recorded = r) -> None:
            breaks.append(Break(kind, r.seq, r.type, detail))

        if tail is not None and env.prev_event_id == tail.envelope.event_id:
            if env.prev_hash != tail.digest:
                brk("altered", f"the event before it (seq {tail.seq}, {tail.type}) is not the one it "
                               "recorded: its content or envelope changed")
            tail = r
            continue
        if env.prev_event_id is None:
            if tail is None:
                tail = r
            else:
                brk("inserted", "a forged event claiming to be the case's first, after other events")
            continue
        j = position.get(env.prev_event_id)
        if j is None:
            brk("removed", f"the event it follows ({env.prev_event_id}) is missing from the log")
            tail = r
        elif j > i:
            pointed = history[j]
            same = pointed.digest == env.prev_hash
            brk("reordered" if same else "altered",
                f"the event it follows (seq {pointed.seq}, {pointed.type}) was deleted and published again "
                + ("unchanged, after it" if same else "with different content, after it"))
            moved.add(env.prev_event_id)
            tail = r
        else:
            brk("inserted", f"a forged event: it points back at seq {history[j].seq} ({history[j].type}), "
                            f"not at the chain's last event" + (f" (seq {tail.seq})" if tail else ""))
    return ChainReport(case_id, len(history), breaks)
