"""Raw subscriptions: a subscription's messages handed over as the bytes nats-py parsed.

For every message nats-py builds a ``Msg`` (its headers parsed), puts it on the subscription's
queue, and a task awaits a callback for it: ~20 µs of CPU a message, measured. A replay reads
every event in the log and ignores most of them (an event whose type its projection does not
read costs nothing else), so that was most of what it spent on them. A raw subscription's
handler is called synchronously from nats-py's parser with the subject, reply subject, payload
and header block, and nothing else is made: ~9 µs a message.

It works by putting a dispatcher in front of the client's ``_process_msg`` (nats-py 2.16, pinned;
``tests/integration/test_rawsub.py`` fails if that changes): messages of a raw subscription go to its
handler, all others on to nats-py as before. The dispatcher is put on the client instance once
and stays; a subscription is raw from ``subscribe_raw`` to ``unsubscribe_raw``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

RawHandler = Callable[[bytes, bytes, bytes, bytes | None], None]  # subject, reply, payload, header block

_HANDLERS = "_rethink_raw_handlers"


async def subscribe_raw(nc: Any, subject: str, handler: RawHandler) -> Any:
    """Subscribe ``handler`` to ``subject`` on the nats-py client ``nc``; returns the subscription."""
    handlers = _dispatching(nc)
    sub = await nc.subscribe(subject)  # no callback: nothing of it reaches nats-py's queue anyway
    handlers[sub._id] = handler  # before anything is asked for on this inbox, so nothing is missed
    return sub


async def unsubscribe_raw(nc: Any, sub: Any) -> None:
    _dispatching(nc).pop(sub._id, None)
    with contextlib.suppress(Exception):  # a connection already closed has no subscription to end
        await sub.unsubscribe()


def status_of(payload: bytes, headers: bytes | None) -> str | None:
    """The server's status on a pull request's inbox (``NATS/1.0 404 No Messages``), None for a message."""
    if payload or headers is None or not headers.startswith(b"NATS/1.0 "):
        return None
    return headers[9:12].decode("ascii", "replace")


def description_of(headers: bytes) -> str:
    line = headers.split(b"\r\n", 1)[0]
    return line[13:].decode("utf-8", "replace").strip()


def _dispatching(nc: Any) -> dict[int, RawHandler]:
    handlers: dict[int, RawHandler] | None = nc.__dict__.get(_HANDLERS)
    if handlers is not None:
        return handlers
    found: dict[int, RawHandler] = {}
    to_nats_py = nc._process_msg  # the bound method; the parser looks it up on the instance

    async def process(sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        handler = found.get(sid)
        if handler is None:
            return await to_nats_py(sid, subject, reply, data, headers)
        nc.stats["in_msgs"] += 1
        nc.stats["in_bytes"] += len(data)
        handler(subject, reply, data, headers)

    nc._process_msg = process
    nc.__dict__[_HANDLERS] = found
    return found
