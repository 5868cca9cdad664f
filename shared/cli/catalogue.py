"""The event catalogue as documentation, generated from the models so it cannot drift."""

from __future__ import annotations

import json
from typing import Any

from rethink.shared.events import EVENT_TYPES, personal_fields

EMITTED_BY = {
    "RequestSubmitted": "intake", "ChecksConfirmed": "intake",
    "FacilitatorAssigned": "scheduling", "MeetingScheduled": "scheduling",
    "MeetingRescheduled": "scheduling", "MeetingCancelled": "scheduling",
    "MeetingHeld": "meeting", "ActionRecorded": "meeting", "ActionCompleted": "meeting", "ActionOverdue": "meeting",
    "EscalationRaised": "escalation", "EscalationStageAdvanced": "escalation",
    "EscalationResolved": "escalation", "CaseClosed": "escalation",
    "PersonalDataErased": "`rethink privacy erase` / `sweep`",
}

# Who reacts (writes in response) or projects (keeps a view of) each event.
CONSUMED_BY = {
    "RequestSubmitted": "intake (confirms complete checks; projection), scheduling (invitees, case reference), escalation (projection)",
    "ChecksConfirmed": "intake (projection), scheduling (assigns a facilitator)",
    "FacilitatorAssigned": "scheduling (projection)",
    "MeetingScheduled": "scheduling (invitations, meeting reminders, projection), meeting (projection)",
    "MeetingRescheduled": "scheduling (invitations, projection), meeting (projection)",
    "MeetingCancelled": "scheduling (cancellations, projection), meeting (projection)",
    "MeetingHeld": "meeting (records actions), escalation (raises if unresolved; closes if resolved), scheduling (projection)",
    "ActionRecorded": "meeting (projection), scheduling (reminds the owner)",
    "ActionCompleted": "meeting (projection), escalation (closes the case when all are done), scheduling (stops reminders)",
    "ActionOverdue": "meeting (projection), escalation (raises if none open)",
    "EscalationRaised": "escalation (projection), scheduling (stage reminders)",
    "EscalationStageAdvanced": "escalation (projection), scheduling (stage reminders)",
    "EscalationResolved": "escalation (closes the case), scheduling (stops reminders)",
    "CaseClosed": "escalation, scheduling, meeting (projections)",
    "PersonalDataErased": "scheduling, meeting (blank the case's personal columns); every reader (forgets the key)",
}


def _fields(cls: type) -> list[str]:
    return list(cls.model_json_schema().get("properties", {}))


def catalogue() -> list[dict[str, Any]]:
    return [
        {"event": name, "schema_version": cls.schema_version, "emitted_by": EMITTED_BY[name],
         "consumed_by": CONSUMED_BY[name], "fields": _fields(cls), "personal_fields": personal_fields(cls),
         "doc": (cls.__doc__ or "").strip()}
        for name, cls in EVENT_TYPES.items()
    ]


def catalogue_json() -> str:
    return json.dumps(catalogue(), indent=2)


def catalogue_markdown() -> str:
    lines = ["| event | emitted by | consumed by | fields (personal in *italics*) |", "| --- | --- | --- | --- |"]
    for row in catalogue():
        personal_roots = {p.split(".")[0].split("[")[0] for p in row["personal_fields"]}
        fields = ", ".join(f"*{f}*" if f in personal_roots else f"`{f}`" for f in row["fields"])
        lines.append(f"| {row['event']} | {row['emitted_by']} | {row['consumed_by']} | {fields} |")
    return "\n".join(lines)
