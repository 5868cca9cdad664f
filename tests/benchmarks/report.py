"""The table, the JSON results file, and the comparison with an earlier run."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rethink.shared.natsserver import nats_server_binary

from .common import Figure


def machine() -> dict[str, Any]:
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nats_version = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True,
                                      timeout=10).stdout.strip()
    except Exception as exc:
        nats_version = f"unknown ({exc})"
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = None
    return {
        "cpu_count": os.cpu_count(), "cpu_model": cpu_model, "memory_gib": round(mem_gib, 1) if mem_gib else None,
        "platform": platform.platform(), "python": platform.python_version(),
        "nats_server": nats_version, "sqlite": sqlite3.sqlite_version, "hostname": platform.node(),
    }


def _num(v: float | None, unit: str) -> str:
    if v is None:
        return "n/a"
    if unit == "ms":
        return f"{v:,.2f} ms" if v < 10 else f"{v:,.1f} ms"
    return f"{v:,.0f} {unit}"


def table(figures: list[Figure]) -> str:
    """A Markdown table: readable in a terminal and pasted as is into docs/performance.md."""
    rows = [("Figure", "Value", "Baseline", "Ratio", "Target", "Met")]
    for f in figures:
        value = _num(f.value, f.unit) + (f" ({f.detail})" if f.detail else "")
        base = f"{_num(f.baseline_value, f.baseline_unit or f.unit)} ({f.baseline_key})" if f.baseline_key else ""
        ratio = f"{f.ratio:.3f}x" if f.ratio is not None else ""
        met = {True: "yes", False: "**no**", None: ""}[f.met]
        rows.append((f.label, value, base, ratio, f.target_text(), met))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def write_json(out_dir: Path, stamp: str, payload: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stamp}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def compare(previous_file: Path, current: dict[str, Any]) -> str:
    previous = json.loads(Path(previous_file).read_text())
    before = {f["key"]: f for f in previous.get("figures", [])}
    rows = [("Figure", "Before", "Now", "Change", "Ratio before", "Ratio now")]
    for f in current["figures"]:
        old = before.pop(f["key"], None)
        if old is None:
            rows.append((f["label"], "(new)", _num(f["value"], f["unit"]), "", "", _ratio(f)))
            continue
        change = ""
        if old["value"] and f["value"] is not None:
            change = f"{(f['value'] - old['value']) / old['value'] * 100:+.1f}%"
        rows.append((f["label"], _num(old["value"], old["unit"]), _num(f["value"], f["unit"]), change,
                     _ratio(old), _ratio(f)))
    for old in before.values():
        rows.append((old["label"], _num(old["value"], old["unit"]), "(not measured)", "", _ratio(old), ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    head = (f"Compared with {previous_file} ({previous.get('started_at', '?')}, "
            f"{previous.get('machine', {}).get('cpu_count', '?')} CPUs, "
            f"{previous.get('machine', {}).get('nats_server', '?')}, mode {previous.get('mode', '?')})")
    return head + "\n" + "\n".join(lines)


def _ratio(f: dict[str, Any]) -> str:
    return f"{f['ratio']:.3f}x" if f.get("ratio") is not None else ""
