"""Alembic environment of the escalation projection: `rethink migrate escalation` runs it on its connection."""

from rethink.escalation.projection import metadata
from rethink.shared.migrations import run_env

run_env(metadata)
