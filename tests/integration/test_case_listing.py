"""Listing every case pages through the server's subject list, whatever the size of the log.

nats-server lists at most 100,000 subjects in one stream-info reply and does not let the
client choose a smaller page. So this test writes more cases than that (one tiny message per
case subject: the listing never reads messages) and shows the listing finds every one.
"""

from __future__ import annotations

import pytest

from rethink.shared.envelope import new_case_id
from tests.support import wait_for

pytestmark = pytest.mark.nats

SERVER_PAGE = 100_000  # nats-server's JSMaxSubjectDetails


async def test_case_ids_pages_past_the_servers_limit_of_subjects_per_reply(event_log, nc, settings):
    cases = sorted({new_case_id(seed=str(i)) for i in range(SERVER_PAGE + 150)})
    for i, case_id in enumerate(cases):
        await nc.publish(event_log.subjects.event(case_id, "CaseClosed"), b"{}")
        if i % 5000 == 0:
            await nc.flush()  # keep the server's inbound queue short; a core publish has no ack
    await nc.flush()
    js = nc.jetstream()
    await wait_for(lambda: js.stream_info(settings.stream), lambda i: i.state.messages == len(cases),
                   timeout=60, what="every case subject stored")

    first = await event_log.subjects_page(0)
    # One reply does not hold them all: this is what the paging exists for.
    assert (first["total"], first["offset"], first["limit"]) == (len(cases), 0, SERVER_PAGE)
    assert len(first["state"]["subjects"]) == SERVER_PAGE
    second = await event_log.subjects_page(SERVER_PAGE)
    assert len(second["state"]["subjects"]) == len(cases) - SERVER_PAGE

    assert await event_log.case_ids() == cases
