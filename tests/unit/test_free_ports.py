"""Ports for our own nats-servers: none an outgoing connection can take first, none handed out twice.

A CI run failed when a cluster node exited at start with "address already in use": its port came
from ``bind(0)``, in the kernel's ephemeral range, where any outgoing connection may take it
between the pick and the server's bind.
"""

from __future__ import annotations

import socket

import pytest

from rethink.shared import natsserver
from rethink.shared.natsserver import EmbeddedNats, NatsServerError, free_port


def test_ports_are_picked_below_the_ephemeral_range_and_never_twice():
    low, _ = natsserver._ephemeral_range()
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(natsserver._LOWEST <= p < low for p in ports)


def test_a_port_something_listens_on_is_not_picked(monkeypatch):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        picks = iter([taken, taken, free])
        monkeypatch.setattr(natsserver, "_ephemeral_range", lambda: (65000, 65535))
        monkeypatch.setattr(natsserver.random, "randrange", lambda a, b: next(picks))
        monkeypatch.setattr(natsserver, "_HANDED_OUT", set())
        assert free_port() == free


def test_a_server_that_cannot_bind_says_why(tmp_path, monkeypatch):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        server = EmbeddedNats(held.getsockname()[1], tmp_path)
        # The start's own check would refuse first; skip it to reach the server's own exit.
        monkeypatch.setattr(natsserver, "port_is_free", lambda port: True)
        with pytest.raises(NatsServerError, match="address already in use"):
            server.start(timeout=10)
    assert server.process is not None and server.process.poll() is not None


def test_fatal_line_is_none_without_a_log_or_a_fatal_line(tmp_path):
    assert natsserver.fatal_line(tmp_path / "missing.log") is None
    (tmp_path / "ok.log").write_text("[1] 2026/11/27 [INF] Server is ready\n")
    assert natsserver.fatal_line(tmp_path / "ok.log") is None
