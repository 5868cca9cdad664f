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

import functools
import importlib
from dataclasses import dataclass

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, inspect, text

from .projection import ProjectionStore, UtcDateTime, check_schema_name, is_sqlite, make_engine
from .settings import SERVICES, Settings

BASELINE = "0001"  # the first revision: the tables as `create_all` made them before migrations existed


class NotMigrated(ValueError):
    """The projection's schema is not the one this code needs (the CLI prints it as one line)."""


# Every database with migrations: each service's projection, and scheduling's email outbox
# (a database of its own, because a rebuild replaces the projection but must not forget what
# was sent). name -> (module holding its `metadata`, Alembic script location).
DATABASES: dict[str, tuple[str, str]] = {
    **{s: (f"rethink.{s}.projection", f"rethink.{s}:migrations") for s in SERVICES},
    "outbox": ("rethink.scheduling.outbox", "rethink.scheduling:outbox_migrations"),
}


@dataclass(frozen=True)
class Migrated:
    service: str
    before: str | None
    after: str
    where: str


@dataclass(frozen=True)
class Target:
    """One database to migrate: its name in DATABASES, an engine, and its PostgreSQL schema."""

    name: str
    engine: Engine
    schema: str | None = None


def _target(store: ProjectionStore | Target) -> Target:
    return store if isinstance(store, Target) else Target(store.consumer, store.engine, store.schema)


def _known(name: str) -> tuple[str, str]:
    if name not in DATABASES:
        raise ValueError(f"unknown service {name!r}; choose one of {', '.join(DATABASES)}")
    return DATABASES[name]


def _config(name: str, connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", _known(name)[1])
    cfg.attributes["connection"] = connection
    return cfg


def metadata_of(name: str) -> MetaData:
    return importlib.import_module(_known(name)[0]).metadata


@functools.cache  # the scripts do not change under a running process; reading them took milliseconds
def head(name: str) -> str:
    heads = ScriptDirectory.from_config(_config(name)).get_heads()
    if len(heads) != 1:  # two branches would leave "head" ambiguous: a mistake in the migrations
        raise NotMigrated(f"{name}: migrations have {len(heads)} heads, expected one")
    return heads[0]


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def ensure_schema(conn: Connection, schema: str | None) -> None:
    """Create the PostgreSQL schema if missing (no-op elsewhere), on a connection of the target's own
    engine: its ``search_path`` may name a schema that does not exist yet (PostgreSQL allows that, and
    resolves it when a table is looked up), so no second engine and connection are needed."""
    if schema is None or conn.dialect.name == "sqlite":
        return
    conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {check_schema_name(schema)}"))


def upgrade(store: ProjectionStore | Target, revision: str = "head") -> Migrated:
    """Bring one database to ``revision``, in one transaction where the database allows."""
    t = _target(store)
    with t.engine.begin() as conn:
        ensure_schema(conn, t.schema)
        before = MigrationContext.configure(conn).get_current_revision()
        if revision == "head" and before is not None and before == head(t.name):
            # Nothing to do: Alembic's own run would read its scripts and the version table again
            # (~10 ms on PostgreSQL: a rebuild's target, a service's start, `rethink migrate` again).
            return Migrated(t.name, before, before, where(t))
        if before is None and any(inspect(conn).has_table(name) for name in metadata_of(t.name).tables):
            # Made by `create_all` before migrations existed: those tables are the baseline.
            command.stamp(_config(t.name, conn), BASELINE)
        command.upgrade(_config(t.name, conn), revision)
        after = MigrationContext.configure(conn).get_current_revision()
    return Migrated(t.name, before, after or "", where(t))


def check_at_head(store: ProjectionStore | Target) -> None:
    t = _target(store)
    want, have = head(t.name), current(t.engine)
    if have != want:
        state = f"at revision {have}" if have else "not created yet"
        raise NotMigrated(
            f"the {t.name} tables ({where(t)}) are {state}; this version needs {want}. "
            f"Run `rethink migrate {t.name}` (the bootstrap job does) and start again."
        )


def where(store: ProjectionStore | Target) -> str:
    t = _target(store)
    url = t.engine.url.render_as_string(hide_password=True)
    return url if t.schema is None or is_sqlite(t.engine) else f"{url} schema {t.schema}"


def target_for(settings: Settings, name: str) -> Target:
    """The database ``name`` as configured (no I/O yet)."""
    _known(name)
    url = settings.db_url(name)
    schema = None if is_sqlite(url) else settings.db_schema(name)
    return Target(name, make_engine(url, schema), schema)


def service_store(settings: Settings, service: str, *, url: str | None = None,
                  schema: str | None = None) -> ProjectionStore:
    """The ProjectionStore of one service's projection (no I/O yet)."""
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; choose one of {', '.join(SERVICES)}")
    module = importlib.import_module(DATABASES[service][0])
    url = url or settings.db_url(service)
    schema = None if is_sqlite(url) else (schema or settings.db_schema(service))
    return ProjectionStore(make_engine(url, schema), module.metadata, service, schema=schema,
                           plan=module.plan, handles=module.HANDLES,
                           plan_unread=getattr(module, "plan_unread", None),
                           unopened=getattr(module, "UNOPENED", ()))


def prepare(target: ProjectionStore | Target) -> None:
    """What a service does on start: migrate a SQLite file, or insist a schema elsewhere is at head."""
    if is_sqlite(target.engine):
        upgrade(target)
    else:
        check_at_head(target)


def open_projection(settings: Settings, service: str) -> ProjectionStore:
    store = service_store(settings, service)
    prepare(store)
    return store


def open_database(settings: Settings, name: str) -> Engine:
    """An engine on a database that is not a projection (the outbox), prepared like one."""
    target = target_for(settings, name)
    prepare(target)
    return target.engine


def migrate(settings: Settings, names: list[str] | tuple[str, ...]) -> list[Migrated]:
    done = []
    for name in names:
        target = target_for(settings, name)
        try:
            done.append(upgrade(target))
        finally:
            target.engine.dispose()
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
        target = target_for(Settings(state_dir=Path(tmp)), service)
        upgrade(target)
        number = len(list(ScriptDirectory.from_config(_config(service)).walk_revisions())) + 1
        with target.engine.begin() as conn:
            script = command.revision(_config(service, conn), message, autogenerate=True, rev_id=f"{number:04d}")
        target.engine.dispose()
    return str(script.path) if script and not isinstance(script, list) else ""
