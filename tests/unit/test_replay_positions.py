"""A replay reads a message's sequences from its reply subject as nats-py does."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg
from nats.errors import NotJSMessageError

from rethink.shared.rebuild import positions, stream_seq

REPLIES = [
    "$JS.ACK.RETHINK.intake.1.4711.12.1732690000000000000.99",  # v1
    "$JS.ACK._.ACCHASH.RETHINK.intake.1.4712.13.1732690000000000000.98.rnd",  # v2
    "$JS.ACK.hub.ACCHASH.RETHINK.intake.2.4713.14.1732690000000000000.0",  # v2 without its last token
]


@pytest.mark.parametrize("reply", REPLIES)
def test_the_sequences_are_nats_pys(reply):
    meta = Msg.Metadata._from_reply(reply)
    assert positions(reply) == (meta.sequence.stream, meta.sequence.consumer, meta.num_pending)
    assert positions(reply)[0] in (4711, 4712, 4713)
    assert stream_seq(reply.encode()) == meta.sequence.stream  # every message's, read from the bytes


@pytest.mark.parametrize("reply", ["", "_INBOX.abc", "$JS.ACK.too.short"])
def test_a_message_that_is_not_from_jetstream_is_refused_as_nats_py_refuses_it(reply):
    with pytest.raises(NotJSMessageError):
        positions(reply)
    with pytest.raises(NotJSMessageError):
        stream_seq(reply.encode())
