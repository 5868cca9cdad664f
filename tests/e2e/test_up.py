"""`rethink up` as a person runs it: embedded server, four services, Ctrl-C, and a restart that continues."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from rethink.shared.cli.client import Client
from rethink.shared.natsserver import free_port
from rethink.shared.settings import Settings
from tests.support import request_payload

pytestmark = pytest.mark.e2e


def _start(env: dict[str, str], cwd) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "rethink.shared.cli", "up"], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_line(proc: subprocess.Popen[str], text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen += line
        if text in line:
            return seen
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"`rethink up` never said {text!r}; it said:\n{seen}")


def _interrupt(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    return rest


def _children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


async def _submit(settings: Settings) -> str:
    async with Client(settings) as c:
        return (await c.agency_command("police", "submit", request_payload()))["case_id"]


async def _history_types(settings: Settings, case_id: str, want: int) -> list[str]:
    async with Client(settings) as c:
        for _ in range(200):
            types = [r.type for r in await c.history(case_id)]
            if len(types) >= want:
                return types
            await asyncio.sleep(0.05)
    return types


def test_up_runs_until_ctrl_c_and_a_restart_continues_where_it_stopped(tmp_path):
    port, console_port = free_port(), free_port()
    env = {**os.environ, "RETHINK_EMBEDDED_NATS_PORT": str(port), "RETHINK_STATE_DIR": str(tmp_path / "state"),
           "RETHINK_CONSOLE_PORT": str(console_port)}
    env.pop("RETHINK_NATS_URL", None)
    settings = Settings(embedded_nats_port=port, state_dir=tmp_path / "state")

    first = _start(env, tmp_path)
    try:
        said_first = _wait_for_line(first, "Re-think is up")
        children = _children_of(first.pid)
        assert len(children) == 6  # the nats-server, four services and the console
        console = f"http://127.0.0.1:{console_port}"
        assert f"Web console: {console}" in said_first and "no local accounts yet" in said_first
        with urllib.request.urlopen(f"{console}/sign-in", timeout=5) as page:
            assert page.status == 200 and "govuk-template" in page.read().decode()
        case_id = asyncio.run(_submit(settings))
        assert asyncio.run(_history_types(settings, case_id, 3)) == [
            "RequestSubmitted", "ChecksConfirmed", "FacilitatorAssigned"]
    finally:
        said = _interrupt(first)
    assert first.returncode == 0 and "stopped" in said
    assert all(not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
               for pid in children)
    assert (tmp_path / "state" / "nats").is_dir() and (tmp_path / "state" / "intake.db").is_file()

    second = _start(env, tmp_path)
    try:
        _wait_for_line(second, "Re-think is up")
        # The log survived the restart, and the services carry on from their checkpoints.
        assert asyncio.run(_history_types(settings, case_id, 3))[:3] == [
            "RequestSubmitted", "ChecksConfirmed", "FacilitatorAssigned"]

        async def show():
            async with Client(settings) as c:
                return (await c.query("intake", "case", {"case_id": case_id}))["result"]["status"]

        assert asyncio.run(show()) == "checks_confirmed"
    finally:
        _interrupt(second)
    assert second.returncode == 0
