"""Shared pieces of the benchmark: configuration, figures, percentiles, CPU accounting, cleanup.

Nothing here talks to NATS. Every figure is a ``Figure``; the table, the JSON file and
``--compare`` all read the same list.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Config:
    quick: bool = False
    stages: tuple[str, ...] = ("ingest", "e2e", "rebuild", "history")
    # Baselines.
    sequential_messages: int = 5_000
    pipelined_messages: int = 50_000
    window: int = 1_000
    payload_bytes: int = 1_500
    # Ingest.
    ingest_seconds: float = 15.0
    ingest_senders: int = 8
    # End to end.
    e2e_rate: float = 100.0  # events per second offered in the latency phase
    e2e_seconds: float = 45.0
    unloaded_seconds: float = 10.0
    light_rate: float = 25.0
    light_seconds: float = 20.0
    saturation_seconds: float = 40.0
    saturation_concurrency: int = 24
    poll_ms: float = 5.0
    # Rebuild.
    rebuild_rounds: int = 3  # replays of each projection; its figure is the median
    postgres: bool = True
    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_database: str = "test"
    # Case history.
    history_small: int = 1_000
    history_large: int = 200_000
    history_reads: int = 30
    # Output.
    out_dir: Path = Path("bench-results")
    profile: bool = False

    @classmethod
    def quick_defaults(cls) -> Config:
        return cls(quick=True, sequential_messages=2_000, pipelined_messages=10_000, ingest_seconds=4.0,
                   unloaded_seconds=3.0, light_seconds=5.0, e2e_seconds=10.0, saturation_seconds=8.0,
                   history_large=50_000, history_reads=15, rebuild_rounds=1)


@dataclass
class Figure:
    """One measured number, beside the baseline it is judged against."""

    key: str
    stage: str
    label: str
    value: float | None
    unit: str
    baseline_key: str | None = None
    baseline_value: float | None = None
    baseline_unit: str | None = None  # default: the figure's own unit
    # "ratio>=" (value/baseline at least), "ratio<=" (at most), "value<" (absolute), or None.
    target_kind: str | None = None
    target: float | None = None
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline_value:
            return None
        return self.value / self.baseline_value

    @property
    def met(self) -> bool | None:
        if self.target_kind is None or self.target is None or self.value is None:
            return None
        if self.target_kind == "ratio>=":
            return self.ratio is not None and self.ratio >= self.target
        if self.target_kind == "ratio<=":
            return self.ratio is not None and self.ratio <= self.target
        if self.target_kind == "value<":
            return self.value < self.target
        raise ValueError(self.target_kind)

    def target_text(self) -> str:
        if self.target_kind is None or self.target is None:
            return ""
        if self.target_kind == "ratio>=":
            return f">= {self.target:g}x"
        if self.target_kind == "ratio<=":
            return f"<= {self.target:g}x"
        return f"< {self.target:g} {self.unit}"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(ratio=self.ratio, met=self.met, target_text=self.target_text())
        return d


def percentile(values: Iterable[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None when there is nothing to rank."""
    xs = sorted(values)
    if not xs:
        return None
    rank = max(1, min(len(xs), int(round(p / 100.0 * len(xs) + 0.5))))
    return xs[rank - 1]


def summary_ms(seconds: Iterable[float]) -> dict[str, float | None | int]:
    xs = [s * 1000.0 for s in seconds]
    return {"n": len(xs), "p50": percentile(xs, 50), "p95": percentile(xs, 95), "p99": percentile(xs, 99),
            "max": max(xs) if xs else None}


def fmt_ms(s: dict[str, Any]) -> str:
    if not s.get("n"):
        return "no samples"
    return f"p50 {s['p50']:.1f} · p95 {s['p95']:.1f} · p99 {s['p99']:.1f} ms (n={s['n']})"


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process, from /proc (None if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def now() -> float:
    return time.perf_counter()


class Cleanup:
    """Everything the run started or created, undone in reverse order whatever happens."""

    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], object]]] = []

    def add(self, what: str, undo: Callable[[], object]) -> None:
        self._undo.append((what, undo))

    def process(self, what: str, proc: subprocess.Popen[bytes]) -> None:
        self.add(what, lambda: stop_process(proc))

    def run_matching(self, prefix: str) -> None:
        """Undo now (newest first) what was registered under names starting with ``prefix``."""
        for what, undo in reversed([u for u in self._undo if u[0].startswith(prefix)]):
            self._undo.remove((what, undo))
            with contextlib.suppress(Exception):
                undo()

    def run(self, say: Callable[[str], None]) -> None:
        while self._undo:
            what, undo = self._undo.pop()
            try:
                undo()
            except Exception as exc:  # keep undoing the rest
                say(f"cleanup: {what} failed: {type(exc).__name__}: {exc}")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def run_in_temp(amain: Callable[[Any, Path, Cleanup], Awaitable[None]], args: Any, prefix: str) -> None:
    """A benchmark's main: ``amain`` in a temp folder of its own, whatever it started undone after."""
    cleanup = Cleanup()
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        try:
            asyncio.run(amain(args, Path(tmp), cleanup))
        finally:
            cleanup.run(print)
