"""The facilitator's journeys on a case: arrange the meeting, record it stage by stage, follow its
actions and escalations, and close a partly resolved case.

Every change is one of the services' own commands over NATS, sent as the signed-in facilitator
(``actor`` = their email). Each form carries a ``command_id``, so a double click changes nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from . import access, forms
from . import meeting_flow as flow
from .drafts import Drafts
from .gateway import Gateway
from .request_flow import CASE_ID
from .security import checked_form
from .users import Role, User, require
from .web import Pages

MODES = {"in_person": "In person", "virtual": "Online or by phone"}
# Each command's fields, and the id of the field on the page that changes it.
MEETING_FIELDS = {"starts_at": "meeting_date", "duration_minutes": "duration_minutes", "mode": "mode",
                  "venue": "venue", "reason": "reason"}
ESCALATION = {
    "raise": ("Raise an escalation", "reason", "Why is the case being escalated?",
              "Stage 1 of the escalation policy starts today; its deadline is counted in working days.",
              "why the case is being escalated"),
    "advance": ("Move the escalation to the next stage", "reason", "Why does it need the next stage?",
                "The next stage's holder takes it on, with a new deadline.", "why it needs the next stage"),
    "resolve": ("Resolve the escalation", "resolution", "How was it resolved?",
                "Resolving the escalation closes the case.", "how the escalation was resolved"),
}


def routes(pages: Pages, gateway: Gateway, drafts: Drafts, today: Callable[[], date]) -> list[Route]:
    def facilitator(request: Request) -> User:
        return require(request, Role.FACILITATOR)

    async def case_of(request: Request) -> tuple[str, dict[str, Any]]:
        user = facilitator(request)
        case_id = request.path_params["case_id"]
        if not CASE_ID.fullmatch(case_id):
            raise HTTPException(404)
        intake = await gateway.result("intake", "case", {"case_id": case_id})
        if intake is None:
            raise HTTPException(404)
        await access.case_viewed(gateway, user, case_id, request.url.path.removeprefix(f"/cases/{case_id}/"))
        return case_id, intake

    def done(request: Request, case_id: str, message: str) -> Response:
        request.session["flash"] = message
        return RedirectResponse(f"/cases/{case_id}", status_code=303)

    def render(request: Request, template: str, case_id: str, intake: dict[str, Any], title: str,
               errors: dict[str, str], **context: Any) -> Response:
        return pages.render(request, template, status=400 if errors else 200, title=title, errors=errors,
                            case_id=case_id, intake=intake, back_href=f"/cases/{case_id}", **context)

    # --- schedule, reschedule, cancel ------------------------------------------------------------

    def meeting_form(form: FormData | None, current: dict[str, Any] | None) -> dict[str, Any]:
        if form is not None:
            return {"date": forms.date_parts(form, "meeting_date"), "time": forms.text(form, "meeting_time"),
                    "duration_minutes": forms.text(form, "duration_minutes"), "mode": forms.text(form, "mode"),
                    "venue": forms.text(form, "venue"), "reason": forms.text(form, "reason"),
                    "command_id": forms.command_id(form)}
        if current:  # rescheduling starts from the arrangements on record
            starts = datetime.fromisoformat(current["starts_at"]).astimezone(forms.LONDON)
            return {"date": {"day": str(starts.day), "month": str(starts.month), "year": str(starts.year)},
                    "time": f"{starts:%H:%M}", "duration_minutes": str(current["duration_minutes"]),
                    "mode": current["mode"], "venue": current.get("venue") or "", "reason": "",
                    "command_id": forms.command_id(None)}
        return {"date": {}, "time": "", "duration_minutes": "90", "mode": "", "venue": "", "reason": "",
                "command_id": forms.command_id(None)}

    def read_meeting(values: dict[str, Any], rescheduling: bool) -> tuple[dict[str, Any], dict[str, str]]:
        errors: dict[str, str] = {}
        day = forms.parse_date(values["date"], "the date of the meeting", errors, "meeting_date")
        at = forms.parse_time(values["time"], "the start time", errors, "meeting_time")
        if day and at and day < today():
            errors["meeting_date"] = "The date of the meeting must be today or in the future"
        try:
            duration = int(values["duration_minutes"])
            if not 15 <= duration <= 480:
                raise ValueError
        except ValueError:
            errors["duration_minutes"] = "Enter the length of the meeting in minutes, from 15 to 480"
            duration = 0
        if values["mode"] not in MODES:
            errors["mode"] = "Select how the meeting will be held"
        elif values["mode"] == "in_person" and not values["venue"]:
            errors["venue"] = "Enter the address of the meeting"
        if len(values["venue"]) > forms.MAX_TEXT:
            errors["venue"] = "The venue must be 4,000 characters or fewer"
        if len(values["reason"]) > 2000:
            errors["reason"] = "The reason must be 2,000 characters or fewer"
        payload: dict[str, Any] = {}
        if not errors and day and at:
            payload = {"starts_at": forms.london(day, at).isoformat(), "duration_minutes": duration,
                       "mode": values["mode"], "venue": values["venue"] or None}
            if rescheduling and values["reason"]:
                payload["reason"] = values["reason"]
        return payload, errors

    def arrange(name: str) -> Callable[[Request], Any]:
        rescheduling = name == "reschedule"
        title = "Move the meeting" if rescheduling else "Arrange the Re-think meeting"

        async def endpoint(request: Request) -> Response:
            user = facilitator(request)
            case_id, intake = await case_of(request)
            scheduling = await gateway.result("scheduling", "case", {"case_id": case_id}) or {}
            current = scheduling.get("meeting") if rescheduling else None
            errors: dict[str, str] = {}
            form = await checked_form(request) if request.method == "POST" else None
            values = meeting_form(form, current)
            if form is not None:
                payload, errors = read_meeting(values, rescheduling)
                if not errors:
                    reply = await gateway.command("scheduling", name, {
                        "case_id": case_id, "actor": user.email, "command_id": values["command_id"], **payload})
                    if reply.get("status") == "accepted":
                        when = datetime.fromisoformat(payload["starts_at"])
                        return done(request, case_id, f"The meeting is {'moved to' if rescheduling else 'arranged for'} "
                                                      f"{when:%A %-d %B %Y at %H:%M}. The invitations are on their way.")
                    errors = forms.refusals(reply, MEETING_FIELDS)
            return render(request, "facilitator/meeting_form.html", case_id, intake, title, errors,
                          values=values, modes=MODES, rescheduling=rescheduling, facilitator=scheduling.get("facilitator"))
        return endpoint

    async def cancel(request: Request) -> Response:
        user = facilitator(request)
        case_id, intake = await case_of(request)
        errors: dict[str, str] = {}
        values = {"reason": "", "command_id": forms.command_id(None)}
        if request.method == "POST":
            form = await checked_form(request)
            values = {"reason": forms.text(form, "reason"), "command_id": forms.command_id(form)}
            forms.required(form, "reason", "why the meeting is cancelled", errors)
            if not errors:
                reply = await gateway.command("scheduling", "cancel", {
                    "case_id": case_id, "actor": user.email, "command_id": values["command_id"],
                    "reason": values["reason"]})
                if reply.get("status") == "accepted":
                    return done(request, case_id, "The meeting is cancelled. Everyone invited is told.")
                errors = forms.refusals(reply, {"reason": "reason"})
        return render(request, "facilitator/text_form.html", case_id, intake, "Cancel the meeting", errors,
                      values=values, field="reason", label="Why is the meeting cancelled?",
                      hint="Everyone invited receives this reason with the cancellation.", button="Cancel the meeting",
                      warning=True)

    # --- record the meeting, stage by stage -------------------------------------------------------

    def record_draft(request: Request, user: User, case_id: str) -> dict[str, Any] | None:
        return drafts.get(request.session.get("records", {}).get(case_id), user.id)

    def record_base(case_id: str) -> str:
        return f"/cases/{case_id}/record"

    async def record_start(request: Request) -> Response:
        user = facilitator(request)
        case_id, _ = await case_of(request)
        records = dict(request.session.get("records", {}))
        if drafts.get(records.get(case_id), user.id) is None:
            records[case_id] = drafts.start(user.id)
            request.session["records"] = records
        return RedirectResponse(f"{record_base(case_id)}/held", status_code=303)

    def record_page(request: Request, case_id: str, intake: dict[str, Any], slug: str, draft: dict[str, Any],
                    errors: dict[str, str] | None = None) -> Response:
        errors = errors or {}
        back = flow.previous_page(slug)
        context: dict[str, Any] = {"slug": slug, "draft": draft, "base": record_base(case_id),
                                   "changing": request.query_params.get("change") == "1"}
        context["back_override"] = (f"{record_base(case_id)}/check" if context["changing"] else
                                    f"{record_base(case_id)}/{back}" if back else f"/cases/{case_id}")
        title = flow.TITLES[slug]
        if slug in flow.COLLECTIONS:
            c = flow.COLLECTIONS[slug]
            template = "facilitator/record_collection.html"
            context |= {"c": c, "pending": draft.get(f"pending_{c.key}", {})}
        elif slug in flow.STAGES:
            template, context["stage"] = "facilitator/record_stage.html", flow.STAGES[slug]
        else:
            template = f"facilitator/record_{slug}.html"
            context |= {"outcomes": flow.OUTCOMES}
        return pages.render(request, template, status=400 if errors else 200, title=title, errors=errors,
                            case_id=case_id, intake=intake, back_href=context["back_override"], **context)

    async def record(request: Request) -> Response:
        user = facilitator(request)
        case_id, intake = await case_of(request)
        slug = request.path_params["slug"]
        if slug not in flow.SEQUENCE:
            raise HTTPException(404)
        draft = record_draft(request, user, case_id)
        if draft is None:
            return RedirectResponse(record_base(case_id), status_code=303)
        if slug == "check":
            return await record_check(request, user, case_id, intake, draft)
        if request.method == "GET":
            if slug in flow.COLLECTIONS:
                draft.pop(f"pending_{flow.COLLECTIONS[slug].key}", None)
            return record_page(request, case_id, intake, slug, draft)
        form = await checked_form(request)
        following = f"{record_base(case_id)}/{'check' if form.get('change') else flow.next_page(slug)}"
        if slug in flow.COLLECTIONS:
            c = flow.COLLECTIONS[slug]
            action = forms.text(form, "action")
            if action.startswith("remove-"):
                index = int(action[7:]) if action[7:].isdigit() else -1
                if 0 <= index < len(draft.get(c.key, [])):
                    del draft[c.key][index]
                return RedirectResponse(f"{record_base(case_id)}/{slug}", status_code=303)
            errors: dict[str, str] = {}
            if action == "add" or flow.typed_something(c, form):
                errors = flow.add_item(c, form, draft, flow.held_on(draft))
                if not errors and action == "add":
                    return RedirectResponse(f"{record_base(case_id)}/{slug}", status_code=303)
            errors = errors or flow.collection_complete(c, draft)
            if errors:
                return record_page(request, case_id, intake, slug, draft, errors)
            return RedirectResponse(following, status_code=303)
        if slug in flow.STAGES:
            errors = flow.parse_stage(flow.STAGES[slug], form, draft)
        elif slug == "held":
            errors = flow.parse_held(form, draft)
        else:
            errors = flow.parse_outcome(form, draft)
        if errors:
            return record_page(request, case_id, intake, slug, draft, errors)
        return RedirectResponse(following, status_code=303)

    async def record_check(request: Request, user: User, case_id: str, intake: dict[str, Any],
                           draft: dict[str, Any]) -> Response:
        missing = flow.first_unanswered(draft)
        if missing:
            return RedirectResponse(f"{record_base(case_id)}/{missing}", status_code=303)
        errors: dict[str, str] = {}
        links: list[dict[str, str]] = []
        if request.method == "POST":
            await checked_form(request)
            draft_id = request.session["records"][case_id]
            reply = await gateway.command("meeting", "record", flow.payload(draft, case_id, user.email, draft_id))
            if reply.get("status") == "accepted":
                drafts.drop(draft_id)
                records = dict(request.session.get("records", {}))
                records.pop(case_id, None)
                request.session["records"] = records
                n = len(reply.get("action_ids", []))
                return done(request, case_id, f"The meeting is recorded, with {n} action{'s' if n != 1 else ''}.")
            for i, r in enumerate(reply.get("reasons", [])):
                message = str(r.get("message", "refused"))
                errors[f"form-{i}"] = message
                page = flow.page_for_field(str(r.get("field") or ""))
                links.append({"text": message, "href": f"{record_base(case_id)}/{page}?change=1" if page
                              else "#main-content"})
        return pages.render(request, "facilitator/record_check.html", status=400 if errors else 200,
                            title=flow.TITLES["check"], errors=errors, error_list=links, case_id=case_id,
                            intake=intake, draft=draft, base=record_base(case_id), outcomes=flow.OUTCOMES,
                            stages=flow.STAGES, back_href=f"{record_base(case_id)}/actions")

    # --- actions, escalations, closing ---------------------------------------------------------------

    async def complete_action(request: Request) -> Response:
        user = facilitator(request)
        case_id, intake = await case_of(request)
        action_id = request.path_params["action_id"]
        meeting = await gateway.result("meeting", "case", {"case_id": case_id}) or {}
        action = next((a for a in meeting.get("actions", []) if a["action_id"] == action_id), None)
        if action is None:
            raise HTTPException(404)
        errors: dict[str, str] = {}
        values: dict[str, Any] = {"completed_on": {}, "note": "", "command_id": forms.command_id(None)}
        if request.method == "POST":
            form = await checked_form(request)
            values = {"completed_on": forms.date_parts(form, "completed_on"), "note": forms.text(form, "note"),
                      "command_id": forms.command_id(form)}
            day = forms.parse_date(values["completed_on"], "the date it was completed", errors, "completed_on",
                                   optional=True)
            if day and day > today():
                errors["completed_on"] = "The date it was completed must be today or in the past"
            if len(values["note"]) > 2000:
                errors["note"] = "The note must be 2,000 characters or fewer"
            if not errors:
                reply = await gateway.command("meeting", "complete_action", {
                    "case_id": case_id, "actor": user.email, "command_id": values["command_id"],
                    "action_id": action_id, "completed_on": day.isoformat() if day else None,
                    "note": values["note"] or None})
                if reply.get("status") == "accepted":
                    return done(request, case_id, f"The action “{action['description'][:80]}” is complete.")
                errors = forms.refusals(reply, {"completed_on": "completed_on", "note": "note"})
        return render(request, "facilitator/complete_action.html", case_id, intake, "Mark the action complete",
                      errors, values=values, action=action)

    def escalation(name: str) -> Callable[[Request], Any]:
        title, field, label, hint, what = ESCALATION[name]

        async def endpoint(request: Request) -> Response:
            user = facilitator(request)
            case_id, intake = await case_of(request)
            errors: dict[str, str] = {}
            values: dict[str, Any] = {field: "", "faster": {}, "command_id": forms.command_id(None)}
            if request.method == "POST":
                form = await checked_form(request)
                values = {field: forms.text(form, field), "faster": forms.date_parts(form, "faster_deadline"),
                          "command_id": forms.command_id(form)}
                forms.required(form, field, what, errors)
                payload: dict[str, Any] = {"case_id": case_id, "actor": user.email,
                                           "command_id": values["command_id"], field: values[field]}
                if name != "resolve":
                    faster = forms.parse_date(values["faster"], "the earlier deadline", errors, "faster_deadline",
                                              optional=True)
                    payload["faster_deadline"] = faster.isoformat() if faster else None
                if not errors:
                    reply = await gateway.command("escalation", name, payload)
                    if reply.get("status") == "accepted":
                        if name == "resolve":
                            return done(request, case_id, "The escalation is resolved and the case is closed.")
                        return done(request, case_id, f"The escalation is at stage {reply.get('stage')} "
                                                      f"({reply.get('stage_name')}), held by {reply.get('holder')}, "
                                                      f"due by {reply.get('deadline')}.")
                    errors = forms.refusals(reply, {field: field, "faster_deadline": "faster_deadline"})
            return render(request, "facilitator/escalation_form.html", case_id, intake, title, errors,
                          values=values, field=field, label=label, hint=hint, faster=name != "resolve",
                          button=title)
        return endpoint

    async def close(request: Request) -> Response:
        user = facilitator(request)
        case_id, intake = await case_of(request)
        errors: dict[str, str] = {}
        values = {"note": "", "command_id": forms.command_id(None)}
        if request.method == "POST":
            form = await checked_form(request)
            values = {"note": forms.text(form, "note"), "command_id": forms.command_id(form)}
            forms.required(form, "note", "what the network agreed", errors)
            if not errors:
                reply = await gateway.command("escalation", "close", {
                    "case_id": case_id, "actor": user.email, "command_id": values["command_id"],
                    "note": values["note"]})
                if reply.get("status") == "accepted":
                    return done(request, case_id, "The case is closed by agreement of the network.")
                errors = forms.refusals(reply, {"note": "note"})
        return render(request, "facilitator/text_form.html", case_id, intake, "Close the case by agreement", errors,
                      values=values, field="note", label="What did the network agree?",
                      hint="A partly resolved case closes once its actions are done and the network agrees "
                           "nothing more is needed.", button="Close the case", warning=False)

    return [
        Route("/cases/{case_id}/schedule", arrange("schedule"), methods=["GET", "POST"]),
        Route("/cases/{case_id}/reschedule", arrange("reschedule"), methods=["GET", "POST"]),
        Route("/cases/{case_id}/cancel", cancel, methods=["GET", "POST"]),
        Route("/cases/{case_id}/record", record_start),
        Route("/cases/{case_id}/record/{slug}", record, methods=["GET", "POST"]),
        Route("/cases/{case_id}/actions/{action_id}/complete", complete_action, methods=["GET", "POST"]),
        Route("/cases/{case_id}/escalation/raise", escalation("raise"), methods=["GET", "POST"]),
        Route("/cases/{case_id}/escalation/advance", escalation("advance"), methods=["GET", "POST"]),
        Route("/cases/{case_id}/escalation/resolve", escalation("resolve"), methods=["GET", "POST"]),
        Route("/cases/{case_id}/close", close, methods=["GET", "POST"]),
    ]
