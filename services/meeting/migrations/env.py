"""Alembic environment of the meeting projection: `rethink migrate meeting` runs it on its connection."""

from rethink.meeting.projection import metadata
from rethink.shared.migrations import run_env

run_env(metadata)
