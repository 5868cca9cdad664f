"""Docs are tests: the README must describe the code as it is."""

from __future__ import annotations

import json
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


def _documented_defaults() -> dict[str, str]:
    """The README table's default column, where it is a literal value (in backticks)."""
    return dict(re.findall(r"^\| `RETHINK_([A-Z0-9_]+)` \| `([^`|]*)` \|", README, re.M))


def test_every_literal_default_in_the_readme_is_the_real_default():
    documented = _documented_defaults()
    assert len(documented) > 30  # the pattern still finds the table
    for name, field in Settings.model_fields.items():
        real = field.get_default(call_default_factory=True)
        doc = documented.get(name.upper())
        if doc is None:  # described in words ("unset", "SQLite file per service"): then there is no simple value
            assert real is None or isinstance(real, dict | list) and name in ("database_url", "database_schema",
                                                                                "facilitators"), name
        elif real is None:  # worked out at run time from other settings, e.g. `<state>/...`
            assert "<" in doc, name
        elif isinstance(real, bool):
            assert doc == str(real).lower(), name
        elif isinstance(real, str):
            assert doc == real, name
        elif isinstance(real, int | float):
            assert float(doc) == real, name
        elif isinstance(real, list):
            assert json.loads(doc) == real, name
        else:
            assert doc == str(real), name


def test_the_operations_guide_points_at_the_configuration_reference():
    ops = (ROOT / "docs" / "operations.md").read_text()
    assert "../README.md#configuration" in ops
