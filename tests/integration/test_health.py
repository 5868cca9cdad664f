"""/healthz, /readyz and /metrics of a running service, against a real nats-server and PostgreSQL.

Readiness is shown to fail for real: a database behind a TCP proxy that the test cuts, and a
nats-server of the test's own that it stops and starts again.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from rethink.intake.app import build as intake
from rethink.shared.cli.client import Client
from rethink.shared.cli.supervisor import service_env
from rethink.shared.health import HealthServer
from rethink.shared.migrations import migrate
from rethink.shared.natsserver import free_port
from rethink.shared.runtime import RunningService
from tests.conftest import on_postgres
from tests.support import CuttableProxy, request_payload, seed_case, take_from_durable, wait_for

pytestmark = pytest.mark.nats


async def get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return int(head.split(" ", 2)[1]), body


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of an exposition, keyed by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def serve(svc: RunningService) -> HealthServer:
    return await HealthServer(svc.readiness, svc.metrics_text, host="127.0.0.1", port=0).start()


async def test_metrics_move_as_events_are_applied_and_commands_answered(run_services, settings, nc):
    [svc] = await run_services(intake)
    health = await serve(svc)
    try:
        assert await get(health.port, "/healthz") == (200, '{"status": "ok"}\n')
        assert (await get(health.port, "/nothing"))[0] == 404
        assert (await get(health.port, "/metrics", "POST"))[0] == 405
        status, body = await get(health.port, "/readyz")
        assert status == 200 and '"nats": "ok"' in body and '"database": "ok"' in body
        before = samples((await get(health.port, "/metrics"))[1])
        applied = ("rethink_events_applied_total", (("service", "intake"), ("type", "ChecksConfirmed")))
        assert applied not in before

        async with Client(settings) as client:
            receipt = await client.agency_command("police", "submit", request_payload())
        assert receipt["status"] == "accepted"

        async def metrics():
            return samples((await get(health.port, "/metrics"))[1])

        # Counted once applied; pending falls to 0 once JetStream has the acks too (sent after the batch).
        pending = ("rethink_consumer_pending", (("service", "intake"),))
        after = await wait_for(metrics, lambda m: m.get(applied) == 1.0 and m.get(pending) == 0,
                               what="ChecksConfirmed counted and acked")
        last = (await nc.jetstream().stream_info(settings.stream)).state.last_seq
        assert after[("rethink_events_applied_total", (("service", "intake"), ("type", "RequestSubmitted")))] == 1.0
        assert after[("rethink_last_applied_seq", (("service", "intake"),))] == last == 2
        assert after[("rethink_command_seconds_count",
                      (("command", "submit"), ("service", "intake"), ("status", "accepted")))] == 1.0
        assert after.get(("rethink_events_dead_lettered_total", (("service", "intake"),)), 0) == 0
    finally:
        await health.stop()


async def test_readyz_is_503_while_the_database_is_unreachable_and_200_again_after(
        run_services, settings, postgres_url):
    target = make_url(postgres_url)
    proxy = CuttableProxy(target.host or "127.0.0.1", target.port or 5432)
    proxy.start()
    proxied = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    pg = on_postgres(settings, proxied)
    migrate(pg, ["intake"])
    [svc] = await run_services(lambda s, log, clock: intake(pg, log, clock))
    health = await serve(svc)
    try:
        assert (await get(health.port, "/readyz"))[0] == 200
        proxy.cut()
        status, body = await get(health.port, "/readyz")
        assert status == 503 and '"database": "OperationalError' in body and '"nats": "ok"' in body
        assert (await get(health.port, "/healthz"))[0] == 200  # alive: do not restart it for this
        proxy.start()
        await wait_for(lambda: get(health.port, "/readyz"), lambda r: r[0] == 200, what="ready again")
    finally:
        await health.stop()
        proxy.cut()


async def test_readyz_is_503_while_nats_is_down_and_200_again_after(own_nats):
    server, own = own_nats
    svc = RunningService(intake, own)
    await svc.start()
    health = await serve(svc)
    try:
        assert (await get(health.port, "/readyz"))[0] == 200
        server.stop()
        status, body = await wait_for(lambda: get(health.port, "/readyz"), lambda r: r[0] == 503,
                                      what="not ready without NATS")
        assert '"nats": "not connected"' in body and '"database": "ok"' in body
        server.start()  # same port, same store
        await wait_for(lambda: get(health.port, "/readyz"), lambda r: r[0] == 200, timeout=30,
                       what="ready again once NATS is back")
    finally:
        await health.stop()
        await svc.stop()


async def test_readyz_is_503_while_the_consumer_lags_beyond_its_bound(settings, stream, event_log):
    from sqlalchemy.exc import OperationalError

    from rethink.shared.events import ChecksConfirmed
    from rethink.shared.runtime import ServiceParts
    from tests.unit.test_projection_contract import submitted

    stuck = asyncio.Event()
    stuck.set()
    applied: list[int] = []

    async def on_event(r) -> None:
        if stuck.is_set():  # the database "down": retried in place, so the consumer cannot move on
            raise OperationalError("SELECT 1", {}, ConnectionError("database unavailable"))
        applied.append(r.seq)

    bounded = settings.model_copy(update={"ready_max_pending": 1})
    svc = RunningService(lambda s, log, clock: ServiceParts(name="intake", on_event=on_event), bounded)
    await svc.start()
    health = await serve(svc)
    try:
        await seed_case(event_log, "RT-AAAAAAAAAA", [submitted(), ChecksConfirmed(checks=submitted().checks)])
        await seed_case(event_log, "RT-BBBBBBBBBB", [submitted()])
        # The first event is in hand (failing); none of the three is applied: all are pending,
        # whether still in the stream or in hand behind the failing one.
        await wait_for(lambda: get(health.port, "/readyz"),
                       lambda r: r[0] == 503 and '"consumer": "3 events pending, more than 1"' in r[1],
                       what="not ready while lagging")
        lagging = samples((await get(health.port, "/metrics"))[1])
        assert lagging[("rethink_consumer_pending", (("service", "intake"),))] == 3
        assert lagging[("rethink_event_handler_failures_total",
                        (("service", "intake"), ("transient", "true"), ("type", "RequestSubmitted")))] >= 1
        stuck.clear()

        async def applied_so_far():
            return list(applied)

        assert await wait_for(applied_so_far, lambda a: len(a) == 3, timeout=30, what="caught up") == [1, 2, 3]
        # Ready again once JetStream has the acks too (sent together, a few ms after applying).
        await wait_for(lambda: get(health.port, "/readyz"), lambda r: r[0] == 200, what="nothing pending any more")
    finally:
        await health.stop()
        await svc.stop()


async def test_a_redelivered_event_is_counted_by_type_with_its_handling_time(run_services, settings, stream,
                                                                             event_log, nc):
    from rethink.shared.events import ChecksConfirmed
    from tests.unit.test_projection_contract import submitted

    await seed_case(event_log, "RT-AAAAAAAAAA", [submitted(), ChecksConfirmed(checks=submitted().checks)])
    # A replica took the first event from the shared consumer and gave it back unapplied (a nak, as
    # on SIGTERM mid-event): JetStream hands it out a second time.
    taken = await take_from_durable(nc, settings.stream, "intake")
    await taken.nak()

    [svc] = await run_services(intake)
    health = await serve(svc)
    try:
        async def metrics():
            return samples((await get(health.port, "/metrics"))[1])

        key = (("service", "intake"), ("type", "RequestSubmitted"))
        after = await wait_for(metrics, lambda m: m.get(("rethink_events_applied_total", key)) == 1.0,
                               what="the redelivered event applied")
        assert after[("rethink_event_redeliveries_total", key)] == 1.0
        assert after[("rethink_event_handler_seconds_count", key)] == 1.0
        confirmed = (("service", "intake"), ("type", "ChecksConfirmed"))
        await wait_for(metrics, lambda m: m.get(("rethink_events_applied_total", confirmed)) == 1.0,
                       what="the next event applied")
        assert (await metrics()).get(("rethink_event_redeliveries_total", confirmed), 0) == 0  # delivered once
    finally:
        await health.stop()


async def test_a_parked_event_is_counted_as_dead_lettered_not_as_applied(settings, stream, event_log):
    from rethink.shared.runtime import ServiceParts
    from tests.unit.test_projection_contract import submitted

    async def on_event(r) -> None:
        raise ValueError("a bug: this event can never be applied")

    svc = RunningService(lambda s, log, clock: ServiceParts(name="intake", on_event=on_event),
                         settings.model_copy(update={"max_handler_attempts": 2}))
    await svc.start()
    health = await serve(svc)
    try:
        await seed_case(event_log, "RT-AAAAAAAAAA", [submitted()])

        async def metrics():
            return samples((await get(health.port, "/metrics"))[1])

        after = await wait_for(metrics, lambda m: m.get(("rethink_events_dead_lettered_total",
                                                          (("service", "intake"),))) == 1.0, what="parked")
        assert after[("rethink_event_handler_failures_total",
                      (("service", "intake"), ("transient", "false"), ("type", "RequestSubmitted")))] == 2
        assert not [k for k in after if k[0] == "rethink_events_applied_total"]
    finally:
        await health.stop()
        await svc.stop()


@pytest.mark.e2e
async def test_rethink_service_run_serves_health_on_its_port(settings, stream):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rethink.shared.cli", "service", "run", "intake"],
                            env={**service_env(settings), "RETHINK_HEALTH_PORT": str(port)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        async def ready():
            try:
                return await get(port, "/readyz")
            except OSError:
                return None

        status, body = await wait_for(ready, lambda r: r is not None and r[0] == 200, timeout=30,
                                      what="the service process to be ready")
        metrics = (await get(port, "/metrics"))[1]
        assert "rethink_consumer_pending" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
