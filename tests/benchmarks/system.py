"""Starting and watching the services as separate processes (what `rethink up` runs)."""

from __future__ import annotations

import asyncio
import bisect
import json
import sqlite3
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nats
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from rethink.shared.bootstrap import bootstrap
from rethink.shared.cli.supervisor import spawn
from rethink.shared.eventlog import Subjects
from rethink.shared.settings import Settings

from .common import Cleanup, now


async def ping(nc: nats.NATS, settings: Settings, name: str, timeout: float = 2.0) -> dict[str, Any]:
    msg = await nc.request(Subjects(settings.subject_prefix).query(name, "ping"), b"{}", timeout=timeout)
    return json.loads(msg.data)


async def wait_serving(nc: nats.NATS, settings: Settings, names: Iterable[str], timeout: float = 60.0) -> None:
    pending = set(names)
    deadline = now() + timeout
    while pending:
        for name in list(pending):
            try:
                if (await ping(nc, settings, name, timeout=1.0)).get("status") == "ok":
                    pending.discard(name)
            except (NoRespondersError, NatsTimeout):
                pass
        if pending:
            if now() > deadline:
                raise RuntimeError(f"services did not start within {timeout}s: {', '.join(sorted(pending))} "
                                   f"(logs in {Path(settings.state_dir) / 'logs'})")
            await asyncio.sleep(0.1)


async def start_services(nc: nats.NATS, settings: Settings, names: Iterable[str],
                         cleanup: Cleanup) -> dict[str, subprocess.Popen[bytes]]:
    names = list(names)
    await bootstrap(nc.jetstream(), settings)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for name in names:
        procs[name] = spawn(name, settings, Path(settings.state_dir) / "logs")
        cleanup.process(f"service {name}", procs[name])
    await wait_serving(nc, settings, names)
    return procs


class Checkpoints:
    """Each service's checkpoint row, read from its own SQLite file every few milliseconds.

    A projection's rows and its checkpoint commit in one transaction, so the moment the
    checkpoint passes an event's seq is the moment a query can see it. Reading the files
    directly puts no load on the services' event loops (a ping per poll would).
    """

    def __init__(self, settings: Settings, names: Iterable[str], interval: float) -> None:
        self.names = list(names)
        self.interval = interval
        self._conns = {n: sqlite3.connect(Path(settings.state_dir) / f"{n}.db", isolation_level=None)
                       for n in self.names}
        self.seqs: dict[str, list[int]] = {n: [0] for n in self.names}
        self.times: dict[str, list[float]] = {n: [now()] for n in self.names}
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task:
            await self._task
        for conn in self._conns.values():
            conn.close()

    def sample(self) -> None:
        t = now()
        for name, conn in self._conns.items():
            try:
                row = conn.execute("SELECT last_seq FROM checkpoint WHERE consumer = ?", (name,)).fetchone()
            except sqlite3.OperationalError:  # locked for a moment, or not created yet
                continue
            seq = row[0] if row else 0
            if seq > self.seqs[name][-1]:
                self.seqs[name].append(seq)
                self.times[name].append(t)

    async def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval)
            except TimeoutError:
                pass

    def last(self, name: str) -> int:
        return self.seqs[name][-1]

    def visible_at(self, name: str, seq: int) -> float | None:
        """When the service's projection first included ``seq`` (None: not yet)."""
        i = bisect.bisect_left(self.seqs[name], seq)
        return self.times[name][i] if i < len(self.seqs[name]) else None

    def applied_by(self, name: str, t: float) -> int:
        """The service's checkpoint as it stood at time ``t``."""
        i = bisect.bisect_right(self.times[name], t) - 1
        return self.seqs[name][max(i, 0)]

    async def wait_for(self, seq: int, timeout: float) -> bool:
        deadline = now() + timeout
        while now() < deadline:
            if all(self.last(n) >= seq for n in self.names):
                return True
            await asyncio.sleep(0.05)
        return False
