"""Scheduling's composition root: wires the domain to the log, its projection, the reminders and the outbox.

Invitations (on MeetingScheduled / Rescheduled / Cancelled) and due reminders (a periodic
job) are recorded in the outbox; a second periodic job sends what the outbox holds.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Connection

from rethink.shared.clock import Clock
from rethink.shared.commands import (
    CaseId,
    CaseQuery,
    Command,
    accepted,
    case_query,
    execute,
    react,
)
from rethink.shared.envelope import Origin, Recorded, derived_id
from rethink.shared.errors import NotFound, Reason, rejected
from rethink.shared.eventlog import EventLog
from rethink.shared.events import (
    NOT_ASCII_LOCAL_PART,
    ChecksConfirmed,
    MeetingCancelled,
    MeetingRescheduled,
    MeetingScheduled,
    PersonalDataErased,
    deliverable,
)
from rethink.shared.logs import get_logger
from rethink.shared.messaging import Route
from rethink.shared.migrations import open_database, open_projection
from rethink.shared.runtime import ServiceParts
from rethink.shared.settings import Settings
from rethink.shared.workdays import england_and_wales

from . import domain, projection, reminders
from .mail import Transport, make_transport
from .notifier import Email, Notice, compose, compose_reminder
from .outbox import Outbox, RetryPolicy

NAME = "scheduling"
MAX_ASSIGNED_ASKED = 2000
ERASE_INTERVAL_SECONDS = 3600.0  # old emails are erased by the day: hourly is plenty
KINDS = {"MeetingScheduled": "invitation", "MeetingRescheduled": "changed", "MeetingCancelled": "cancelled"}
logger = get_logger("rethink.scheduling")


class MeetingsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    facilitator_id: str | None = Field(default=None, pattern=r"^[a-z0-9-]{1,40}$")
    starts_from: AwareDatetime | None = Field(default=None, description="Only meetings starting at or after this.")
    starts_before: AwareDatetime | None = Field(default=None, description="Only meetings starting before this.")
    limit: int = Field(default=100, ge=1, le=1000)


class ToScheduleQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    facilitator_id: str | None = Field(default=None, pattern=r"^[a-z0-9-]{1,40}$")
    limit: int = Field(default=100, ge=1, le=1000)


class AssignedQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Enough for the console's work queue: two lists of at most 1,000 rows each.
    case_ids: list[Annotated[str, CaseId]] = Field(min_length=1, max_length=MAX_ASSIGNED_ASKED,
                                                   description="The cases whose facilitator is asked.")


class NotificationsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    failed: bool = Field(default=False, description="Only the messages that could not be sent.")
    limit: int = Field(default=100, ge=1, le=1000)


class RetryNotifications(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int | None = Field(default=None, ge=1, description="The failed message to send again.")
    all: bool = Field(default=False, description="Every failed message.")

    @model_validator(mode="after")
    def _one_or_all(self) -> RetryNotifications:
        if (self.id is None) == (not self.all):
            raise ValueError("give either id or all=true, not both and not neither")
        return self


def outbox_for(settings: Settings, clock: Clock, transport: Transport | None = None) -> Outbox:
    policy = RetryPolicy(max_attempts=settings.outbox_max_attempts,
                         backoff=timedelta(seconds=settings.outbox_backoff_seconds),
                         backoff_max=timedelta(seconds=settings.outbox_backoff_max_seconds),
                         claim_timeout=timedelta(seconds=settings.outbox_claim_timeout_seconds))
    return Outbox(open_database(settings, "outbox"), clock, transport or make_transport(settings), policy)


def meeting_id_for(seed: object) -> str:
    """The meeting id is read off the MeetingScheduled event id, so a re-sent command names the same meeting."""
    return "M-" + derived_id(seed, 0).hex[:8]


def build(settings: Settings, log: EventLog, clock: Clock, *, transport: Transport | None = None) -> ServiceParts:
    if not settings.facilitators:
        raise ValueError("scheduling needs at least one facilitator (RETHINK_FACILITATORS)")
    store = open_projection(settings, NAME)
    outbox = outbox_for(settings, clock, transport)
    sender, contact = str(settings.partnership_email), settings.partnership_contact
    timings = reminders.Timings(meeting=tuple(settings.reminder_meeting_working_days),
                                action=tuple(settings.reminder_action_working_days),
                                escalation=tuple(settings.reminder_escalation_working_days))
    holidays = england_and_wales()

    def origin(cmd: Command) -> Origin:
        return Origin(producer=NAME, actor=cmd.actor, correlation_id=cmd.command_id or uuid.uuid4())

    # The facilitator's other meetings come from the projection, which may trail the log by a
    # moment: two overlapping bookings made in the same instant for different cases can both
    # pass. Eventual consistency is accepted here; a case's own history is always fresh.
    def booked(facilitator_id: str | None) -> list[domain.Booking]:
        if facilitator_id is None:
            return []
        with store.engine.connect() as conn:
            return projection.bookings(conn, facilitator_id)

    async def schedule(cmd: domain.ScheduleMeeting) -> dict[str, Any]:
        seed = cmd.command_id or uuid.uuid4()
        meeting_id, now = meeting_id_for(seed), clock.now()

        def decide(history: list[Recorded]):
            fac = domain.fold(history).facilitator
            return domain.decide_schedule(history, cmd, now=now, meeting_id=meeting_id,
                                          booked=booked(fac.facilitator_id if fac else None))

        events, repeat = await execute(log, cmd.case_id, decide, origin(cmd), clock, seed)
        return accepted(cmd.case_id, events, duplicate=repeat, meeting_id=meeting_id,
                        starts_at=cmd.starts_at.isoformat())

    async def reschedule(cmd: domain.RescheduleMeeting) -> dict[str, Any]:
        now = clock.now()

        def decide(history: list[Recorded]):
            meeting = domain.fold(history).meeting
            return domain.decide_reschedule(history, cmd, now=now,
                                            booked=booked(meeting.facilitator_id if meeting else None))

        events, repeat = await execute(log, cmd.case_id, decide, origin(cmd), clock, cmd.command_id)
        return accepted(cmd.case_id, events, duplicate=repeat, meeting_id=_meeting_of(events))

    async def cancel(cmd: domain.CancelMeeting) -> dict[str, Any]:
        events, repeat = await execute(log, cmd.case_id, lambda h: domain.decide_cancel(h, cmd), origin(cmd),
                                       clock, cmd.command_id)
        return accepted(cmd.case_id, events, duplicate=repeat, meeting_id=_meeting_of(events))

    def applied(conn: Connection, r: Recorded) -> bool:
        """Applied before, so its reaction and its messages happened before too."""
        return r.seq <= projection.applied_up_to(conn, store.consumer)

    def invitations(r: Recorded) -> list[Email] | None:
        """The meeting's notices, or None when the event was applied before."""
        e, case_id = r.payload, r.envelope.case_id
        with store.engine.connect() as conn:  # the projection as it was before this event
            if applied(conn, r):
                return None
            reference = projection.case_reference(conn, case_id)
            facilitator = projection.facilitator(conn, case_id)
            if isinstance(e, MeetingScheduled):
                invitees, when, sequence = e.invitees, e, 0
            else:  # the invitee list and (for a cancellation) the arrangements are the ones on record
                invitees = projection.meeting_invitees(conn, e.meeting_id)
                when = e if isinstance(e, MeetingRescheduled) else projection.meeting(conn, e.meeting_id)
                sequence = projection.revision(conn, e.meeting_id) + 1
        if reference is None or facilitator is None or when is None:
            logger.error("meeting_notice_skipped_unknown_meeting", case_id=case_id, meeting_id=e.meeting_id)
            return []
        # ``compose`` leaves out whom we cannot mail; said here by position (as in the message keys),
        # not by address, so the others are told and nobody's address reaches the logs.
        for i, person in enumerate(invitees):
            if not deliverable(str(person.email)):
                logger.warning("meeting_notice_skipped_undeliverable", case_id=case_id, meeting_id=e.meeting_id,
                               event_type=r.type, invitee=i, reason=NOT_ASCII_LOCAL_PART)
        notice = Notice(
            kind=KINDS[r.type], case_id=case_id, case_reference=reference, meeting_id=e.meeting_id,
            starts_at=when.starts_at, duration_minutes=when.duration_minutes, mode=when.mode, venue=when.venue,
            facilitator_name=facilitator["name"], facilitator_email=facilitator["email"], sequence=sequence,
        )
        return compose(notice, invitees, str(r.envelope.event_id), sender, r.envelope.occurred_at, contact)

    async def on_event(r: Recorded) -> None:
        # Only the events with a reaction look at the checkpoint first (on the connection they read
        # the projection with): for the others ``store.apply`` alone decides, in its own transaction.
        e = r.payload
        if isinstance(e, ChecksConfirmed):
            # Load counts only what the projection has seen; a burst of cases may briefly tie.
            with store.engine.connect() as conn:
                if applied(conn, r):
                    return
                choice = domain.least_loaded(settings.facilitators, projection.load_by_facilitator(conn))
            await react(log, NAME, r, lambda h: domain.decide_assignment(h, choice), clock)
        elif isinstance(e, PersonalDataErased):
            with store.engine.connect() as conn:
                if applied(conn, r):
                    return
            erased = outbox.erase_case(r.envelope.case_id)
            logger.info("outbox_case_erased", case_id=r.envelope.case_id, messages=erased)
        elif isinstance(e, MeetingScheduled | MeetingRescheduled | MeetingCancelled):
            # Recorded before the event counts as applied: a crash in between re-records the same
            # keys on redelivery, which adds nothing. The outbox job sends them.
            messages = invitations(r)
            if messages is None:
                return
            added = outbox.enqueue(messages, KINDS[r.type], r.envelope.case_id)
            logger.info("meeting_notices_queued", case_id=r.envelope.case_id, meeting_id=e.meeting_id,
                        event_type=r.type, recipients=len(messages), new=added)
        store.apply(r)

    skipped_reminders: set[str] = set()  # said once per process, not at every check while it is due

    async def queue_reminders() -> int:
        now = clock.now()
        with store.engine.connect() as conn:
            items = projection.reminder_items(conn)
        due = []
        for d in reminders.due(items, now, timings, holidays):
            if deliverable(str(d.recipient.email)):
                due.append(d)
            elif d.key not in skipped_reminders:  # as for invitations: the others are still reminded
                skipped_reminders.add(d.key)  # (the key names no one)
                logger.warning("reminder_skipped_undeliverable", case_id=d.item.case_id, kind=d.kind, key=d.key,
                               reason=NOT_ASCII_LOCAL_PART)
        added = sum(outbox.enqueue([compose_reminder(d, sender, contact, now)], "reminder", d.item.case_id)
                    for d in due)
        if added:
            logger.info("reminders_queued", count=added)
        return added

    async def erase_old_emails() -> int:
        erased = outbox.erase_sent_before(clock.now() - timedelta(days=settings.outbox_keep_sent_days))
        if erased:
            logger.info("sent_emails_erased", count=erased, older_than_days=settings.outbox_keep_sent_days)
        return erased

    async def notifications(q: NotificationsQuery) -> dict[str, Any]:
        return {"status": "ok", "result": outbox.list(q.failed, q.limit), "counts": outbox.counts()}

    async def retry(cmd: RetryNotifications) -> dict[str, Any]:
        if cmd.id is not None:
            status = outbox.status_of(cmd.id)
            if status is None:
                raise NotFound(Reason("id", f"no notification {cmd.id}"))
            if status != "failed":
                raise rejected("id", f"notification {cmd.id} is {status}, not failed; only failed ones are retried")
        ids = outbox.retry(cmd.id)
        return {"status": "accepted", "retried": ids}

    async def meetings(q: MeetingsQuery) -> dict[str, Any]:
        with store.engine.connect() as conn:
            return {"status": "ok", "result": projection.active_meetings(conn, q.facilitator_id, q.limit,
                                                                         q.starts_from, q.starts_before)}

    async def assigned(q: AssignedQuery) -> dict[str, Any]:
        with store.engine.connect() as conn:
            return {"status": "ok", "result": projection.assigned(conn, q.case_ids)}

    async def to_schedule(q: ToScheduleQuery) -> dict[str, Any]:
        with store.engine.connect() as conn:
            return {"status": "ok", "result": projection.to_schedule(conn, q.facilitator_id, q.limit)}

    return ServiceParts(
        name=NAME,
        db_ping=store.ping,
        commands={
            "schedule": Route(domain.ScheduleMeeting, schedule, "Arrange the case's Re-think meeting"),
            "reschedule": Route(domain.RescheduleMeeting, reschedule, "Move the meeting"),
            "cancel": Route(domain.CancelMeeting, cancel, "Call the meeting off"),
            "retry_notifications": Route(RetryNotifications, retry, "Send failed emails again"),
        },
        queries={
            "assigned": Route(AssignedQuery, assigned,
                              "The facilitator of each of these cases (one with none is left out)"),
            "case": Route(CaseQuery, case_query(store.engine, projection.case_view)),
            "meetings": Route(MeetingsQuery, meetings, "Meetings still to be held, soonest first"),
            "notifications": Route(NotificationsQuery, notifications, "Emails in the outbox, newest first"),
            "to_schedule": Route(ToScheduleQuery, to_schedule,
                                 "Open cases with a facilitator and no meeting arranged or held"),
        },
        on_event=on_event,
        periodic=[(settings.reminder_interval_seconds, queue_reminders),
                  (settings.outbox_interval_seconds, outbox.drain),
                  (ERASE_INTERVAL_SECONDS, erase_old_emails)],
    )


def _meeting_of(events: list) -> str | None:
    return events[0].data.get("meeting_id") if events else None

