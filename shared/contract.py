"""The contract agencies build against, generated from the code so it cannot drift.

docs/agencies.md holds the rejection-code table, docs/schemas/ the JSON Schemas and
docs/asyncapi.yaml the AsyncAPI document; tests compare each with what this module renders,
and ``rethink contract write`` refreshes them after a deliberate change.
"""

from __future__ import annotations

from .errors import MEANINGS

CODES_START, CODES_END = "<!-- codes:start -->", "<!-- codes:end -->"


def codes_markdown() -> str:
    rows = ["| code | meaning |", "| --- | --- |"]
    rows += [f"| `{code}` | {meaning} |" for code, meaning in MEANINGS.items()]
    return "\n".join(rows) + "\n"
