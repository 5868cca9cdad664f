"""The three-node NATS cluster of deploy/nats/, run on loopback from the very files Compose mounts.

Only what must differ on one machine is rewritten: each node's host:port pairs (client,
cluster route, monitoring) and its store folder. Every rewrite must hit, so a change to the
deploy files that this helper no longer understands fails loudly instead of testing
something else.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from rethink.shared.natsserver import fatal_line, free_port, nats_server_binary

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NATS_DIR = DEPLOY / "nats"
NODES = ("n1", "n2", "n3")
# What the deploy files say, as the containers see it.
CLIENT, ROUTE, MONITOR, STORE = "0.0.0.0:4222", "0.0.0.0:6222", "0.0.0.0:8222", "/data/jetstream"


def _replace_exactly(text: str, old: str, new: str, where: str) -> str:
    if old not in text:
        raise AssertionError(f"{where}: expected {old!r} in the deploy config; update tests/deploy/nats_cluster.py")
    return text.replace(old, new)


@dataclass
class Node:
    name: str
    client_port: int
    route_port: int
    http_port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    def monitor(self, path: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=2) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, {}
        except (urllib.error.URLError, OSError):
            return 0, {}


@dataclass
class LoopbackCluster:
    root: Path
    auth_config: Path
    nodes: dict[str, Node] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in NODES:
            self.nodes[name] = Node(name, free_port(), free_port(), free_port(), self.root / name)
        for node in self.nodes.values():
            self._render(node)

    def _render(self, node: Node) -> None:
        node.folder.mkdir(parents=True, exist_ok=True)
        text = (NATS_DIR / "cluster.conf").read_text()
        for old, new in ((CLIENT, f"127.0.0.1:{node.client_port}"), (ROUTE, f"127.0.0.1:{node.route_port}"),
                         (MONITOR, f"127.0.0.1:{node.http_port}"), (STORE, str(node.folder / "jetstream"))):
            text = _replace_exactly(text, old, new, "cluster.conf")
        for other in self.nodes.values():
            text = _replace_exactly(text, f"nats-route://{other.name}:6222",
                                    f"nats-route://127.0.0.1:{other.route_port}", "cluster.conf")
        (node.folder / "cluster.conf").write_text(text)
        shutil.copy(NATS_DIR / f"{node.name}.conf", node.folder / f"{node.name}.conf")
        (node.folder / "auth").mkdir(exist_ok=True)
        shutil.copy(self.auth_config, node.folder / "auth" / "nats-auth.conf")

    def config(self, name: str) -> Path:
        return self.nodes[name].folder / f"{name}.conf"

    def start(self, name: str) -> None:
        node = self.nodes[name]
        node.process = subprocess.Popen(
            [nats_server_binary(), "-c", str(self.config(name)), "-l", str(node.folder / "server.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )

    def start_all(self) -> None:
        for name in NODES:
            self.start(name)

    def kill(self, name: str) -> None:
        """Abruptly, as a machine or container dies: no lame-duck hand-over."""
        proc = self.nodes[name].process
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    def stop_all(self) -> None:
        for node in self.nodes.values():
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes.values():
            if node.process is not None:
                try:
                    node.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait()

    def running(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.process is not None and n.process.poll() is None]

    def meta_leader(self) -> str | None:
        """The JetStream meta leader as every running node reports it, once they all agree."""
        seen = set()
        for node in self.running():
            status, jsz = node.monitor("/jsz")
            seen.add((jsz.get("meta_cluster") or {}).get("leader") if status == 200 else None)
        return seen.pop() if len(seen) == 1 else None

    def wait_until_ready(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.nodes.values():
                if node.process is not None and node.process.poll() is not None:
                    err = node.process.stderr.read().decode(errors="replace") if node.process.stderr else ""
                    log = node.folder / "server.log"
                    why = err.strip() or fatal_line(log) or f"see {log}"
                    raise AssertionError(f"nats-server {node.name} exited: {why} (log: {log})")
            healthy = all(n.monitor("/healthz")[0] == 200 for n in self.running())
            leader = self.meta_leader()
            if healthy and leader:
                return leader
            time.sleep(0.1)
        raise AssertionError(f"the cluster formed no JetStream meta leader within {timeout}s (logs in {self.root})")

    def urls(self, user: str, password: str) -> str:
        """RETHINK_NATS_URL as an operator writes it for a cluster: every node, comma-separated."""
        return ",".join(f"nats://{user}:{password}@127.0.0.1:{n.client_port}" for n in self.nodes.values())
