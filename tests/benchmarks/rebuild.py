"""Rebuild: events/s replaying the end-to-end log into a fresh projection of each service.

SQLite files go in the run's temp folder. PostgreSQL gets a database of its own
(``rethink_bench_<random>``), dropped at the end whatever happens. With ``--profile`` each
replay runs under cProfile (slower, so its figure is not comparable) and the share of time
in fetching, key reads and decoding is written beside the services' py-spy profiles (the
database writer thread is outside cProfile's sight; each rebuild's CPU per event counts it).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rethink.shared import natsheaders, natsparser
from rethink.shared.rebuild import projection_store, replay_into
from rethink.shared.settings import SERVICES, Settings

from .common import Cleanup, now


@dataclass
class RebuildRun:
    service: str
    database: str
    events: int
    seconds: float
    events_per_s: float
    cpu_per_event_us: float  # the process's CPU (both threads: decoding, and the database writer)
    # Every round's events/s, when the figure is the median of several replays (``run_rebuild``).
    rounds: list[float] = field(default_factory=list)


@dataclass
class RebuildResult:
    runs: list[RebuildRun] = field(default_factory=list)
    postgres: str = "not run"
    ordered_read_of_log: float | None = None


class Postgres:
    """A throwaway database on the local server, reached with trust auth as postgres (or root)."""

    def __init__(self, host: str, port: int, maintenance_db: str) -> None:
        self.host, self.port, self.maintenance_db = host, port, maintenance_db
        self.user: str | None = None
        self.database: str | None = None

    def _connect(self, user: str, dbname: str):
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=user, dbname=dbname, autocommit=True,
                               connect_timeout=3)

    def create(self, cleanup: Cleanup) -> str:
        errors = []
        for user in ("postgres", "root"):
            try:
                with self._connect(user, self.maintenance_db) as conn:
                    name = f"rethink_bench_{secrets.token_hex(4)}"
                    conn.execute(f'CREATE DATABASE "{name}"')
                self.user, self.database = user, name
                cleanup.add(f"drop PostgreSQL database {name}", self.drop)
                return f"postgresql+psycopg://{user}@{self.host}:{self.port}/{name}"
            except Exception as exc:
                errors.append(f"{user}: {type(exc).__name__}: {str(exc).strip()[:120]}")
        raise RuntimeError("; ".join(errors))

    def drop(self) -> None:
        if self.database is None or self.user is None:
            return
        with self._connect(self.user, self.maintenance_db) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        self.database = None

    def version(self) -> str | None:
        if self.user is None:
            return None
        with self._connect(self.user, self.maintenance_db) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]


async def replay_once(js, settings: Settings, service: str, url: str, label: str,
                      profile_dir: Path | None = None, folds: bool | None = None) -> RebuildRun:
    """One ``replay_into`` of the log into a fresh store at ``url``, timed (and profiled if asked).
    ``folds``: whether its batches fold a row's later writes (None: as the code decides)."""
    store = projection_store(service, url)
    if folds is not None:
        store.folds = folds
    natsheaders.install()  # as `rethink projections rebuild` does (its client installs both)
    natsparser.install()
    profiler = cProfile.Profile() if profile_dir is not None else None
    try:
        start, cpu = now(), time.process_time()
        if profiler:
            profiler.enable()
        result = await replay_into(js, settings, store)
        if profiler:
            profiler.disable()
        seconds, cpu = now() - start, time.process_time() - cpu
    finally:
        store.engine.dispose()
    if profiler is not None and profile_dir is not None:
        _write_profile(profiler, profile_dir / f"rebuild-{label}-{service}")
    events = result.events_read
    return RebuildRun(service, label, events, seconds, events / seconds, cpu * 1e6 / max(events, 1))


# Where a replay's time goes on its event loop: the share spent under each of these (cumulative).
# On PostgreSQL the database writes run in a worker thread, which cProfile does not see (on SQLite
# they run in turn, and are seen): the CPU per event printed beside each rebuild counts both.
REBUILD_PARTS = {
    "fetch from JetStream (_Batches.fetch)": ("rebuild.py", "fetch"),
    "data keys (PersonalData.prefetch)": ("privacy.py", "prefetch"),
    "decode, personal fields opened (EventLog.decode)": ("eventlog.py", "decode"),
    "  of which opening personal fields (PersonalData.open)": ("privacy.py", "open"),
    "decode, none opened (EventLog.decode_unopened)": ("eventlog.py", "decode_unopened"),
    "payload validation, both ways (Envelope.payload)": ("envelope.py", "payload"),
    "database writes (ProjectionStore.apply_batch)": ("projection.py", "apply_batch"),
}


def _write_profile(profiler: cProfile.Profile, base: Path) -> None:
    base.parent.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(str(base) + ".pstats")
    stats = pstats.Stats(profiler)
    total = max(ct for (_, _, _), (_, _, _, ct, _) in stats.stats.items())  # the outermost frame
    lines = []
    for label, (file_end, func) in REBUILD_PARTS.items():
        ct = max((v[3] for (f, _, fn), v in stats.stats.items() if f.endswith(file_end) and fn == func), default=0.0)
        lines.append(f"{100 * ct / total:5.1f}%  {label}")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(20)
    Path(str(base) + ".txt").write_text("\n".join(lines) + "\n\n" + out.getvalue())


async def run_rebuild(nc, settings: Settings, work_dir: Path, pg: Postgres | None, cleanup: Cleanup,
                      say, profile_dir: Path | None = None, rounds: int = 1) -> tuple[RebuildResult, dict[str, Any]]:
    """Each projection replayed ``rounds`` times on each database, round by round (so that the
    machine's drift falls on all alike); each figure is its median round, with every round's
    events/s beside it. One replay moves by about ±10 % from run to run. Profiled: the first round."""
    js = nc.jetstream()
    out = RebuildResult()
    meta: dict[str, Any] = {}
    sqlite = {service: [] for service in SERVICES}
    for r in range(rounds):
        for service in SERVICES:
            url = f"sqlite:///{work_dir / f'{service}-rebuild-{r}.db'}"
            sqlite[service].append(await replay_once(js, settings, service, url, "sqlite",
                                                     profile_dir if r == 0 else None))
    for service in SERVICES:
        out.runs.append(_say_median(say, "sqlite", sqlite[service]))
    if pg is None:
        out.postgres = "skipped (--no-postgres)"
        return out, meta
    try:
        url = pg.create(cleanup)
        meta["postgres_version"] = pg.version()
    except Exception as exc:
        out.postgres = f"skipped: PostgreSQL unreachable at {pg.host}:{pg.port} ({exc})"
        say(f"  {out.postgres}")
        return out, meta
    out.postgres = f"ran on {pg.database} as {pg.user}"
    postgres = {service: [] for service in SERVICES}
    try:
        for r in range(rounds):  # one database: each replay starts by emptying its projection's schema
            for service in SERVICES:
                postgres[service].append(await replay_once(js, settings, service, url, "postgresql",
                                                           profile_dir if r == 0 else None))
    finally:
        pg.drop()
    for service in SERVICES:
        out.runs.append(_say_median(say, "postgresql", postgres[service]))
    return out, meta


def _say_median(say, label: str, runs: list[RebuildRun]) -> RebuildRun:
    """The median round (the lower of the middle two for an even count), every round's rate kept."""
    ranked = sorted(runs, key=lambda run: run.events_per_s)
    median = ranked[(len(ranked) - 1) // 2]
    median.rounds = [run.events_per_s for run in runs]
    spread = (f", median of {len(runs)}: {ranked[0].events_per_s:,.0f}-{ranked[-1].events_per_s:,.0f}"
              if len(runs) > 1 else "")
    say(f"  {label:<10} {median.service:<11} {median.events_per_s:8,.0f} events/s ({median.events:,} events, "
        f"{median.seconds:.1f}s, {median.cpu_per_event_us:.0f} µs CPU each{spread})")
    return median
