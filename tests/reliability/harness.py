"""A whole system of real processes to break: its own nats-server, the four services, a load.

Everything runs on loopback in one temporary folder: a nats-server from the pip package with
a file store, the services as separate processes (what `rethink up` runs), SQLite projections.
Nothing here touches the machine's shared NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors
from nats.js import api
from sqlalchemy import select

from rethink.shared.bootstrap import bootstrap
from rethink.shared.cli.supervisor import service_env
from rethink.shared.envelope import Recorded
from rethink.shared.eventlog import EventLog, Subjects
from rethink.shared.keystore import KeyStoreUnavailable
from rethink.shared.natsserver import EmbeddedNats, free_port
from rethink.shared.privacy import personal_data
from rethink.shared.rebuild import projection_store, replay_into
from rethink.shared.settings import SERVICES, Settings
from tests.benchmarks import workload
from tests.support import CuttableProxy

# One whole lifecycle of the workload (one action) writes exactly one event of each of these.
LIFECYCLE = ("RequestSubmitted", "ChecksConfirmed", "FacilitatorAssigned", "MeetingScheduled", "MeetingHeld",
             "ActionRecorded", "ActionCompleted", "CaseClosed")
AGENCY = "northside-school"
# Replies that mean "send the same message again": the service could not reach NATS or its
# database for a moment, or failed in a way it says is safe to retry.
RETRY_SAFE = ("unavailable", "error")


class NotReady(RuntimeError):
    pass


async def until(probe: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], timeout: float,
                what: str, every: float = 0.1) -> Any:
    """Poll ``probe`` until ``done(value)``; errors while polling count as not yet (the system is recovering)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        with contextlib.suppress(nats.errors.Error, TimeoutError, OSError, NotReady, KeyStoreUnavailable):
            last = await probe()
            if done(last):
                return last
        if time.monotonic() > deadline:
            raise NotReady(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")
        await asyncio.sleep(every)


class System:
    """A nats-server and the four services, each of which can be killed and restarted."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.server = EmbeddedNats(free_port(), root / "nats")
        self.settings = Settings(nats_url=self.server.url, state_dir=root / "state",
                                 overdue_check_interval_seconds=3600)
        self.subjects = Subjects(self.settings.subject_prefix)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.nc: nats.NATS | None = None
        self.env: dict[str, str] = {}  # extra settings for the service processes, as a container gets them

    async def start(self) -> System:
        self.start_nats()
        try:
            # The harness's own connection must survive the server restarts it causes.
            self.nc = await nats.connect(**self.settings.nats_connect_kwargs(), max_reconnect_attempts=-1,
                                         reconnect_time_wait=0.2)
            await bootstrap(self.nc.jetstream(), self.settings)
            for name in SERVICES:
                self.start_service(name)
            await self.wait_serving(SERVICES)
        except BaseException:
            await self.stop()  # never leave a half-started system behind
            raise
        return self

    async def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
        self.stop_nats()

    def start_nats(self) -> None:
        self.server.start()

    def stop_nats(self) -> None:
        self.server.stop()

    @property
    def js(self):
        assert self.nc is not None
        return self.nc.jetstream()

    # --- faults -------------------------------------------------------------------------
    def start_service(self, name: str) -> None:
        self.procs[name] = self._spawn(name, self.root / "logs")

    def _spawn(self, name: str, log_dir: Path) -> subprocess.Popen[bytes]:
        log_dir.mkdir(parents=True, exist_ok=True)
        out = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        return subprocess.Popen([sys.executable, "-m", "rethink.shared.cli", "service", "run", name],
                                env={**service_env(self.settings), **self.env},
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out)

    def start_replica(self, name: str) -> str:
        """A second process of the same service: it shares the durable consumer and the queue groups."""
        key = f"{name}#2"
        self.procs[key] = self._spawn(name, self.root / "logs" / "replica")
        return key

    def kill_service(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def terminate_service(self, name: str, timeout: float = 30.0) -> int:
        """SIGTERM, as an orchestrator stops a container; returns the exit code."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout)

    def kill_server(self) -> None:
        self.server.stop(kill=True)

    def start_server(self) -> None:
        self.server.start(timeout=30)  # same port, same store: what a restarted node does

    # --- observation --------------------------------------------------------------------
    async def ping(self, name: str) -> dict[str, Any]:
        assert self.nc is not None
        msg = await self.nc.request(self.subjects.query(name, "ping"), b"{}", timeout=1.0)
        return json.loads(msg.data)

    async def wait_serving(self, names, timeout: float = 60.0) -> None:
        for name in names:
            await until(lambda n=name: self.ping(n), lambda p: p.get("status") == "ok", timeout, f"{name} serving")

    async def lag(self) -> dict[str, int]:
        """Events each service's durable consumer has not yet acknowledged."""
        out = {}
        for name in SERVICES:
            info = await self.js.consumer_info(self.settings.stream, name)
            out[name] = (info.num_pending or 0) + (info.num_ack_pending or 0)
        return out

    async def caught_up(self, timeout: float = 120.0) -> None:
        await until(self.lag, lambda lag: not any(lag.values()), timeout, "every service caught up")

    async def log(self) -> list[Recorded]:
        """The whole log, in order, through an ephemeral read (what an auditor's replay does).

        On a cluster whose stream leader just moved, the read's consumer can vanish (503): the
        read starts again, as an auditor would run the command again."""
        return await until(self._read_log, lambda _: True, 60, "a complete read of the log", every=0.5)

    async def _read_log(self) -> list[Recorded]:
        info = await self.js.stream_info(self.settings.stream)
        sub = await self.js.pull_subscribe(self.subjects.all_events, stream=self.settings.stream,
                                           config=api.ConsumerConfig(ack_policy=api.AckPolicy.NONE,
                                                                     mem_storage=True, inactive_threshold=30.0))
        out: list[Recorded] = []
        log = EventLog(self.js, self.settings.stream, self.subjects, personal=personal_data(self.js, self.settings))
        try:
            while len(out) < info.state.messages:
                msgs = await sub.fetch(min(500, info.state.messages - len(out)), timeout=5)
                out += await log.decode([(m.data, m.metadata.sequence.stream) for m in msgs])
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return out

    def peak_rss_kib(self) -> dict[str, int]:
        """Each live service's peak resident memory so far (KiB, VmHWM), from /proc."""
        return self._proc_status("VmHWM:")

    def rss_kib(self) -> dict[str, int]:
        return self._proc_status("VmRSS:")

    def _proc_status(self, field: str) -> dict[str, int]:
        out = {}
        for name, proc in self.procs.items():
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith(field):
                        out[name] = int(line.split()[1])
        return out


class ClusterSystem(System):
    """The same, on the three-node JetStream cluster of deploy/nats/ (the event stream at three
    replicas), the services connecting with the credentials `rethink auth init` generates."""

    def __init__(self, root: Path) -> None:
        from rethink.shared.auth import Registry
        from tests.deploy.nats_cluster import LoopbackCluster

        super().__init__(root)
        probe = Settings(state_dir=root / "state")
        passwords = Registry(probe.auth_dir, probe).ensure_core()
        self.cluster = LoopbackCluster(root / "cluster", Registry(probe.auth_dir, probe).config_file)
        self.settings = Settings(nats_url=self.cluster.urls("rethink-services", passwords["rethink-services"]),
                                 state_dir=root / "state", stream_replicas=3, overdue_check_interval_seconds=3600)

    def start_nats(self) -> None:
        self.cluster.start_all()
        self.cluster.wait_until_ready()

    def stop_nats(self) -> None:
        self.cluster.stop_all()

    async def stream_leader(self) -> str:
        return (await self.js.stream_info(self.settings.stream)).cluster.leader

    async def replicas_current(self) -> bool:
        info = (await self.js.stream_info(self.settings.stream)).cluster
        return len(info.replicas or []) == 2 and all(r.current for r in info.replicas)


class PostgresSystem(System):
    """The same, with one service's projection in PostgreSQL reached through a proxy that can be
    cut: the database goes away under the service, connections and all, and comes back."""

    def __init__(self, root: Path, service: str = "meeting") -> None:
        super().__init__(root)
        self.service = service
        self.admin_url = os.environ.get("RETHINK_TEST_DATABASE_URL", "postgresql://127.0.0.1:5432/test")
        self.database = f"rethink_rel_{uuid.uuid4().hex[:10]}"
        self.proxy: CuttableProxy | None = None

    async def start(self) -> System:
        import psycopg
        from sqlalchemy.engine import make_url

        from rethink.shared.migrations import migrate

        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.database}"')
        target = make_url(self.admin_url)
        self.proxy = CuttableProxy(target.host or "127.0.0.1", target.port or 5432)
        self.proxy.start()
        url = target.set(drivername="postgresql+psycopg", host="127.0.0.1", port=self.proxy.port,
                         database=self.database).render_as_string(hide_password=False)
        self.settings = self.settings.model_copy(update={"database_url": {self.service: url}})
        self.env = {f"RETHINK_DATABASE_URL__{self.service.upper()}": url}
        migrate(self.settings, [self.service])  # what the bootstrap job does before services start
        return await super().start()

    async def stop(self) -> None:
        import psycopg

        await super().stop()
        if self.proxy is not None:
            self.proxy.cut()
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


# --- load -------------------------------------------------------------------------------

@dataclass
class Case:
    request_id: str
    started: float
    case_id: str | None = None
    acked: float | None = None  # when intake's receipt said accepted
    closed: float | None = None
    error: str | None = None


@dataclass
class Load:
    """Whole case lifecycles at a fixed rate. Every step is retried until accepted: a service
    that is down, or a server that is restarting, delays a case but must not lose or fork it.
    Repeats are safe because each step carries the same request id or command id every time."""

    system: System
    step_timeout: float = 120.0
    cases: list[Case] = field(default_factory=list)
    retries: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.slots = workload.Slots()
        self.log = EventLog(self.system.js, self.system.settings.stream, self.system.subjects,
                            personal=personal_data(self.system.js, self.system.settings))

    async def _until_accepted(self, step: str, subject: str, payload: dict[str, Any]) -> dict[str, Any]:
        assert self.system.nc is not None
        body = json.dumps(payload).encode()
        deadline = time.monotonic() + self.step_timeout
        delay = 0.05
        while True:
            try:
                reply = json.loads((await self.system.nc.request(subject, body, timeout=5.0)).data)
                if reply.get("status") == "accepted":
                    return reply
                if reply.get("status") not in RETRY_SAFE:
                    raise RuntimeError(f"{step} refused: {json.dumps(reply)[:300]}")
                self.retries[f"{step} ({reply['status']})"] += 1
            except (nats.errors.Error, TimeoutError):
                self.retries[step] += 1
            if time.monotonic() > deadline:
                raise NotReady(f"{step}: not accepted within {self.step_timeout:.0f}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _history_has(self, case_id: str, event_type: str) -> list[Recorded]:
        return await until(lambda: self.log.read_case(case_id), lambda h: any(r.type == event_type for r in h),
                           self.step_timeout, f"{event_type} on {case_id}", every=0.2)

    async def lifecycle(self) -> Case:
        s = self.system.subjects
        case = Case(request_id=f"rel-{uuid.uuid4().hex[:12]}", started=time.monotonic())
        self.cases.append(case)
        try:
            receipt = await self._until_accepted("submit", s.intake(AGENCY, "submit"),
                                                 {**workload.submission(), "request_id": case.request_id})
            case.case_id, case.acked = receipt["case_id"], time.monotonic()
            await self._history_has(case.case_id, "FacilitatorAssigned")
            schedule = {**workload.schedule_command(case.case_id, self.slots.next()), "command_id": str(uuid.uuid4())}
            await self._until_accepted("schedule", s.command("scheduling", "schedule"), schedule)
            record = {**workload.record_command(case.case_id), "command_id": str(uuid.uuid4())}
            await self._until_accepted("record", s.command("meeting", "record"), record)
            history = await self._history_has(case.case_id, "ActionRecorded")
            action_id = next(r.payload.action_id for r in history if r.type == "ActionRecorded")
            complete = {**workload.complete_command(case.case_id, action_id), "command_id": str(uuid.uuid4())}
            await self._until_accepted("complete", s.command("meeting", "complete_action"), complete)
            await self._history_has(case.case_id, "CaseClosed")
            case.closed = time.monotonic()
        except Exception as exc:  # recorded, and counted as a lost case by the audit
            case.error = f"{type(exc).__name__}: {exc}"[:300]
        return case

    async def run(self, cases: int, rate: float, during: Callable[[int], Awaitable[None]] | None = None) -> None:
        """Start ``cases`` lifecycles at ``rate`` per second; ``during(i)`` runs after the i-th start."""
        tasks = []
        for i in range(cases):
            tasks.append(asyncio.create_task(self.lifecycle()))
            if during is not None:
                await during(i)
            await asyncio.sleep(1.0 / rate)
        await asyncio.gather(*tasks)


# --- what the log and the projections say afterwards --------------------------------------

@dataclass
class Audit:
    sent: int
    acked: int
    in_log: int  # acknowledged cases whose request is in the log
    completed: int  # acknowledged cases whose lifecycle reached CaseClosed in the log
    duplicates: int  # events beyond one of each lifecycle type per case, plus repeated event ids
    projections: dict[str, str]  # service -> "equal" or what differs from a fresh rebuild
    errors: list[str]

    @property
    def lost(self) -> int:
        return self.acked - self.completed

    @property
    def ok(self) -> bool:
        return (self.lost == 0 and self.duplicates == 0 and self.in_log == self.acked
                and all(v == "equal" for v in self.projections.values()))


def _rows(store) -> dict[str, list[tuple]]:
    with store.engine.connect() as conn:
        return {name: sorted(map(tuple, conn.execute(select(table)).all()), key=repr)
                for name, table in sorted(store.metadata.tables.items())}


def _difference(live: dict[str, list[tuple]], rebuilt: dict[str, list[tuple]]) -> str:
    if live == rebuilt:
        return "equal"
    parts = []
    for table in sorted(set(live) | set(rebuilt)):
        a, b = set(live.get(table, [])), set(rebuilt.get(table, []))
        if a != b:
            parts.append(f"{table}: {len(a - b)} only live, {len(b - a)} only rebuilt")
    return "; ".join(parts) or "row order differs"


async def audit(system: System, load: Load) -> Audit:
    """Wait until every service has caught up, then compare what was acknowledged with the log,
    and each live projection with a fresh rebuild of it from the log."""
    await system.caught_up()
    log = await system.log()
    per_case: dict[str, Counter] = defaultdict(Counter)
    for r in log:
        per_case[r.envelope.case_id][r.type] += 1
    ids = Counter(r.envelope.event_id for r in log)
    duplicates = sum(n - 1 for n in ids.values() if n > 1)
    for counts in per_case.values():
        duplicates += sum(counts[t] - 1 for t in LIFECYCLE if counts[t] > 1)
    acked = [c for c in load.cases if c.case_id is not None]
    projections = {}
    rebuild_dir = system.root / "rebuilt"
    rebuild_dir.mkdir(exist_ok=True)
    for name in SERVICES:
        live = projection_store(name, system.settings.db_url(name))
        target = rebuild_dir / f"{name}-{uuid.uuid4().hex[:6]}.db"
        rebuilt = projection_store(name, f"sqlite:///{target}")
        await replay_into(system.js, system.settings, rebuilt)
        projections[name] = _difference(_rows(live), _rows(rebuilt))
        live.engine.dispose()
        rebuilt.engine.dispose()
    return Audit(
        sent=len(load.cases), acked=len(acked),
        in_log=sum(1 for c in acked if per_case[c.case_id]["RequestSubmitted"] == 1),
        completed=sum(1 for c in acked if all(per_case[c.case_id][t] >= 1 for t in LIFECYCLE)),
        duplicates=duplicates, projections=projections,
        errors=[f"{c.request_id}: {c.error}" for c in load.cases if c.error],
    )
