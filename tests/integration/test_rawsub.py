"""Raw subscriptions get each message's bytes from nats-py's parser; every other subscription of
the same connection goes on as before. Fails if nats-py's internals it relies on change."""

from __future__ import annotations

import asyncio
import json

from nats.js import api

from rethink.shared.rawsub import description_of, status_of, subscribe_raw, unsubscribe_raw
from tests.support import wait_for


async def test_a_raw_subscription_gets_the_bytes_and_the_others_their_messages(nc):
    raw: list[tuple] = []
    plain: list = []
    inbox = nc.new_inbox()
    sub = await subscribe_raw(nc, inbox, lambda *parts: raw.append(parts))

    async def keep(msg):
        plain.append(msg)

    other = await nc.subscribe(f"{inbox}.plain", cb=keep)
    await nc.publish(inbox, b"with headers", headers={"Nats-Msg-Id": "m-1"}, reply="reply.to")
    await nc.publish(inbox, b"without")
    await nc.publish(f"{inbox}.plain", b"to the other", headers={"A": "b"})
    await wait_for(lambda: asyncio.sleep(0, len(raw) == 2 and len(plain) == 1), what="both delivered")

    (subject, reply, data, headers), (_, no_reply, data2, no_headers) = raw
    assert (subject, reply, data) == (inbox.encode(), b"reply.to", b"with headers")
    assert headers.startswith(b"NATS/1.0") and b"Nats-Msg-Id: m-1" in headers
    assert (no_reply, data2, no_headers) == (b"", b"without", None)
    assert status_of(data, headers) is None and status_of(data2, no_headers) is None
    assert plain[0].data == b"to the other" and plain[0].headers == {"A": "b"}  # nats-py's own path

    await unsubscribe_raw(nc, sub)
    await other.unsubscribe()
    assert nc.stats["in_msgs"] >= 3


async def test_a_pull_requests_status_reads_as_the_servers(nc, stream, settings):
    js = nc.jetstream()
    consumer = await js.add_consumer(settings.stream, config=api.ConsumerConfig(
        ack_policy=api.AckPolicy.NONE, mem_storage=True, inactive_threshold=10.0))
    statuses: list[tuple[str | None, str]] = []
    sub = await subscribe_raw(nc, nc.new_inbox(), lambda s, r, d, h: statuses.append((status_of(d, h),
                                                                                     description_of(h or b""))))
    try:
        await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{settings.stream}.{consumer.name}",
                         json.dumps({"batch": 1, "no_wait": True}).encode(), reply=sub.subject)
        await wait_for(lambda: asyncio.sleep(0, bool(statuses)), what="the server's answer")
    finally:
        await unsubscribe_raw(nc, sub)
    assert statuses[0][0] == "404" and "No Messages" in statuses[0][1]
