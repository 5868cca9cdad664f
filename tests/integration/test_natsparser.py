"""With the cheaper protocol parse installed, a client against a real nats-server gets every message
and its headers as with nats-py's, raw subscriptions included, and a replay rebuilds the same
projections. Fails if nats-py's parser is no longer the one the parse was checked against."""

from __future__ import annotations

import asyncio

import pytest
from nats.protocol.parser import Parser
from sqlalchemy import select

from rethink.shared import natsparser, rawsub
from rethink.shared.rawsub import subscribe_raw, unsubscribe_raw
from rethink.shared.rebuild import projection_store, replay_into
from rethink.shared.settings import SERVICES
from tests.benchmarks.replay import fill
from tests.support import wait_for

pytestmark = pytest.mark.nats


def use(monkeypatch, parse) -> list[int]:
    """``parse`` as every nats-py client's (until the test ends); the sizes of the reads it is given."""
    count: list[int] = []

    async def counted(parser, data=b""):
        count.append(len(data))
        return await parse(parser, data)

    monkeypatch.setattr(Parser, "parse", counted)
    return count


@pytest.fixture
def parses(monkeypatch) -> list[int]:
    monkeypatch.setattr(Parser, "parse", natsparser.original_parse)
    assert natsparser.install() and Parser.parse is natsparser.parse
    return use(monkeypatch, natsparser.parse)


# Sizes around nats-py's 32 KiB reads, so payloads and lines are cut between reads.
SENT = [(b"", {"Only": "headers"}), (b"x", None), (b"y" * 40_000, {"Big": "1"}), (b"z" * 32_700, {"A": "b"}),
        *((f"event {n}".encode() * (n % 7), {"Nats-Msg-Id": f"m-{n}", "N": str(n)}) for n in range(300))]


async def test_messages_and_headers_arrive_through_the_fast_parse(nc, parses):
    inbox = nc.new_inbox()
    plain: list = []
    raw: list[tuple] = []

    async def keep(msg):
        plain.append((msg.data, msg.headers, msg.reply))

    sub = await nc.subscribe(f"{inbox}.plain", cb=keep)
    rsub = await subscribe_raw(nc, f"{inbox}.raw", lambda s, r, d, h: raw.append((s, r, d, h)))
    for data, headers in SENT:
        await nc.publish(f"{inbox}.plain", data, headers=headers, reply="answer.here")
        await nc.publish(f"{inbox}.raw", data, headers=headers)
    await wait_for(lambda: asyncio.sleep(0, len(plain) == len(raw) == len(SENT)), what="every message")
    await sub.unsubscribe()
    await unsubscribe_raw(nc, rsub)

    assert plain == [(data, headers, "answer.here") for data, headers in SENT]
    assert [(d, h is None) for s, r, d, h in raw] == [(data, headers is None) for data, headers in SENT]
    assert raw[0][:3] == (f"{inbox}.raw".encode(), b"", b"")
    assert raw[0][3].startswith(b"NATS/1.0\r\n") and b"Only: headers" in raw[0][3]
    assert sum(parses) > 2 * 73_000  # it read them all
    answer = await nc.request("$JS.API.INFO", b"", timeout=5)  # nats-py's own request/reply on top
    assert b'"type":"io.nats.jetstream.api.v1.account_info_response"' in answer.data


def _rows(store):
    with store.engine.connect() as conn:
        return {name: sorted(map(tuple, conn.execute(select(table)).all()), key=repr)
                for name, table in sorted(store.metadata.tables.items())}


async def test_a_replay_through_the_fast_parse_rebuilds_what_nats_pys_does(nc, stream, settings, tmp_path,
                                                                           monkeypatch):
    js = nc.jetstream()
    total = await fill(js, settings, copies=6)
    handed: list[int] = []  # messages the fast parse handed to a raw subscription without a coroutine
    found = rawsub.direct

    def direct(client):
        pair = found(client)
        if pair is None:
            return None
        process, deliver = pair
        return process, lambda sid, *rest: bool(handed.append(sid) or deliver(sid, *rest))

    monkeypatch.setattr(rawsub, "direct", direct)
    rebuilt, parses = {}, {}
    for label, parse in (("nats-py", natsparser.original_parse), ("fast", natsparser.parse)):
        parses[label] = use(monkeypatch, parse)
        for service in SERVICES:
            store = projection_store(service, f"sqlite:///{tmp_path / f'{service}-{label}.db'}")
            result = await replay_into(js, settings, store)
            assert result.events_read == total and result.skipped_unreadable == 0
            rebuilt[label, service] = _rows(store)
            store.engine.dispose()
    assert sum(parses["fast"]) > sum(parses["nats-py"]) / 2 > 0
    assert len(handed) >= total * len(SERVICES)  # every event, to each replay
    for service in SERVICES:
        assert rebuilt["fast", service] == rebuilt["nats-py", service], service
        assert any(rebuilt["fast", service].values()), service
