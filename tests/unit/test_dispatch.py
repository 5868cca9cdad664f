"""How a command's outcome becomes its reply: what the caller should do next is in the status."""

from __future__ import annotations

import nats.errors
import nats.js.errors
import pytest
import sqlalchemy.exc
from pydantic import BaseModel

from rethink.shared.messaging import Route, dispatch


class Ping(BaseModel):
    pass


def failing_with(exc: BaseException) -> dict[str, Route]:
    async def handler(_: Ping) -> dict:
        raise exc
    return {"go": Route(Ping, handler, "fails")}


@pytest.mark.parametrize("exc", [
    nats.errors.TimeoutError(),
    nats.errors.ConnectionClosedError(),
    nats.js.errors.NoStreamResponseError(),
    sqlalchemy.exc.OperationalError("INSERT", {}, Exception("database is locked")),
])
async def test_nats_or_the_database_not_answering_says_unavailable_and_safe_to_retry(exc):
    reply = await dispatch(failing_with(exc), "go", b"{}", 1024)
    assert reply["status"] == "unavailable"
    assert "retrying with the same command_id is safe" in reply["reasons"][0]["message"]


async def test_a_bug_is_an_internal_error_without_its_detail():
    reply = await dispatch(failing_with(KeyError("secret-internal-name")), "go", b"{}", 1024)
    assert reply["status"] == "error"
    assert "secret-internal-name" not in str(reply)
