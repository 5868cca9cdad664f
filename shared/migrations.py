"""Each service's projection schema, versioned by its own Alembic migrations.

The migrations live in ``services/<svc>/migrations`` (package ``rethink.<svc>:migrations``).
Each projection keeps its own version table (``alembic_version``) beside its tables: in the
service's PostgreSQL schema, or in the service's SQLite file.

Who applies them:
- ``rethink migrate`` (and ``rethink bootstrap``, which runs it) on any database;
- a service on start, only on SQLite, the embedded default: one process owns the file, and
  `rethink up` must work with no manual step;
- on any other database a service only *checks* that its schema is at head and refuses to
  start if not. Replicas racing to migrate one shared schema is what this avoids.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, create_engine, inspect, text
from sqlalchemy.pool import NullPool

from .projection import ProjectionStore, UtcDateTime, check_schema_name, is_sqlite, make_engine
from .settings import SERVICES, Settings

BASELINE = "0001"  # the first revision: the tables as `create_all` made them before migrations existed


class NotMigrated(ValueError):
    """The projection's schema is not the one this code needs (the CLI prints it as one line)."""


@dataclass(frozen=True)
class Migrated:
    service: str
    before: str | None
    after: str
    where: str


def _config(service: str, connection: Connection | None = None) -> Config:
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; choose one of {', '.join(SERVICES)}")
    cfg = Config()
    cfg.set_main_option("script_location", f"rethink.{service}:migrations")
    cfg.attributes["connection"] = connection
    return cfg


def head(service: str) -> str:
    heads = ScriptDirectory.from_config(_config(service)).get_heads()
    if len(heads) != 1:  # two branches would leave "head" ambiguous: a mistake in the migrations
        raise NotMigrated(f"{service}: migrations have {len(heads)} heads, expected one")
    return heads[0]


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def ensure_schema(url: str, schema: str | None) -> None:
    """Create the service's PostgreSQL schema if missing (no-op elsewhere)."""
    if schema is None or is_sqlite(url):
        return
    engine = create_engine(url, poolclass=NullPool)  # no search_path: the schema may not exist yet
    try:
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {check_schema_name(schema)}"))
    finally:
        engine.dispose()


def upgrade(store: ProjectionStore, revision: str = "head") -> Migrated:
    """Bring one projection to ``revision``, in one transaction where the database allows."""
    service = store.consumer
    ensure_schema(store.engine.url.render_as_string(hide_password=False), store.schema)
    with store.engine.begin() as conn:
        before = MigrationContext.configure(conn).get_current_revision()
        if before is None and inspect(conn).has_table("checkpoint"):
            # Made by `create_all` before migrations existed: those tables are the baseline.
            command.stamp(_config(service, conn), BASELINE)
        command.upgrade(_config(service, conn), revision)
        after = MigrationContext.configure(conn).get_current_revision()
    return Migrated(service, before, after or "", where(store))


def check_at_head(store: ProjectionStore) -> None:
    want, have = head(store.consumer), current(store.engine)
    if have != want:
        state = f"at revision {have}" if have else "not created yet"
        raise NotMigrated(
            f"the {store.consumer} projection ({where(store)}) is {state}; this version needs {want}. "
            f"Run `rethink migrate {store.consumer}` (the bootstrap job does) and start again."
        )


def where(store: ProjectionStore) -> str:
    url = store.engine.url.render_as_string(hide_password=True)
    return url if store.schema is None or is_sqlite(store.engine) else f"{url} schema {store.schema}"


def service_store(settings: Settings, service: str, *, url: str | None = None,
                  schema: str | None = None) -> ProjectionStore:
    """The ProjectionStore of one service's projection (no I/O yet)."""
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; choose one of {', '.join(SERVICES)}")
    module = importlib.import_module(f"rethink.{service}.projection")
    url = url or settings.db_url(service)
    schema = None if is_sqlite(url) else (schema or settings.db_schema(service))
    return ProjectionStore(make_engine(url, schema), module.metadata, service, module.apply, schema)


def open_projection(settings: Settings, service: str) -> ProjectionStore:
    """What a service does on start: migrate its SQLite file, or insist its schema is at head."""
    store = service_store(settings, service)
    if is_sqlite(store.engine):
        upgrade(store)
    else:
        check_at_head(store)
    return store


def migrate(settings: Settings, services: list[str] | tuple[str, ...]) -> list[Migrated]:
    done = []
    for service in services:
        store = service_store(settings, service)
        try:
            done.append(upgrade(store))
        finally:
            store.engine.dispose()
    return done


def run_env(metadata: MetaData) -> None:
    """The body of every service's migrations/env.py: run on the connection handed in."""
    from alembic import context

    connection = context.config.attributes.get("connection")
    if connection is None:
        raise NotMigrated("run migrations through `rethink migrate`, which supplies the connection")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def _render_item(type_: str, obj: object, autogen_context: object) -> str | bool:
    # New revisions spell UtcDateTime as the column type it stores, so they import nothing of ours.
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def new_revision(service: str, message: str) -> str:
    """Autogenerate the next revision of SERVICE from the difference between head and its metadata.

    For developers: it compares against a scratch SQLite database brought to head.
    """
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        store = service_store(Settings(state_dir=Path(tmp)), service)
        upgrade(store)
        number = len(list(ScriptDirectory.from_config(_config(service)).walk_revisions())) + 1
        with store.engine.begin() as conn:
            script = command.revision(_config(service, conn), message, autogenerate=True, rev_id=f"{number:04d}")
        store.engine.dispose()
    return str(script.path) if script and not isinstance(script, list) else ""
