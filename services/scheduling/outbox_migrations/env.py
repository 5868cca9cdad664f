"""Alembic environment of scheduling's email outbox: `rethink migrate outbox` runs it on its connection."""

from rethink.scheduling.outbox import metadata
from rethink.shared.migrations import run_env

run_env(metadata)
