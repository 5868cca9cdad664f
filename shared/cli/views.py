"""A case as the services see it: each one's own projection, gathered over NATS."""

from __future__ import annotations

from typing import Any

from rethink.shared.settings import SERVICES

from .client import Client, CliError


async def case_state(client: Client, case_id: str) -> dict[str, Any]:
    state: dict[str, Any] = {"case_id": case_id}
    found = False
    for name in SERVICES:
        try:
            reply = await client.query(name, "case", {"case_id": case_id})
        except CliError as exc:
            state[name] = {"unavailable": str(exc)}
            continue
        if reply.get("status") == "ok":
            found = True
            result = dict(reply["result"])
            result.pop("case_id", None)
            state[name] = result
        else:
            state[name] = None
    if not found:
        raise CliError(f"no case {case_id} in any service's records")
    return state
