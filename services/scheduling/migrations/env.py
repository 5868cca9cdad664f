"""Alembic environment of the scheduling projection: `rethink migrate scheduling` runs it on its connection."""

from rethink.scheduling.projection import metadata
from rethink.shared.migrations import run_env

run_env(metadata)
