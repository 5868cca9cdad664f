"""An address with a non-ASCII local part (``zoë@example.org``): refused at the edge, skipped from the log.

Such an address is valid (RFC 6531) but needs SMTPUTF8, which this system does not speak: the
``email`` package cannot even write it in a To header. It used to pass validation and then make
the scheduling reaction raise on its meeting's MeetingScheduled, so the event was parked and no
invitee got an invitation.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from rethink.console import meeting_flow, request_flow
from rethink.console.forms import UNSENDABLE_EMAIL
from rethink.console.users import DEMO_USERS
from rethink.scheduling import domain
from rethink.scheduling.app import build
from rethink.shared.clock import FixedClock
from rethink.shared.events import (
    FROM_LOG,
    MeetingMode,
    MeetingRescheduled,
    MeetingScheduled,
    Person,
    RequestSubmitted,
)
from rethink.shared.messaging import validation_reasons
from rethink.shared.settings import Settings
from tests.support import recorded, request_payload
from tests.unit.test_scheduling_domain import NEXT_WEEK, NOW, assigned, submitted

UNDELIVERABLE = ["zoë@example.org", "名前@example.org"]
CASE = "RT-AAAAAAAAAA"


class Recording:
    """A transport that keeps what it is handed."""

    def __init__(self) -> None:
        self.recipients: list[str] = []

    async def deliver(self, key: str, sender: str, recipient: str, data: bytes) -> None:
        self.recipients.append(recipient)


@pytest.mark.parametrize("address", UNDELIVERABLE)
def test_a_new_address_with_a_non_ascii_local_part_is_refused_naming_the_field_and_why(address):
    with pytest.raises(ValidationError) as caught:
        Person(name="Alex Social", agency="Children's Social Care", email=address)
    [reason] = validation_reasons(caught.value)
    assert reason.field == "email" and reason.code == "field_invalid"
    assert "the part before @ must be ASCII: internationalised local parts (SMTPUTF8) are not supported" \
        in reason.message


def test_a_domain_in_another_script_is_still_accepted():
    assert Person(name="Alex Social", agency="CSC", email="sw@bücher.example.org").email == "sw@bücher.example.org"


@pytest.mark.parametrize("address", UNDELIVERABLE)
def test_the_console_forms_say_why_such_an_address_is_refused(address):
    errors = request_flow.add_invitee({"name": "Alex Social", "agency": "CSC", "email": address}, {}, DEMO_USERS[0])
    assert errors == {"email": UNSENDABLE_EMAIL}
    form = {"description": "Share the plan", "owner_name": "Alex Social", "owner_agency": "CSC",
            "owner_email": address, "due_date-day": "1", "due_date-month": "6", "due_date-year": "2026"}
    assert meeting_flow.add_item(meeting_flow.ACTIONS, form, {}, None) == {"owner_email": UNSENDABLE_EMAIL}
    assert meeting_flow.add_item(meeting_flow.ACTIONS, {**form, "owner_email": "sw@example.org"}, {}, None) == {}


def test_a_console_account_cannot_be_given_such_an_address(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rethink.shared.cli.main import app

    monkeypatch.setenv("RETHINK_CONSOLE_USERS_FILE", str(tmp_path / "users.json"))
    done = CliRunner().invoke(app, ["users", "add", "x1", "--role", "auditor", "--full-name", "X",
                                    "--email", "zoë@example.org"], input="a long enough password\n" * 2)
    assert done.exit_code == 1 and "SMTPUTF8" in done.output and not (tmp_path / "users.json").exists()


def test_settings_refuse_a_sender_or_facilitator_address_the_mail_cannot_carry():
    for bad in ({"partnership_email": "zoë@example.org"},
                {"facilitators": [{"id": "fac-1", "name": "Facilitator One", "email": "名前@example.org"}]}):
        with pytest.raises(ValidationError, match="SMTPUTF8"):
            Settings(**bad)


@pytest.mark.parametrize("address", UNDELIVERABLE)
def test_an_address_with_a_non_ascii_local_part_already_in_the_log_still_decodes(address):
    person = Person.model_validate({"name": "Alex Social", "agency": "CSC", "email": address}, context=FROM_LOG)
    assert person.email == address


def test_a_meeting_can_still_be_arranged_for_a_request_whose_requester_has_such_an_address():
    data = request_payload(requester={**request_payload()["requester"], "email": "zoë@example.org"})
    data.pop("immediate_risk")
    request = RequestSubmitted.model_validate(data, context=FROM_LOG)  # as the log gives it back
    assert [str(p.email) for p in domain.invitees_for(request)] == [
        "zoë@example.org", "sw@council.example.org", "hv@health.example.org"]


def _scheduled_from_the_log(address: str) -> MeetingScheduled:
    """As the log gives it back (``context=FROM_LOG``): written before such addresses were refused."""
    return MeetingScheduled.model_validate({
        "meeting_id": "M-00000001", "facilitator_id": "fac-1", "starts_at": NEXT_WEEK.isoformat(),
        "duration_minutes": 90, "mode": MeetingMode.VIRTUAL, "venue": "https://meet.example.org/abc",
        "invitees": [{"name": "Sam Teacher", "agency": "Northside School Trust", "email": "dsl@school.example.org"},
                     {"name": "Alex Social", "agency": "Children's Social Care", "email": address},
                     {"name": "Jo Health", "agency": "Community Health", "email": "hv@health.example.org"}],
    }, context=FROM_LOG)


@pytest.mark.parametrize("address", UNDELIVERABLE)
async def test_an_undeliverable_invitee_in_the_log_is_skipped_and_every_other_invitee_is_mailed(tmp_path, address):
    clock, transport = FixedClock(NOW), Recording()
    parts = build(Settings(state_dir=tmp_path), None, clock, transport=transport)
    jobs = {job.__name__: job for _, job in parts.periodic}
    others = ["dsl@school.example.org", "hv@health.example.org"]
    for seq, payload in enumerate([submitted(), assigned()], start=1):
        await parts.on_event(recorded(payload, case_id=CASE, seq=seq))

    with capture_logs() as logs:  # the scheduling consumer's reaction: it must not raise (that parks the event)
        await parts.on_event(recorded(_scheduled_from_the_log(address), case_id=CASE, seq=3))
    await jobs["drain"]()
    assert transport.recipients == others
    [skipped] = [e for e in logs if e["event"] == "meeting_notice_skipped_undeliverable"]
    assert skipped["invitee"] == 1 and "SMTPUTF8" in skipped["reason"]
    assert address not in str(logs) and "Alex Social" not in str(logs)  # the position, not who

    # The change goes to the invitees on record: the same one is skipped, the others are told.
    moved = MeetingRescheduled(meeting_id="M-00000001", starts_at=NEXT_WEEK + timedelta(days=3), duration_minutes=90,
                               mode=MeetingMode.VIRTUAL)
    await parts.on_event(recorded(moved, case_id=CASE, seq=4))
    await jobs["drain"]()
    assert transport.recipients == others * 2

    # And the reminder the working day before: everyone but the one who cannot be mailed.
    clock.advance(timedelta(days=9))
    with capture_logs() as logs:
        await jobs["queue_reminders"]()
    await jobs["drain"]()
    assert transport.recipients == others * 3
    assert [e["event"] for e in logs if "undeliverable" in e["event"]] == ["reminder_skipped_undeliverable"]
    assert address not in str(logs)
    with capture_logs() as logs:  # the next check, the same reminder still due: nothing more to say
        await jobs["queue_reminders"]()
    assert not [e for e in logs if "undeliverable" in e["event"]]
