"""Nothing acknowledged is lost, nothing is applied twice, whatever part of the system fails.

Each test runs a real system (its own nats-server, the four services as processes) under a
small steady stream of whole case lifecycles, breaks one part, and audits the result: every
acknowledged case is in the log and complete, no event is written twice, and every live
projection equals a fresh rebuild of it from the log. `make reliability` runs the same
faults with more load and prints their figures.
"""

from __future__ import annotations

import pytest

from rethink.shared.settings import SERVICES

from .faults import run_fault

pytestmark = [pytest.mark.nats, pytest.mark.e2e]

CASES, RATE = 8, 4.0


def assert_nothing_lost_or_doubled(row) -> None:
    a = row.audit
    assert a.errors == []
    assert a.acked == a.sent == CASES
    assert (a.in_log, a.completed, a.lost) == (CASES, CASES, 0)
    assert a.duplicates == 0
    assert a.projections == dict.fromkeys(SERVICES, "equal")
    assert row.events_in_log == CASES * 8
    # A retry after "unavailable" is expected while a part is down; "error" would mean a failure
    # the service did not recognise as passing (it is safe to retry, but it is a bug to fix).
    assert not [step for step in row.retries if step.endswith("(error)")], row.retries


@pytest.mark.parametrize("service", SERVICES)
async def test_a_service_killed_under_load_resumes_from_its_checkpoint(service, tmp_path):
    row = await run_fault(tmp_path, f"kill-{service}", CASES, RATE)
    assert_nothing_lost_or_doubled(row)
    assert row.recover_seconds is not None


@pytest.mark.parametrize("service", SERVICES)
async def test_a_service_stopped_with_sigterm_mid_stream_exits_cleanly_and_loses_nothing(service, tmp_path):
    row = await run_fault(tmp_path, f"term-{service}", CASES, RATE)
    assert_nothing_lost_or_doubled(row)
    assert row.extra["exit_code"] == 0


async def test_two_replicas_of_each_service_apply_every_event_once_even_when_one_dies(tmp_path):
    row = await run_fault(tmp_path, "replicas", CASES, RATE)
    assert_nothing_lost_or_doubled(row)


async def test_the_services_reconnect_by_themselves_when_the_nats_server_restarts(tmp_path):
    row = await run_fault(tmp_path, "restart-server", CASES, RATE)
    assert_nothing_lost_or_doubled(row)
    assert row.recover_seconds is not None


async def test_losing_the_stream_leader_of_a_three_node_cluster_loses_nothing(tmp_path):
    row = await run_fault(tmp_path, "kill-node", CASES, RATE)
    assert_nothing_lost_or_doubled(row)
    assert row.extra["killed"] in ("n1", "n2", "n3")
    assert row.recover_seconds is not None  # the node came back and its copy of the stream is current


async def test_a_locked_projection_database_holds_the_consumer_back_then_it_catches_up(tmp_path):
    row = await run_fault(tmp_path, "lock-meeting", CASES, RATE)
    assert_nothing_lost_or_doubled(row)
    assert row.extra["held_back_at_release"] > 0  # the lock really held events back...
    # ...and nothing was acked that had not been applied when the lock came (events applied just
    # before it may be acked during it: a batch is acked together once handled).
    assert row.extra["acked_beyond_applied"] == 0


async def test_a_projection_database_that_goes_away_holds_the_consumer_back_then_it_catches_up(tmp_path):
    row = await run_fault(tmp_path, "cut-postgres", CASES, RATE)
    assert_nothing_lost_or_doubled(row)
    assert row.extra["held_back_at_return"] > 0  # events really waited for the database


async def test_every_event_published_again_with_its_id_is_not_stored_twice(tmp_path):
    row = await run_fault(tmp_path, "duplicates", CASES, RATE)
    assert_nothing_lost_or_doubled(row)
    assert (row.extra["republished"], row.extra["log_grew_by"]) == (CASES * 8, 0)
