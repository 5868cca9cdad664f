"""open work indexed: caseload, reminders and facilitators' lists read only the open work

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 17:58:26.596512

A partial index of the cases not closed, by facilitator and case (it replaces the index of the
facilitator alone): a facilitator's caseload, the reminder job and the lists of cases to schedule
find the open cases without reading every closed one. Its condition is
spelled as the queries spell it (``closed IS false``, rendered for each database), since a planner
takes a partial index only for a query whose condition matches it.

Meetings by status, facilitator and start (it replaces the index of the facilitator alone): the
meetings to come, everyone's or one facilitator's (the bookings each ``schedule`` command checks),
are found without reading every meeting ever held.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_OPEN = sa.column('closed', sa.Boolean).is_(False)


def upgrade() -> None:
    op.create_index('scheduling_cases_open', 'scheduling_cases', ['facilitator_id', 'case_id'], unique=False,
                    sqlite_where=_OPEN, postgresql_where=_OPEN)
    op.drop_index('ix_scheduling_cases_facilitator_id', table_name='scheduling_cases')
    op.create_index('scheduling_meetings_active', 'scheduling_meetings', ['status', 'facilitator_id', 'starts_at'],
                    unique=False)
    op.drop_index('ix_scheduling_meetings_facilitator_id', table_name='scheduling_meetings')


def downgrade() -> None:
    op.create_index('ix_scheduling_cases_facilitator_id', 'scheduling_cases', ['facilitator_id'], unique=False)
    op.create_index('ix_scheduling_meetings_facilitator_id', 'scheduling_meetings', ['facilitator_id'], unique=False)
    op.drop_index('scheduling_meetings_active', table_name='scheduling_meetings')
    op.drop_index('scheduling_cases_open', table_name='scheduling_cases')
