"""`rethink up`: the embedded nats-server, the stream, the four services and the web console, as separate processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nats

from rethink.shared.bootstrap import bootstrap
from rethink.shared.migrations import DATABASES, migrate
from rethink.shared.natsserver import EmbeddedNats
from rethink.shared.settings import SERVICES, Settings

from .client import Client, CliError

CONSOLE = "console"


async def run_bootstrap(settings: Settings) -> list[str]:
    nc = await nats.connect(**settings.nats_connect_kwargs(), connect_timeout=3, max_reconnect_attempts=3)
    try:
        return await bootstrap(nc.jetstream(), settings)
    finally:
        await nc.close()


def service_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "RETHINK_NATS_URL": settings.resolved_nats_url(),
        "RETHINK_STATE_DIR": str(Path(settings.state_dir).resolve()),
        "RETHINK_STREAM": settings.stream,
        "RETHINK_DEAD_LETTER_STREAM": settings.dead_letter_stream,
        "RETHINK_RECEIPT_STREAM": settings.receipt_stream,
        "RETHINK_INBOUND_STREAM": settings.inbound_stream,
        "RETHINK_SUBJECT_PREFIX": settings.subject_prefix,
        # Four services on one machine cannot share one port: the embedded system serves no health
        # endpoints. A deployment runs `rethink service run` per container, where they are on.
        "RETHINK_HEALTH_PORT": "0",
        "RETHINK_KEYS_BUCKET": settings.keys_bucket,
        "RETHINK_ACCESS_STREAM": settings.access_stream,
    })
    return env


def spawn(name: str, settings: Settings, log_dir: Path) -> subprocess.Popen[bytes]:
    log_dir.mkdir(parents=True, exist_ok=True)
    out = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    if name == CONSOLE:
        command = [sys.executable, "-m", "rethink.console"]
        env = {**service_env(settings), "RETHINK_CONSOLE_PORT": str(settings.console_port)}
    else:
        command = [sys.executable, "-m", "rethink.shared.cli", "service", "run", name]
        env = service_env(settings)
    return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)


def console_url(settings: Settings) -> str | None:
    return f"http://127.0.0.1:{settings.console_port}" if settings.console_port else None


def wait_for_console(settings: Settings, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    url = f"{console_url(settings)}/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:  # noqa: S310 - our own 127.0.0.1 address
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise CliError(f"the console did not start on {console_url(settings)} within {timeout}s "
                   f"(is the port in use? see {Path(settings.state_dir) / 'logs' / 'console.log'}; "
                   "RETHINK_CONSOLE_PORT=0 switches it off)")


async def wait_until_serving(settings: Settings, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    pending = set(SERVICES)
    async with Client(settings) as client:
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                try:
                    if (await client.query(name, "ping", {})).get("status") == "ok":
                        pending.discard(name)
                except CliError:
                    pass
            if pending:
                await asyncio.sleep(0.1)
    if pending:
        raise CliError(f"services did not start within {timeout}s: {', '.join(sorted(pending))} "
                       f"(see the logs in {Path(settings.state_dir) / 'logs'})")


@contextmanager
def running_system(settings: Settings) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Start everything; on exit stop the services, then the server. Restarting continues from the log."""
    server = None
    if not settings.nats_url:
        server = EmbeddedNats(settings.embedded_nats_port, Path(settings.state_dir) / "nats").start()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        asyncio.run(run_bootstrap(settings))
        migrate(settings, list(DATABASES))  # what the bootstrap job does in a deployment
        for name in SERVICES:
            procs[name] = spawn(name, settings, Path(settings.state_dir) / "logs")
        asyncio.run(wait_until_serving(settings))
        if settings.console_port:
            procs[CONSOLE] = spawn(CONSOLE, settings, Path(settings.state_dir) / "logs")
            wait_for_console(settings, procs[CONSOLE])
        yield procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if server is not None:
            server.stop()


def watch(procs: dict[str, subprocess.Popen[bytes]], settings: Settings, say) -> None:
    """Block until Ctrl-C; a service that dies is restarted (it resumes from its checkpoint)."""
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stop:
        for name, proc in procs.items():
            code = proc.poll()
            if code is not None and not stop:
                say(f"service {name} exited with {code}; restarting")
                procs[name] = spawn(name, settings, Path(settings.state_dir) / "logs")
        time.sleep(0.5)
