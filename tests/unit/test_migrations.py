"""Who migrates what: `rethink migrate`, the embedded SQLite default, and a service refusing a stale schema."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from rethink.intake import projection as intake
from rethink.shared.cli.main import app
from rethink.shared.migrations import BASELINE, DATABASES, NotMigrated, current, head, open_projection
from rethink.shared.projection import ProjectionStore, make_engine
from rethink.shared.settings import Settings
from tests.support import recorded
from tests.unit.test_projection_contract import submitted


def test_a_service_on_sqlite_migrates_its_own_file_on_start(tmp_path):
    store = open_projection(Settings(state_dir=tmp_path), "intake")
    assert current(store.engine) == head("intake")
    assert (tmp_path / "intake.db").exists()


def test_a_sqlite_projection_made_before_migrations_is_adopted_with_its_rows(tmp_path):
    url = f"sqlite:///{tmp_path / 'intake.db'}"
    legacy = ProjectionStore(make_engine(url), intake.metadata, "intake", plan=intake.plan)
    legacy.create_schema()  # how projections were made before migrations existed
    legacy.apply(recorded(submitted(), case_id="RT-AAAAAAAAAA", seq=7))
    legacy.engine.dispose()
    store = open_projection(Settings(state_dir=tmp_path), "intake")
    assert current(store.engine) == head("intake") >= BASELINE
    assert store.last_seq() == 7
    with store.engine.connect() as conn:
        assert conn.execute(select(intake.requests.c.case_id)).scalars().all() == ["RT-AAAAAAAAAA"]


def test_a_database_already_at_head_is_left_alone_without_alembic_running(tmp_path, monkeypatch):
    from rethink.shared import migrations

    store = open_projection(Settings(state_dir=tmp_path), "intake")  # migrated to head
    monkeypatch.setattr(migrations.command, "upgrade", lambda *a, **k: pytest.fail("Alembic ran at head"))
    again = migrations.upgrade(store)
    assert again.before == again.after == head("intake")


def _pg_env(postgres_url: str, tmp_path, schema: str) -> dict[str, str]:
    return {"RETHINK_STATE_DIR": str(tmp_path), "RETHINK_DATABASE_URL__INTAKE": postgres_url,
            "RETHINK_DATABASE_SCHEMA__INTAKE": schema}


def test_a_service_on_postgresql_refuses_an_unmigrated_schema_until_rethink_migrate_runs(
        postgres_url, tmp_path, monkeypatch):
    schema = f"intake_{uuid.uuid4().hex[:8]}"
    for k, v in _pg_env(postgres_url, tmp_path, schema).items():
        monkeypatch.setenv(k, v)
    with pytest.raises(NotMigrated, match=r"the intake tables .* are not created yet.*rethink migrate intake"):
        open_projection(Settings(), "intake")

    first = CliRunner().invoke(app, ["migrate", "intake"])
    assert first.exit_code == 0, first.output
    assert f"intake: empty -> {head('intake')}" in first.output and f"schema {schema}" in first.output
    again = CliRunner().invoke(app, ["migrate", "intake"])
    assert f"intake: already at {head('intake')}" in again.output

    store = open_projection(Settings(), "intake")
    assert store.schema == schema and current(store.engine) == head("intake")


def test_migrate_all_brings_every_sqlite_projection_to_head(tmp_path, monkeypatch):
    monkeypatch.setenv("RETHINK_STATE_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["migrate", "--all"])
    assert result.exit_code == 0, result.output
    for service in DATABASES:
        assert f"{service}: empty -> {head(service)}" in result.output
        assert current(make_engine(f"sqlite:///{tmp_path / service}.db")) == head(service)


@pytest.mark.parametrize("args, message", [
    ([], "give one SERVICE or --all"),
    (["intake", "--all"], "give one SERVICE or --all"),
    (["billing"], "unknown service 'billing'"),
])
def test_migrate_refuses_an_unclear_target(args, message, tmp_path, monkeypatch):
    monkeypatch.setenv("RETHINK_STATE_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["migrate", *args])
    assert result.exit_code == 1 and message in result.output


def test_a_database_that_does_not_answer_is_one_clear_line(tmp_path, monkeypatch):
    from rethink.shared.natsserver import free_port

    monkeypatch.setenv("RETHINK_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("RETHINK_DATABASE_URL__INTAKE", f"postgresql+psycopg://127.0.0.1:{free_port()}/nothing")
    result = CliRunner().invoke(app, ["migrate", "intake"])
    assert result.exit_code == 1 and "migration failed: OperationalError" in result.output


def test_every_migration_file_is_shipped_in_the_installed_package():
    """Images install the wheel, not the source tree: a migration missing from package-data would not run."""
    import tomllib
    from pathlib import Path, PurePosixPath

    root = Path(__file__).resolve().parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    for name, (_, location) in DATABASES.items():
        package, folder = location.split(":")
        package_root = root / config["package-dir"][package]
        globs = config["package-data"].get(package, [])
        files = [p.relative_to(package_root).as_posix() for p in (package_root / folder).rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts]
        assert any(f.startswith(f"{folder}/versions/") for f in files), name
        for f in files:
            # PurePath.match, unlike fnmatch, keeps `*` inside one folder, as setuptools does
            assert any(PurePosixPath(f).match(g) for g in globs), f"{package}: {f} is not in package-data"
