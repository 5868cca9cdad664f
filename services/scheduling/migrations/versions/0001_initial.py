"""scheduling projection: the tables as first released

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('checkpoint',
    sa.Column('consumer', sa.String(length=64), nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('consumer')
    )
    op.create_table('scheduling_actions',
    sa.Column('case_id', sa.String(length=16), nullable=False),
    sa.Column('action_id', sa.String(length=60), nullable=False),
    sa.Column('meeting_id', sa.String(length=40), nullable=False),
    sa.Column('owner', sa.Text(), nullable=False),
    sa.Column('due_date', sa.Date(), nullable=False),
    sa.Column('completed', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('case_id', 'action_id')
    )
    op.create_table('scheduling_cases',
    sa.Column('case_id', sa.String(length=16), nullable=False),
    sa.Column('case_reference', sa.String(length=64), nullable=False),
    sa.Column('facilitator_id', sa.String(length=40), nullable=True),
    sa.Column('facilitator_name', sa.String(length=200), nullable=True),
    sa.Column('facilitator_email', sa.String(length=320), nullable=True),
    sa.Column('closed', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('case_id')
    )
    op.create_index(op.f('ix_scheduling_cases_facilitator_id'), 'scheduling_cases', ['facilitator_id'], unique=False)
    op.create_table('scheduling_escalations',
    sa.Column('case_id', sa.String(length=16), nullable=False),
    sa.Column('escalation_id', sa.String(length=40), nullable=False),
    sa.Column('stage', sa.Integer(), nullable=False),
    sa.Column('stage_name', sa.String(length=200), nullable=False),
    sa.Column('holder', sa.String(length=200), nullable=False),
    sa.Column('deadline', sa.Date(), nullable=False),
    sa.Column('resolved', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('case_id', 'escalation_id')
    )
    op.create_table('scheduling_meeting_revisions',
    sa.Column('meeting_id', sa.String(length=40), nullable=False),
    sa.Column('sequence', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('meeting_id')
    )
    op.create_table('scheduling_meetings',
    sa.Column('meeting_id', sa.String(length=40), nullable=False),
    sa.Column('case_id', sa.String(length=16), nullable=False),
    sa.Column('facilitator_id', sa.String(length=40), nullable=False),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration_minutes', sa.Integer(), nullable=False),
    sa.Column('mode', sa.String(length=20), nullable=False),
    sa.Column('venue', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('invitees', sa.Text(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('meeting_id')
    )
    op.create_index(op.f('ix_scheduling_meetings_case_id'), 'scheduling_meetings', ['case_id'], unique=False)
    op.create_index(op.f('ix_scheduling_meetings_facilitator_id'), 'scheduling_meetings', ['facilitator_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_scheduling_meetings_facilitator_id'), table_name='scheduling_meetings')
    op.drop_index(op.f('ix_scheduling_meetings_case_id'), table_name='scheduling_meetings')
    op.drop_table('scheduling_meetings')
    op.drop_table('scheduling_meeting_revisions')
    op.drop_table('scheduling_escalations')
    op.drop_index(op.f('ix_scheduling_cases_facilitator_id'), table_name='scheduling_cases')
    op.drop_table('scheduling_cases')
    op.drop_table('scheduling_actions')
    op.drop_table('checkpoint')
