"""SIGTERM stops `rethink service run` promptly even when NATS cannot be reached.

An orchestrator sends SIGTERM to a pod that never became ready (NATS down, a wrong address)
and kills it only after the grace period; a process that ignores the signal while it retries
connecting holds up every rollout. These run the real CLI as a subprocess.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import pytest

from rethink.shared.cli.supervisor import service_env
from rethink.shared.natsserver import free_port
from tests.integration.test_health import get
from tests.support import wait_for

pytestmark = [pytest.mark.nats, pytest.mark.e2e]

EXIT_WITHIN = 20  # a bound for the process to exit, far above what it needs (about a second)


def run_service(settings, health_port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rethink.shared.cli", "service", "run", "intake"],
                            env={**service_env(settings), "RETHINK_HEALTH_PORT": str(health_port),
                                 "RETHINK_LOG_FORMAT": "json"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


async def answer(port: int, path: str) -> tuple[int, str] | None:
    try:
        return await get(port, path)
    except OSError:
        return None


def terminate(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        output, _ = proc.communicate(timeout=EXIT_WITHIN)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        pytest.fail(f"still running {EXIT_WITHIN}s after SIGTERM; its log:\n{output}")
    return proc.returncode, output


async def test_sigterm_stops_a_service_that_cannot_reach_nats_with_a_clear_log_line(settings):
    closed = settings.model_copy(update={"nats_url": f"nats://127.0.0.1:{free_port()}"})  # nobody listens
    health = free_port()
    proc = run_service(closed, health)
    try:
        # Alive but not ready while it keeps trying to connect: proves it is in that state now.
        status, body = await wait_for(lambda: answer(health, "/readyz"), lambda r: r is not None, timeout=30,
                                      what="the service's health endpoints")
        assert status == 503 and '"nats": "not connected"' in body
        assert (await get(health, "/healthz"))[0] == 200
    finally:
        code, output = terminate(proc)
    assert code == 0, output
    assert "service_stopped_before_start" in output and closed.nats_url in output, output
    assert "Traceback" not in output, output


async def test_sigterm_stops_a_service_whose_nats_went_away_while_it_ran(own_nats):
    # Stopping drains the subscriptions, which a reconnecting connection refuses to do.
    server, own = own_nats
    health = free_port()
    proc = run_service(own, health)
    try:
        await wait_for(lambda: answer(health, "/readyz"), lambda r: r is not None and r[0] == 200, timeout=30,
                       what="the service to be ready")
        server.stop()
        await wait_for(lambda: answer(health, "/readyz"), lambda r: r is not None and r[0] == 503,
                       what="the service to notice NATS is gone")
    finally:
        code, output = await asyncio.to_thread(terminate, proc)
    assert code == 0, output
    assert '"event": "service_stopped"' in output, output
    assert "Traceback" not in output, output
