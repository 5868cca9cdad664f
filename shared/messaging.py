"""The thin edge shared by every service: bytes in, validated model to a handler, a reply out.

Every failure becomes a specific, structured rejection; nothing is written and the
subscriber keeps serving.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from .delivery import TRANSIENT
from .errors import Code, NotFound, Reason, Rejected
from .logs import get_logger

log = get_logger("rethink.edge")


@dataclass(frozen=True)
class Route:
    """A command or query: its payload model and the handler that carries it out."""

    model: type[BaseModel]
    handler: Callable[..., Awaitable[dict[str, Any]]]
    summary: str = ""


def rejection(reasons: list[Reason], guidance: str | None = None, status: str = "rejected") -> dict[str, Any]:
    reply: dict[str, Any] = {"status": status, "reasons": [r.as_dict() for r in reasons]}
    if guidance:
        reply["guidance"] = guidance
    return reply


def validation_code(error_type: str) -> Code:
    """Pydantic's error types, folded into the few stable codes agencies branch on."""
    if error_type == "missing":
        return Code.FIELD_MISSING
    if error_type == "extra_forbidden":
        return Code.FIELD_UNKNOWN
    if error_type.endswith("_type"):  # string_type, list_type, model_type, dict_type, ...
        return Code.FIELD_WRONG_TYPE
    return Code.FIELD_INVALID


def validation_reasons(exc: ValidationError) -> list[Reason]:
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(p) for p in err["loc"]) or "(body)"
        out.append(Reason(field, err["msg"], validation_code(err["type"])))
    return out


def parse_json_object(body: bytes, max_bytes: int) -> dict[str, Any]:
    if len(body) > max_bytes:
        raise Rejected(Reason("(body)", f"payload is {len(body)} bytes; the limit is {max_bytes}",
                              Code.PAYLOAD_TOO_LARGE))
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise Rejected(Reason("(body)", "payload is not UTF-8 text", Code.NOT_UTF8)) from None
    except RecursionError:
        raise Rejected(Reason("(body)", "JSON is nested too deeply", Code.NESTING_TOO_DEEP)) from None
    except json.JSONDecodeError as exc:
        raise Rejected(Reason("(body)", f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                              Code.MALFORMED_JSON)) from None
    if not isinstance(data, dict):
        raise Rejected(Reason("(body)", f"expected a JSON object, got {type(data).__name__}",
                              Code.NOT_AN_OBJECT))
    return data


async def dispatch(
    routes: Mapping[str, Route], name: str, body: bytes, max_bytes: int, **context: Any
) -> dict[str, Any]:
    """Run one command or query and turn every outcome into a reply."""
    route = routes.get(name)
    if route is None:
        known = ", ".join(sorted(routes))
        return rejection([Reason("(subject)", f"unknown command or query {name[:64]!r}; known: {known}",
                                   Code.UNKNOWN_COMMAND)])
    try:
        payload = route.model.model_validate(parse_json_object(body, max_bytes))
        return await route.handler(payload, **context)
    except ValidationError as exc:
        return rejection(validation_reasons(exc))
    except NotFound as exc:
        return rejection(exc.reasons, exc.guidance, status="not_found")
    except Rejected as exc:
        return rejection(exc.reasons, exc.guidance)
    except TRANSIENT as exc:
        # NATS or the database did not answer (a restart, a failover). Even if an append went
        # through before its ack was lost, the same message again is safe: events derive their
        # ids from the command_id, so a retry finds them instead of writing them twice.
        log.warning("command_unavailable", command=name, error=f"{type(exc).__name__}: {exc}")
        return rejection([Reason("", "temporarily unavailable (the event log or the database did not answer); "
                                     "retrying with the same command_id is safe", Code.UNAVAILABLE)],
                         status="unavailable")
    except Exception:  # the service must keep serving; the log has the detail
        log.exception("command_failed", command=name)
        return rejection([Reason("", "internal error while handling the request; retrying with the same command_id "
                                 "is safe", Code.INTERNAL_ERROR)], status="error")
