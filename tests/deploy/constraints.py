"""deploy/docker/constraints.txt: the exact versions of every runtime dependency, direct or not,
as installed in the environment the tests pass in, so an image installs what was tested.

Refresh after changing a dependency:  .venv/bin/python -m tests.deploy.constraints
"""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

from packaging.requirements import Requirement

FILE = Path(__file__).resolve().parents[2] / "deploy" / "docker" / "constraints.txt"
HEADER = ("# Every runtime dependency of rethink (not the test extras), pinned as tested.\n"
          "# Generated: .venv/bin/python -m tests.deploy.constraints (tests/deploy checks it is current).\n")


def _key(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def runtime_versions(root: str = "rethink") -> dict[str, str]:
    found: dict[str, str] = {}

    def walk(name: str, extras: frozenset[str]) -> None:
        dist = md.distribution(name)
        key = _key(dist.metadata["Name"])
        if key in found and not extras:
            return
        found[key] = dist.version
        for raw in dist.requires or []:
            req = Requirement(raw)
            wanted = req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (extras or {""}))
            if wanted:
                walk(req.name, frozenset(req.extras))

    walk(root, frozenset())
    del found[root]
    return dict(sorted(found.items()))


def render() -> str:
    return HEADER + "".join(f"{name}=={version}\n" for name, version in runtime_versions().items())


if __name__ == "__main__":
    FILE.write_text(render())
    print(f"wrote {FILE}")
