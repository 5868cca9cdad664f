"""`--profile`: py-spy samples each service process during the saturation phase.

py-spy is not a project dependency (`pip install py-spy` into the venv to use it). Samples
are taken without pausing the target (--nonblocking). py-spy's own idle detection does not
hold on this VM (a thread blocked in epoll is reported active), so samples whose innermost
frame is a wait (epoll select, a worker thread waiting on its queue) are counted as idle
and left out: the shares are shares of the time each process was doing something.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
import sysconfig
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
IDLE_LEAVES = (("select", "selectors.py"), ("wait", "threading.py"), ("_worker", "thread.py"))
ENTRY_POINTS = ("cli/main.py", "benchmarks/run.py")  # on every stack: say nothing
PROJECT_MARKERS = ("/shared/", "/services/", "/tests/benchmarks/")
CATEGORIES = (  # first match wins; matched against the innermost frame's file
    ("e-mail address validation (email_validator)", "email_validator/"),
    ("sqlalchemy", "sqlalchemy/"), ("sqlite3", "sqlite3/"), ("pydantic", "pydantic"),
    ("nats-py", "/nats/"), ("faststream / fast_depends / anyio", "faststream/"),
    ("faststream / fast_depends / anyio", "fast_depends/"), ("faststream / fast_depends / anyio", "anyio/"),
    ("socket writes (asyncio transport)", "asyncio/selector_events.py"),
    ("asyncio event loop", "/asyncio/"), ("thread hand-off (threading, queue)", "/threading.py"),
    ("thread hand-off (threading, queue)", "/queue.py"),
    ("structlog / logging", "structlog/"), ("structlog / logging", "/logging/"), ("json", "/json/"),
    ("e-mail composition and .eml files (email, tempfile)", "/email/"),
    ("e-mail composition and .eml files (email, tempfile)", "/tempfile.py"),
    ("uuid", "/uuid.py"), ("project code", "/shared/"), ("project code", "/services/"),
)


def py_spy() -> str | None:
    for folder in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        if (folder / "py-spy").exists():
            return str(folder / "py-spy")
    return shutil.which("py-spy")


class Profiler:
    def __init__(self, out_dir: Path, pids: dict[str, int], duration: float, rate: int = 100) -> None:
        self.out_dir = Path(out_dir)
        self.pids = {n: p for n, p in pids.items() if n != "nats-server"}  # a Go binary: nothing to sample
        self.duration = duration
        self.rate = rate
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self.error: str | None = None

    def start(self) -> None:
        self._starting = asyncio.create_task(self._start())

    async def _start(self) -> None:
        exe = py_spy()
        if exe is None:
            self.error = "py-spy not found (pip install py-spy into the venv)"
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in self.pids.items():
            out = self.out_dir / f"{name.replace(' ', '-')}.collapsed.txt"
            self._procs[name] = await asyncio.create_subprocess_exec(
                exe, "record", "--pid", str(pid), "--duration", str(int(self.duration)), "--rate", str(self.rate),
                "--nonblocking", "--format", "raw", "--full-filenames", "-o", str(out),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)

    async def finish(self) -> dict[str, Any]:
        await self._starting
        if self.error:
            return {"error": self.error}
        result: dict[str, Any] = {"dir": str(self.out_dir), "processes": {}}
        for name, proc in self._procs.items():
            try:
                _, err = await asyncio.wait_for(proc.communicate(), self.duration + 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                err = b"timed out"
            out = self.out_dir / f"{name.replace(' ', '-')}.collapsed.txt"
            if not out.exists():
                result["processes"][name] = {"error": err.decode(errors="replace")[-300:]}
                continue
            result["processes"][name] = summarise(out.read_text())
        (self.out_dir / "summary.txt").write_text(render(result))
        return result


def _frames(stack: str) -> list[tuple[str, str]]:
    frames = []
    for raw in stack.split(";"):
        if raw.startswith(("process ", "thread ")):
            continue
        m = _FRAME.match(raw)
        frames.append((m["func"], m["file"]) if m else (raw, ""))
    return frames


def _short(file: str) -> str:
    for marker in ("site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def summarise(collapsed: str, top: int = 15) -> dict[str, Any]:
    total = idle = 0
    leaf: Counter[str] = Counter()
    category: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = _frames(stack)
        if not frames:
            continue
        func, file = frames[-1]
        if any(func.endswith(f) and file.endswith(fl) for f, fl in IDLE_LEAVES):
            idle += count
            continue
        total += count
        leaf[f"{func} ({_short(file)})"] += count
        category[next((c for c, marker in CATEGORIES if marker in file), "other")] += count
        for f, fl in {(f, fl) for f, fl in frames if any(m in fl for m in PROJECT_MARKERS)
                      and f != "<module>" and not fl.endswith(ENTRY_POINTS)}:
            inclusive[f"{f} ({_short(fl)})"] += count
    pct = (lambda c: round(100.0 * c / total, 1)) if total else (lambda c: 0.0)
    return {
        "samples": total,
        "idle_samples_excluded": idle,
        "self_by_library_pct": {k: pct(v) for k, v in category.most_common()},
        "self_top_pct": {k: pct(v) for k, v in leaf.most_common(top)},
        "project_inclusive_pct": {k: pct(v) for k, v in inclusive.most_common(top)},
    }


def render(result: dict[str, Any]) -> str:
    lines: list[str] = []
    for name, s in result.get("processes", {}).items():
        lines.append(f"== {name}: {s.get('samples', 0)} busy samples ({s.get('idle_samples_excluded', 0)} idle left out)")
        if "error" in s:
            lines.append(f"   error: {s['error']}")
            continue
        for title, key in (("self time by library", "self_by_library_pct"), ("hottest functions (self)", "self_top_pct"),
                           ("project functions (inclusive)", "project_inclusive_pct")):
            lines.append(f"  {title}:")
            lines.extend(f"    {v:5.1f}%  {k}" for k, v in s[key].items())
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # re-summarise a profile folder: python -m tests.benchmarks.profiling DIR
    folder = Path(sys.argv[1])
    summary = {"dir": str(folder), "processes": {
        f.name.removesuffix(".collapsed.txt"): summarise(f.read_text()) for f in sorted(folder.glob("*.collapsed.txt"))}}
    (folder / "summary.txt").write_text(render(summary))
    print(render(summary))
