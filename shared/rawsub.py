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
and stays; a subscription is raw from ``subscribe_raw`` to ``unsubscribe_raw``. The dispatcher's
synchronous half (``direct``) lets a parser that knows it (``natsparser``) hand a raw subscription
its message without making a coroutine for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

RawHandler = Callable[[bytes, bytes, bytes, bytes | None], None]  # subject, reply, payload, header block
# sid, subject, reply, payload, header block; False when the sid is not a raw subscription's
Deliver = Callable[[int, bytes, bytes, bytes, bytes | None], bool]

_HANDLERS = "_rethink_raw_handlers"
_DIRECT = "_rethink_raw_direct"


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


def direct(nc: Any) -> tuple[Any, Deliver] | None:
    """The dispatcher put on ``nc`` (None if none) and its synchronous half: while ``nc._process_msg``
    is that dispatcher, calling ``deliver`` is what awaiting it would do for a raw subscription's
    message, and it returns False, having done nothing, for any other."""
    found: tuple[Any, Deliver] | None = nc.__dict__.get(_DIRECT)
    return found


def _dispatching(nc: Any) -> dict[int, RawHandler]:
    handlers: dict[int, RawHandler] | None = nc.__dict__.get(_HANDLERS)
    if handlers is not None:
        return handlers
    found: dict[int, RawHandler] = {}
    to_nats_py = nc._process_msg  # the bound method; the parser looks it up on the instance

    def deliver(sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> bool:
        handler = found.get(sid)
        if handler is None:
            return False
        nc.stats["in_msgs"] += 1
        nc.stats["in_bytes"] += len(data)
        handler(subject, reply, data, headers)
        return True

    async def process(sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        if not deliver(sid, subject, reply, data, headers):
            await to_nats_py(sid, subject, reply, data, headers)

    nc._process_msg = process
    nc.__dict__[_DIRECT] = (process, deliver)
    nc.__dict__[_HANDLERS] = found
    return found
