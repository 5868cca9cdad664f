"""Docs are tests: the README must describe the code as it is."""

from __future__ import annotations

import re
from pathlib import Path

from rethink.shared.cli.catalogue import EMITTED_BY, catalogue_markdown
from rethink.shared.events import EVENT_TYPES
from rethink.shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readme_event_catalogue_is_the_one_generated_from_the_models():
    block = README.split("<!-- catalogue:start -->\n", 1)[1].split("<!-- catalogue:end -->", 1)[0]
    assert block.strip() == catalogue_markdown().strip()


def test_every_event_has_an_emitter_in_the_catalogue():
    assert set(EMITTED_BY) == set(EVENT_TYPES)


def test_every_setting_is_documented_in_the_readme():
    for name in Settings.model_fields:
        assert f"RETHINK_{name.upper()}" in README, name


def test_the_ci_script_runs_the_readme_test_command():
    assert "make test" in README and "make demo" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)
