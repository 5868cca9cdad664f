"""Escalation's rules: raising, advancing and resolving an escalation, and closing a case.

Pure: no I/O, no clock. Decisions take the case's history (and ``today``, a date in
England) and return event payloads or raise ``Rejected``. The policy and the bank-holiday
calendar are data passed in as :class:`Rules`.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Container
from dataclasses import dataclass, field
from datetime import date

from pydantic import Field

from rethink.shared.commands import CaseCommand, case_not_found
from rethink.shared.envelope import Recorded
from rethink.shared.errors import rejected
from rethink.shared.events import (
    ActionCompleted,
    ActionOverdue,
    CaseClosed,
    EscalationRaised,
    EscalationResolved,
    EscalationStageAdvanced,
    EscalationTrigger,
    Event,
    MeetingHeld,
    Outcome,
    PersonalText,
    RequestSubmitted,
)

from .policy import Policy, Stage
from .workdays import add_working_days

FASTER = Field(default=None, description="Optional: a deadline earlier than the policy's, when the child needs it "
                                         "(today or later).")


class RaiseEscalation(CaseCommand):
    reason: PersonalText
    faster_deadline: date | None = FASTER


class AdvanceEscalation(CaseCommand):
    reason: PersonalText
    faster_deadline: date | None = FASTER


class ResolveEscalation(CaseCommand):
    resolution: PersonalText


class CloseCase(CaseCommand):
    note: PersonalText = Field(description="What the network agreed: why nothing more is needed.")


@dataclass(frozen=True)
class Rules:
    """The partnership's policy and the working-day calendar its deadlines are counted in."""

    policy: Policy
    holidays: Container[date]

    def deadline(self, stage: Stage, today: date, faster: date | None = None) -> date:
        by_policy = add_working_days(today, stage.working_days, self.holidays)
        if faster is None:
            return by_policy
        if faster < today:
            raise rejected("faster_deadline", f"must be today ({today.isoformat()}) or later")
        if faster >= by_policy:
            raise rejected("faster_deadline", f"must be earlier than the policy deadline {by_policy.isoformat()} "
                                              f"for stage {stage.stage}; leave it out to use the policy's")
        return faster


@dataclass(frozen=True)
class OpenEscalation:
    escalation_id: str
    stage: int


@dataclass
class CaseState:
    has_request: bool = False
    closed_reason: str | None = None
    open: OpenEscalation | None = None
    last_meeting: MeetingHeld | None = None
    last_meeting_event: uuid.UUID | None = None
    completed_actions: set[str] = field(default_factory=set)

    @property
    def closed(self) -> bool:
        return self.closed_reason is not None

    def meeting_resolved_and_done(self) -> bool:
        """The latest meeting resolved the matter and every action it agreed is complete."""
        m = self.last_meeting
        return (m is not None and m.outcome == Outcome.RESOLVED
                and all(a.action_id in self.completed_actions for a in m.actions))


def state_of(history: list[Recorded]) -> CaseState:
    s = CaseState()
    for r in history:
        e = r.payload
        if isinstance(e, RequestSubmitted):
            s.has_request = True
        elif isinstance(e, MeetingHeld):
            s.last_meeting, s.last_meeting_event = e, r.envelope.event_id
        elif isinstance(e, ActionCompleted):
            s.completed_actions.add(e.action_id)
        elif isinstance(e, (EscalationRaised, EscalationStageAdvanced)):
            s.open = OpenEscalation(e.escalation_id, e.stage)
        elif isinstance(e, EscalationResolved):
            s.open = None
        elif isinstance(e, CaseClosed):
            s.closed_reason = e.reason
    return s


def escalation_id_for(seed: object) -> str:
    """A short, deterministic id: the same command or cause always names the same escalation."""
    return "E-" + hashlib.sha256(str(seed).encode()).hexdigest()[:8]


def _raised(rules: Rules, today: date, escalation_id: str, trigger: EscalationTrigger, reason: str,
            faster: date | None = None) -> EscalationRaised:
    first = rules.policy.stage(1)
    return EscalationRaised(
        escalation_id=escalation_id, trigger=trigger, stage=first.stage, stage_name=first.name,
        holder=first.holder, deadline=rules.deadline(first, today, faster), reason=reason,
    )


def decide_raise(history: list[Recorded], cmd: RaiseEscalation, rules: Rules, today: date,
                 escalation_id: str) -> list[Event]:
    if not history:
        raise case_not_found(cmd.case_id)
    s = state_of(history)
    if not s.has_request:
        raise rejected("case_id", f"case {cmd.case_id} has no Re-think request to escalate")
    if s.closed:
        raise rejected("case_id", f"case {cmd.case_id} is closed ({s.closed_reason})")
    if s.open is not None:
        raise rejected("case_id", f"escalation {s.open.escalation_id} is already open at stage {s.open.stage}; "
                                  "advance it instead of raising another")
    return [_raised(rules, today, escalation_id, EscalationTrigger.PROFESSIONAL, cmd.reason, cmd.faster_deadline)]


def _open_escalation(history: list[Recorded], case_id: str) -> OpenEscalation:
    if not history:
        raise case_not_found(case_id)
    s = state_of(history)
    if s.open is None:
        closed = f"; the case is closed ({s.closed_reason})" if s.closed else ""
        raise rejected("case_id", f"case {case_id} has no open escalation{closed}")
    return s.open


def decide_advance(history: list[Recorded], cmd: AdvanceEscalation, rules: Rules, today: date) -> list[Event]:
    current = _open_escalation(history, cmd.case_id)
    if current.stage >= rules.policy.last_stage:
        raise rejected("case_id", f"stage {current.stage} is the last stage of the policy; "
                                  "resolve the escalation when the partnership meeting has decided")
    nxt = rules.policy.stage(current.stage + 1)
    return [EscalationStageAdvanced(
        escalation_id=current.escalation_id, from_stage=current.stage, stage=nxt.stage, stage_name=nxt.name,
        holder=nxt.holder, deadline=rules.deadline(nxt, today, cmd.faster_deadline), reason=cmd.reason,
    )]


def decide_resolve(history: list[Recorded], cmd: ResolveEscalation) -> list[Event]:
    current = _open_escalation(history, cmd.case_id)
    return [EscalationResolved(escalation_id=current.escalation_id, stage=current.stage, resolution=cmd.resolution)]


def decide_close(history: list[Recorded], cmd: CloseCase) -> list[Event]:
    """A partly resolved meeting ends only by a person's decision: escalate, or agree it is done.

    Closing is allowed once the latest meeting's actions are all complete and no escalation is
    open. A resolved meeting closes by itself at that point; an unresolved one escalates.
    """
    if not history:
        raise case_not_found(cmd.case_id)
    s = state_of(history)
    if s.closed:
        raise rejected("case_id", f"case {cmd.case_id} is already closed ({s.closed_reason})")
    if s.open is not None:
        raise rejected("case_id", f"escalation {s.open.escalation_id} is open at stage {s.open.stage}; "
                                  "resolve it instead (that closes the case)")
    m = s.last_meeting
    if m is None:
        raise rejected("case_id", f"case {cmd.case_id} has had no Re-think meeting yet")
    if m.outcome != Outcome.PARTLY_RESOLVED:
        raise rejected("case_id", f"the latest meeting's outcome is {m.outcome.value}: only a partly resolved "
                                  "case is closed by agreement (a resolved one closes itself, an unresolved "
                                  "one escalates)")
    pending = sorted(a.action_id for a in m.actions if a.action_id not in s.completed_actions)
    if pending:
        raise rejected("case_id", f"actions not yet complete: {', '.join(pending)}")
    return [CaseClosed(reason="agreed_by_network", note=cmd.note)]


def react(history: list[Recorded], cause: Recorded, rules: Rules, today: date) -> list[Event]:
    """What follows from an event of another service (or our own resolution), given the fresh history."""
    s = state_of(history)
    e = cause.payload
    if s.closed:
        return []
    escalation_id = escalation_id_for(cause.envelope.event_id)
    if isinstance(e, MeetingHeld):
        if cause.envelope.event_id != s.last_meeting_event:
            return []  # a later meeting has been held since; its outcome is the one that counts
        if e.outcome == Outcome.UNRESOLVED and s.open is None:
            return [_raised(rules, today, escalation_id, EscalationTrigger.MEETING_UNRESOLVED,
                            f"The Re-think meeting {e.meeting_id} did not resolve the disagreement.")]
        if e.outcome == Outcome.RESOLVED:
            return _close_if_resolved_at_meeting(s)
        return []  # partly resolved: a professional decides whether to escalate
    if isinstance(e, ActionCompleted):
        return _close_if_resolved_at_meeting(s)
    if isinstance(e, ActionOverdue):
        # Decided on the fresh history: an action completed since it was flagged is no drift.
        if s.open is None and e.action_id not in s.completed_actions:
            return [_raised(rules, today, escalation_id, EscalationTrigger.ACTION_OVERDUE,
                            f"Action {e.action_id} was due on {e.due_date.isoformat()} and is not complete.")]
        return []
    if isinstance(e, EscalationResolved) and s.open is None:
        return [CaseClosed(reason="escalation_resolved")]
    return []


def _close_if_resolved_at_meeting(s: CaseState) -> list[Event]:
    if s.open is None and s.meeting_resolved_and_done():
        return [CaseClosed(reason="resolved_at_meeting")]
    return []


REACTS_TO = frozenset({MeetingHeld.type, ActionCompleted.type, ActionOverdue.type, EscalationResolved.type})
