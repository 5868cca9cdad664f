"""The Dockerfiles, checked without a Docker engine: hadolint, what they copy, what they run."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from rethink.shared.settings import SERVICES

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))


def _hadolint() -> str:
    return str(Path(sysconfig.get_path("scripts")) / "hadolint")


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _ignored(path: str) -> bool:
    """.dockerignore as Docker reads it: the last pattern that matches decides."""
    ignored = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path.rstrip("/"), pattern) or fnmatch.fnmatch(path.rstrip("/"), pattern + "/*"):
            ignored = not negate
    return ignored


def test_there_is_an_image_per_service_and_one_for_the_bootstrap():
    assert {p.name for p in DOCKERFILES} == {f"{s}.Dockerfile" for s in (*SERVICES, "bootstrap")}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing_at_warning_level_or_above(dockerfile: Path):
    result = subprocess.run([_hadolint(), "--failure-threshold", "warning", str(dockerfile)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_fail_on_a_warning(tmp_path: Path):
    # The check above is only worth something if this threshold catches a real mistake.
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nCMD python -m http.server\n")
    result = subprocess.run([_hadolint(), "--failure-threshold", "warning", str(bad)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3007" in result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copy_source_exists_and_reaches_the_build_context(dockerfile: Path):
    copies = [args for word, args in _instructions(dockerfile) if word == "COPY" and "--from=" not in args]
    assert copies
    for args in copies:
        *sources, _dest = args.split()
        for source in sources:
            assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"
            assert not _ignored(source), f"{dockerfile.name}: COPY {source} is excluded by .dockerignore"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_are_pinned_multi_stage_and_run_as_a_non_root_user(dockerfile: Path):
    steps = _instructions(dockerfile)
    bases = [args for word, args in steps if word == "FROM"]
    assert len(bases) == 2, "a build stage and a runtime stage"
    for base in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?( AS \w+)?", base), base
    users = [args for word, args in steps if word == "USER"]
    assert users and not users[-1].startswith(("root", "0")), users


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_image_runs_that_service_and_keeps_only_its_code(service: str):
    dockerfile = DOCKER / f"{service}.Dockerfile"
    steps = _instructions(dockerfile)
    cmd = json.loads([args for word, args in steps if word == "CMD"][-1])
    assert cmd == ["rethink", "service", "run", service]
    prune = next(args for word, args in steps if word == "RUN" and "rm -rf" in args)
    assert f"! -name shared ! -name {service} " in prune
    health = next(args for word, args in steps if word == "HEALTHCHECK")
    probe = json.loads(health.split("CMD", 1)[1])
    assert probe[:2] == ["python", "-c"] and "http://127.0.0.1:8080/healthz" in probe[2]
    compile(probe[2], "HEALTHCHECK", "exec")


@pytest.mark.parametrize("service", SERVICES)
def test_the_service_starts_from_its_own_package_and_shared_alone(service: str):
    # What the pruned image holds: importing any other service fails, as it would in the image.
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    others = [p for p in packages if p not in {"rethink.shared", f"rethink.{service}"}]
    assert len(others) == len(packages) - 2
    code = (
        "import importlib.abc, sys\n"
        f"OTHERS = {tuple(others)!r}\n"
        "class Pruned(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.startswith(OTHERS):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Pruned())\n"
        "from rethink.shared.cli.main import app\n"
        "from rethink.shared.cli.services import factory\n"
        f"factory({service!r})\n"
        "print(sorted(m for m in sys.modules if m.startswith('rethink.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert f"rethink.{service}.app" in result.stdout


def test_the_service_dockerfiles_differ_only_by_the_service_name():
    intake = (DOCKER / "intake.Dockerfile").read_text()
    for service in SERVICES[1:]:
        mine = (DOCKER / f"{service}.Dockerfile").read_text()
        body = lambda text: text.split("\nFROM ", 1)[1]  # noqa: E731 - the header comment differs
        assert body(mine) == body(intake).replace("intake", service), service


def test_the_bootstrap_image_runs_real_cli_commands():
    steps = _instructions(DOCKER / "bootstrap.Dockerfile")
    assert json.loads([args for word, args in steps if word == "CMD"][-1]) == ["rethink-bootstrap"]
    script = (DOCKER / "bootstrap.sh").read_text()
    assert "\nrethink bootstrap\n" in script
    rethink = Path(sysconfig.get_path("scripts")) / "rethink"
    result = subprocess.run([str(rethink), "bootstrap", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    shell = subprocess.run(["sh", "-n", str(DOCKER / "bootstrap.sh")], capture_output=True, text=True)
    assert shell.returncode == 0, shell.stderr


def test_the_images_constraints_are_the_versions_installed_here():
    from tests.deploy.constraints import FILE, render

    assert FILE.read_text() == render(), "refresh it: .venv/bin/python -m tests.deploy.constraints"
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    constrained = dict(line.split("==") for line in FILE.read_text().splitlines() if "==" in line)
    for pin in pins:
        name, version = pin.split("==")
        assert constrained[name.split("[")[0].lower()] == version, pin
