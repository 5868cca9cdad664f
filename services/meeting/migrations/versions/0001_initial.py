"""meeting projection: the tables as first released

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
    op.create_table('meeting_actions',
    sa.Column('case_id', sa.String(length=16), nullable=False),
    sa.Column('action_id', sa.String(length=64), nullable=False),
    sa.Column('meeting_id', sa.String(length=200), nullable=False),
    sa.Column('recorded_seq', sa.BigInteger(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('owner_name', sa.String(length=200), nullable=False),
    sa.Column('owner_agency', sa.String(length=120), nullable=False),
    sa.Column('owner_email', sa.String(length=320), nullable=False),
    sa.Column('due_date', sa.Date(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('completed_on', sa.Date(), nullable=True),
    sa.Column('overdue_reported', sa.Boolean(), nullable=False),
    sa.Column('overdue_as_of', sa.Date(), nullable=True),
    sa.PrimaryKeyConstraint('case_id', 'action_id')
    )
    op.create_index('meeting_actions_open_due', 'meeting_actions', ['status', 'overdue_reported', 'due_date'], unique=False)
    op.create_index('meeting_actions_owner', 'meeting_actions', ['owner_email'], unique=False)
    op.create_table('meeting_cases',
    sa.Column('case_id', sa.String(length=16), nullable=False),
    sa.Column('closed', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('case_id')
    )
    op.create_table('meeting_meetings',
    sa.Column('case_id', sa.String(length=16), nullable=False),
    sa.Column('meeting_id', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('arranged_seq', sa.BigInteger(), nullable=False),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('held_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('outcome', sa.String(length=20), nullable=True),
    sa.Column('attendees', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('case_id', 'meeting_id')
    )


def downgrade() -> None:
    op.drop_table('meeting_meetings')
    op.drop_table('meeting_cases')
    op.drop_index('meeting_actions_owner', table_name='meeting_actions')
    op.drop_index('meeting_actions_open_due', table_name='meeting_actions')
    op.drop_table('meeting_actions')
    op.drop_table('checkpoint')
