"""The deployed topology without containers: three clustered nats-servers on loopback, from the
config files Compose mounts, the stream at three replicas, the four services as processes, each
with its projection in a PostgreSQL database of its own (as in deploy/compose.yaml).

A case goes from request to closure, and the node leading the event stream dies in the middle:
the other two keep the log, the services reconnect, and the case still closes with every event
once, in order, its hash chain intact.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import psycopg
import pytest
from sqlalchemy import create_engine, text

from rethink.shared.audit import verify_chain
from rethink.shared.auth import Registry
from rethink.shared.cli.client import Client, CliError
from rethink.shared.cli.supervisor import run_bootstrap, spawn, wait_until_serving
from rethink.shared.migrations import DATABASES, migrate
from rethink.shared.settings import SERVICES, Settings
from tests.deploy.nats_cluster import NODES, LoopbackCluster
from tests.support import request_payload, wait_for

pytestmark = [pytest.mark.nats, pytest.mark.e2e]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[LoopbackCluster, Settings]]:
    probe = Settings(state_dir=tmp_path / "state")
    passwords = Registry(probe.auth_dir, probe).ensure_core()  # the same `rethink auth init` operators run
    nodes = LoopbackCluster(tmp_path / "cluster", Registry(probe.auth_dir, probe).config_file)
    settings = Settings(nats_url=nodes.urls("rethink-services", passwords["rethink-services"]),
                        state_dir=probe.state_dir, stream_replicas=3)
    nodes.start_all()
    try:
        nodes.wait_until_ready()
        yield nodes, settings
    finally:
        nodes.stop_all()


ADMIN_URL = os.environ.get("RETHINK_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def databases(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A database per service, uniquely named for this run and dropped afterwards."""
    base = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
    tag = uuid.uuid4().hex[:8]
    names = {db: f"rethink_cluster_{tag}_{db}" for db in (*SERVICES, "outbox")}  # outbox: scheduling's mail
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        for name in names.values():
            admin.execute(f'CREATE DATABASE "{name}"')
    urls = {}
    for svc, name in names.items():
        auth = base.get("user", "postgres") + (f":{base['password']}" if base.get("password") else "")
        urls[svc] = f"postgresql+psycopg://{auth}@{base.get('host', '127.0.0.1')}:{base.get('port', 5432)}/{name}"
        # The service processes read their settings from the environment, as in a container.
        monkeypatch.setenv(f"RETHINK_DATABASE_URL__{svc.upper()}", urls[svc])
    try:
        yield urls
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            for name in names.values():
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def services(cluster, databases) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    _, settings = cluster
    asyncio.run(run_bootstrap(settings))
    # The bootstrap job's second step (`rethink bootstrap` runs both): services on PostgreSQL
    # refuse to start on a schema that is not at the latest migration.
    migrate(settings.model_copy(update={"database_url": databases}), list(DATABASES))
    procs = {name: spawn(name, settings, settings.state_dir / "logs") for name in SERVICES}
    try:
        asyncio.run(wait_until_serving(settings))
        yield procs
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


async def _stream_cluster(settings: Settings, stream: str | None = None):
    nc = await nats.connect(**settings.nats_connect_kwargs())
    try:
        return (await nc.jetstream().stream_info(stream or settings.stream)).cluster
    finally:
        await nc.close()


async def _stream_cluster_or_none(settings: Settings):
    """None while the cluster cannot answer (an election in progress)."""
    try:
        return await _stream_cluster(settings)
    except (nats.errors.Error, OSError):
        return None


async def _history(settings: Settings, case_id: str):
    # A fresh connection each time: the one it had may have been to the node that died. While
    # the stream elects a new leader a read may also get JetStream's 503 or no answer: try again.
    try:
        async with Client(settings) as c:
            return await c.history(case_id)
    except (CliError, nats.js.errors.ServiceUnavailableError, nats.js.errors.NoStreamResponseError,
            nats.errors.TimeoutError):
        return []


async def _ask(settings: Settings, call):
    """A command or query, retried while the cluster elects a new leader for the stream."""
    async def attempt():
        try:
            async with Client(settings) as c:
                return await call(c)
        except CliError as exc:
            return exc
    return await wait_for(attempt, lambda r: not isinstance(r, CliError), timeout=30, what="a reply")


def _types(history) -> list[str]:
    return [r.type for r in history]


def _record(due) -> dict:
    return {
        "held_at": datetime.now(UTC).isoformat(),
        "attendees": [{"name": "Sam Teacher", "agency": "Northside School Trust"},
                      {"name": "Alex Social", "agency": "Children's Social Care"}],
        "stages": {"strengths": "Good attendance", "impact": "Plan drift", "ways_forward": "Share chronologies",
                   "learning": "Share early",
                   "perspectives": [{"professional": "Sam Teacher", "agency": "Northside School Trust",
                                     "feelings": "worried", "needs": "clarity"}]},
        "outcome": "resolved",
        "actions": [{"description": "Share the chronology", "due_date": due.isoformat(),
                     "owner": {"name": "Alex Social", "agency": "Children's Social Care",
                               "email": "sw@council.example.org"}}],
    }


async def _lifecycle(nodes: LoopbackCluster, settings: Settings) -> tuple[str, str]:
    stream = await _stream_cluster(settings)
    assert len(stream.replicas) == 2 and stream.leader in NODES  # three copies: a leader and two followers
    # So are the parked events, the receipts owed to agencies and the messages they stored for intake.
    for other in (settings.dead_letter_stream, settings.receipt_stream, settings.inbound_stream):
        assert len((await _stream_cluster(settings, other)).replicas) == 2, other

    receipt = await _ask(settings, lambda c: c.agency_command("police", "submit", request_payload()))
    case_id = receipt["case_id"]
    await wait_for(lambda: _history(settings, case_id), lambda h: "FacilitatorAssigned" in _types(h),
                   timeout=30, what="assignment")
    starts = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    await _ask(settings, lambda c: c.command("scheduling", "schedule", {
        "case_id": case_id, "starts_at": starts.isoformat(), "mode": "in_person", "venue": "Room 1, example"}))
    await wait_for(lambda: _history(settings, case_id), lambda h: "MeetingScheduled" in _types(h), what="schedule")

    # The node that leads the event stream dies, mid-case, without a goodbye.
    victim = (await _stream_cluster(settings)).leader
    nodes.kill(victim)
    survivors = await wait_for(lambda: _stream_cluster_or_none(settings),
                               lambda c: c is not None and c.leader not in (None, victim),
                               timeout=30, what="a new stream leader")

    rec = await _ask(settings, lambda c: c.command("meeting", "record", {"case_id": case_id,
                                                                         **_record(datetime.now(UTC).date())}))
    await wait_for(lambda: _history(settings, case_id), lambda h: "ActionRecorded" in _types(h),
                   timeout=30, what="the action")
    await _ask(settings, lambda c: c.command("meeting", "complete_action",
                                             {"case_id": case_id, "action_id": rec["action_ids"][0]}))
    history = await wait_for(lambda: _history(settings, case_id), lambda h: "CaseClosed" in _types(h),
                             timeout=30, what="closure")

    assert _types(history) == ["RequestSubmitted", "ChecksConfirmed", "FacilitatorAssigned", "MeetingScheduled",
                               "MeetingHeld", "ActionRecorded", "ActionCompleted", "CaseClosed"]
    assert verify_chain(case_id, history).intact
    closed = (await _ask(settings, lambda c: c.query("escalation", "case", {"case_id": case_id})))["result"]
    assert closed["closed"] is True and closed["closed_reason"] == "resolved_at_meeting"
    return victim, survivors.leader


def test_a_case_closes_on_the_three_node_cluster_while_the_stream_leader_dies(cluster, databases, services) -> None:
    nodes, settings = cluster
    victim, new_leader = asyncio.run(_lifecycle(nodes, settings))
    assert new_leader != victim
    assert all(p.poll() is None for p in services.values()), "a service died with the node"
    for svc in SERVICES:  # each projection, and its checkpoint, is in PostgreSQL, in the service's schema
        engine = create_engine(databases[svc])
        with engine.connect() as db:
            assert db.execute(text(f"SELECT max(last_seq) FROM {svc}.checkpoint")).scalar() >= 1, svc
        engine.dispose()

    # The dead node comes back and catches up from its own store and its peers: three current copies again.
    nodes.start(victim)

    async def replicas_current():
        info = await _stream_cluster_or_none(settings)
        return [(r.name, r.current) for r in (info.replicas or [])] if info else []

    asyncio.run(wait_for(replicas_current, lambda rs: len(rs) == 2 and all(cur for _, cur in rs),
                         timeout=60, what="the restarted node to catch up"))
