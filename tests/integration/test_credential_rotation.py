"""Rotating a NATS password as docs/operations.md says: `rethink auth rotate`, then SIGHUP.

A real nats-server runs with the config `rethink auth init` generated; the CLI runs as the
operator would run it. Until the reload the old password still works; after it, only the new.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import nats
import nats.errors
import pytest

from rethink.shared.auth import url_with
from rethink.shared.natsserver import EmbeddedNats, free_port
from tests.support import wait_for

pytestmark = pytest.mark.nats


def rethink(state, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RETHINK_STATE_DIR": str(state), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "rethink.shared.cli", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def password_of(output: str, user: str) -> str:
    found = re.search(rf"^{re.escape(user)}: (?:new )?password (\S+)", output, re.MULTILINE)
    assert found, output
    return found.group(1)


@pytest.fixture
def server(tmp_path):
    init = rethink(tmp_path, "auth", "init")
    assert init.returncode == 0, init.stderr
    port = free_port()
    srv = EmbeddedNats(port, tmp_path / "js", extra_args=["-c", str(tmp_path / "auth" / "nats-auth.conf")]).start()
    srv.passwords = {u: password_of(init.stdout, u) for u in ("rethink-services", "auditor")}
    srv.state = tmp_path
    try:
        yield srv
    finally:
        srv.stop()


async def login(server, user: str, password: str) -> str:
    """'ok', 'refused', or 'unreachable' (cut off mid-handshake while the server reloads)."""
    try:
        nc = await nats.connect(url_with(user, password, port=server.port), allow_reconnect=False,
                                max_reconnect_attempts=1, connect_timeout=2)
    except nats.errors.Error as exc:
        if "Authorization Violation" in str(exc):
            return "refused"
        raise
    except (ConnectionError, OSError):
        return "unreachable"
    await nc.close()
    return "ok"


@pytest.mark.parametrize("user", ["rethink-services", "auditor"])
async def test_a_rotated_password_replaces_the_old_one_when_the_server_reloads(server, user):
    old = server.passwords[user]
    assert await login(server, user, old) == "ok"

    rotated = rethink(server.state, "auth", "rotate", user)
    assert rotated.returncode == 0, rotated.stderr
    new = password_of(rotated.stdout, user)
    assert new != old
    assert old not in (server.state / "auth" / "nats-auth.conf").read_text()  # hashes only
    # Nothing changes until the server reloads its config.
    assert await login(server, user, old) == "ok"
    assert await login(server, user, new) == "refused"

    server.process.send_signal(signal.SIGHUP)
    await wait_for(lambda: login(server, user, old), lambda r: r == "refused",
                   what="the old password to be refused after the reload")
    assert await login(server, user, new) == "ok"
    other = "auditor" if user == "rethink-services" else "rethink-services"
    assert await login(server, other, server.passwords[other]) == "ok"  # the other users are untouched


async def test_an_agency_password_is_rotated_the_same_way(server):
    added = rethink(server.state, "agencies", "add", "northside-police")
    assert added.returncode == 0, added.stderr
    old = re.search(r"password (\S+)", added.stdout).group(1)
    server.process.send_signal(signal.SIGHUP)
    await wait_for(lambda: login(server, "northside-police", old), lambda r: r == "ok", what="the agency admitted")

    new = password_of(rethink(server.state, "auth", "rotate", "northside-police").stdout, "northside-police")
    server.process.send_signal(signal.SIGHUP)
    await wait_for(lambda: login(server, "northside-police", old), lambda r: r == "refused",
                   what="the agency's old password to be refused")
    assert await login(server, "northside-police", new) == "ok"


def test_rotating_an_unknown_user_is_refused_and_changes_nothing(tmp_path):
    assert rethink(tmp_path, "auth", "init").returncode == 0
    before = (tmp_path / "auth" / "users.json").read_text()
    result = rethink(tmp_path, "auth", "rotate", "nobody")
    assert result.returncode == 1
    assert "no user 'nobody'" in result.stderr and "rethink-services" in result.stderr
    assert (tmp_path / "auth" / "users.json").read_text() == before
