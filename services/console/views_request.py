"""The practitioner's journey: request a Re-think one question at a time, then follow it in "My requests"."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from . import access
from . import request_flow as flow
from .drafts import Drafts
from .gateway import Gateway
from .security import checked_form
from .users import PARTNERSHIP_AGENCIES, Role, User, require
from .web import Pages

BASE = "/requests/new"
STATUS = {"awaiting_checks": ("Waiting for checks", "yellow"), "checks_confirmed": ("Checks confirmed", "green")}


def _go(slug: str) -> RedirectResponse:
    return RedirectResponse(f"{BASE}/{slug}", status_code=303)


def routes(pages: Pages, gateway: Gateway, drafts: Drafts) -> list[Route]:
    def practitioner(request: Request) -> User:
        return require(request, Role.PRACTITIONER)

    def draft_for(request: Request, user: User) -> dict[str, Any] | None:
        return drafts.get(request.session.get("draft_id"), user.id)

    def previous(slug: str) -> str:
        i = flow.SEQUENCE.index(slug)
        return f"{BASE}/{flow.SEQUENCE[i - 1]}" if i else "/requests"

    def question(request: Request, slug: str, draft: dict[str, Any], errors: dict[str, str] | None = None,
                 status: int = 200) -> Response:
        check = flow.CHECK_BY_SLUG.get(slug)
        context: dict[str, Any] = {"slug": slug, "draft": draft, "errors": errors or {},
                                   "changing": request.query_params.get("change") == "1",
                                   "back_href": f"{BASE}/check-answers" if request.query_params.get("change")
                                   else previous(slug)}
        if check:
            context |= {"check": check, "answer": draft.get("checks", {}).get(check.key, {})}
            return pages.render(request, "request/check.html", status, title=check.question, **context)
        titles = {"urgent-risk": "Is a child at risk of significant harm now?",
                  "case-reference": "What is your agency's case reference for the child?",
                  "agencies": "Which agencies are involved?",
                  "reason": "Why are you requesting a Re-think?",
                  "description": "Describe the disagreement or what is stuck",
                  "invitees": "Who should be invited to the meeting?"}
        return pages.render(request, f"request/{slug}.html", status, title=titles[slug],
                            agencies=PARTNERSHIP_AGENCIES, reasons=flow.REASONS, **context)

    async def my_requests(request: Request) -> Response:
        user = practitioner(request)
        rows = await gateway.result("intake", "requests", {"agency": user.agency, "limit": 1000})
        return pages.render(request, "request/list.html", title="My requests", column="full",
                            rows=list(reversed(rows or [])), statuses=STATUS)

    async def start(request: Request) -> Response:
        user = practitioner(request)
        request.session["draft_id"] = drafts.start(user.id)
        return _go("urgent-risk")

    async def page(request: Request) -> Response:
        user = practitioner(request)
        slug = request.path_params["slug"]
        if slug not in flow.PARSERS:
            raise HTTPException(404)
        draft = draft_for(request, user)
        if draft is None:
            return RedirectResponse(BASE, status_code=303)
        if slug != "urgent-risk" and draft.get("immediate_risk") != "no":
            return _go("urgent-risk")
        if request.method == "GET":
            return question(request, slug, draft)
        form = await checked_form(request)
        errors = flow.PARSERS[slug](form, draft)
        if errors:
            return question(request, slug, draft, errors, status=400)
        if slug == "urgent-risk" and draft["immediate_risk"] == "yes":
            return _go("urgent-risk/stop")
        check = flow.CHECK_BY_SLUG.get(slug)
        if check and draft["checks"][check.key]["answer"] == "no":
            return _go(f"{slug}/guidance" + ("?change=1" if form.get("change") else ""))
        if form.get("change"):
            return _go("check-answers")
        return _go(flow.next_page(slug))

    async def urgent_stop(request: Request) -> Response:
        practitioner(request)
        return pages.render(request, "request/urgent_stop.html", title="Make a safeguarding referral now",
                            guidance=flow.URGENT_GUIDANCE, back_href=f"{BASE}/urgent-risk")

    async def check_guidance(request: Request) -> Response:
        practitioner(request)
        check = flow.CHECK_BY_SLUG.get(request.path_params["slug"])
        if check is None:
            raise HTTPException(404)
        following = "check-answers" if request.query_params.get("change") else flow.next_page(check.slug)
        return pages.render(request, "request/check_guidance.html", title="Before a Re-think", check=check,
                            next_href=f"{BASE}/{following}", back_href=f"{BASE}/{check.slug}")

    async def invitees(request: Request) -> Response:
        user = practitioner(request)
        draft = draft_for(request, user)
        if draft is None:
            return RedirectResponse(BASE, status_code=303)
        if draft.get("immediate_risk") != "no":
            return _go("urgent-risk")
        if request.method == "GET":
            draft.pop("pending_invitee", None)
            return question(request, "invitees", draft)
        form = await checked_form(request)
        action = str(form.get("action", ""))
        if action.startswith("remove-"):
            index = int(action.removeprefix("remove-")) if action[7:].isdigit() else -1
            if 0 <= index < len(draft.get("invitees", [])):
                del draft["invitees"][index]
            return _go("invitees")
        if action == "add":
            errors = flow.add_invitee(form, draft, user)
            return question(request, "invitees", draft, errors, status=400) if errors else _go("invitees")
        # Continue: a half-typed person is added first, so nothing typed is lost silently.
        if any(str(form.get(k, "")).strip() for k in ("name", "agency", "email")):
            errors = flow.add_invitee(form, draft, user)
            if errors:
                return question(request, "invitees", draft, errors, status=400)
        errors = flow.invitees_complete(draft)
        if errors:
            return question(request, "invitees", draft, errors, status=400)
        return _go("check-answers")

    async def check_answers(request: Request) -> Response:
        user = practitioner(request)
        draft_id = request.session.get("draft_id")
        draft = draft_for(request, user)
        if draft is None:
            return RedirectResponse(BASE, status_code=303)
        missing = flow.first_unanswered(draft)
        if missing:
            return _go(missing)
        errors: dict[str, str] = {}
        links: list[dict[str, str]] = []
        if request.method == "POST":
            await checked_form(request)
            reply = await gateway.agency_command(user.agency or "", "submit", flow.payload(draft, user, draft_id))
            if reply.get("status") == "accepted":
                drafts.drop(draft_id)
                request.session.pop("draft_id", None)
                request.session["submitted"] = {"case_id": reply["case_id"],
                                                "case_reference": draft["case_reference"],
                                                "checks": reply.get("checks"),
                                                "next_steps": reply.get("next_steps")}
                return _go("confirmation")
            # Intake's reasons name fields; each links to the page that changes it.
            for i, r in enumerate(reply.get("reasons", [])):
                errors[f"reason-{i}"] = r["message"] if not r.get("field") else f"{r['field']}: {r['message']}"
                fix = flow.page_for_field(r.get("field") or "")
                links.append({"text": errors[f"reason-{i}"],
                              "href": f"{BASE}/{fix}?change=1" if fix else "#main-content"})
            if reply.get("guidance"):
                links.append({"text": reply["guidance"], "href": "#main-content"})
        return pages.render(request, "request/check_answers.html", status=400 if errors else 200,
                            title="Check your answers before sending your request", draft=draft, errors=errors,
                            error_list=links,
                            checks=flow.CHECKS, reasons=flow.REASONS, agencies_all=flow.all_agencies(draft),
                            back_href=f"{BASE}/invitees")

    async def confirm_checks(request: Request) -> Response:
        """Confirm the three checks later, once they are done: intake's confirm_checks, as the agency."""
        user = practitioner(request)
        case_id = request.path_params["case_id"]
        if not flow.CASE_ID.fullmatch(case_id):
            raise HTTPException(404)
        intake = await gateway.result("intake", "case", {"case_id": case_id})
        if intake is None:
            raise HTTPException(404)
        if intake["agency"] != user.agency:
            raise HTTPException(403)
        await access.case_viewed(gateway, user, case_id, "confirm-checks")
        if intake["status"] != "awaiting_checks":
            return RedirectResponse(f"/cases/{case_id}", status_code=303)
        answers: dict[str, str] = {}
        errors: dict[str, str] = {}
        guidance: list[str] = []
        if request.method == "POST":
            form = await checked_form(request)
            answers = {c.key: str(form.get(c.key, "")) for c in flow.CHECKS}
            for c in flow.CHECKS:
                if answers[c.key] not in ("yes", "no"):
                    errors[c.key] = f"Select yes or no: {c.question[0].lower()}{c.question[1:-1]}"
                elif answers[c.key] == "no":
                    errors[c.key] = f"{c.guidance} Confirm this check once it is done."
            if not errors:
                checks = {c.key: {"answer": True} for c in flow.CHECKS}
                reply = await gateway.agency_command(user.agency or "", "confirm_checks", {
                    "case_id": case_id, "checks": checks, "actor": user.email})
                if reply.get("status") == "accepted":
                    request.session["flash"] = "The checks are confirmed. The partnership will now arrange the meeting."
                    return RedirectResponse(f"/cases/{case_id}", status_code=303)
                errors = {f"reason-{i}": r["message"] for i, r in enumerate(reply.get("reasons", []))}
                guidance = [reply["guidance"]] if reply.get("guidance") else []
        return pages.render(request, "request/confirm_checks.html", status=400 if errors else 200,
                            title="Confirm the checks", case_id=case_id, intake=intake, checks=flow.CHECKS,
                            answers=answers, errors=errors, guidance=guidance, back_href=f"/cases/{case_id}")

    async def confirmation(request: Request) -> Response:
        practitioner(request)
        done = request.session.get("submitted")
        if not done:
            return RedirectResponse("/requests", status_code=303)
        return pages.render(request, "request/confirmation.html", title="Request sent", done=done)

    return [
        Route("/requests", my_requests),
        Route(BASE, start),
        Route(f"{BASE}/urgent-risk/stop", urgent_stop),
        Route(f"{BASE}/invitees", invitees, methods=["GET", "POST"]),
        Route(f"{BASE}/check-answers", check_answers, methods=["GET", "POST"]),
        Route(f"{BASE}/confirmation", confirmation),
        Route("/cases/{case_id}/confirm-checks", confirm_checks, methods=["GET", "POST"]),
        Route(f"{BASE}/{{slug}}/guidance", check_guidance),
        Route(f"{BASE}/{{slug}}", page, methods=["GET", "POST"]),
    ]
