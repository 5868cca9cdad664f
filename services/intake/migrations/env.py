"""Alembic environment of the intake projection: `rethink migrate intake` runs it on its connection."""

from rethink.intake.projection import metadata
from rethink.shared.migrations import run_env

run_env(metadata)
