"""escalation projection: the tables as first released

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
    op.create_table('escalation_cases',
    sa.Column('case_id', sa.String(length=16), nullable=False),
    sa.Column('closed', sa.Boolean(), nullable=False),
    sa.Column('closed_reason', sa.String(length=40), nullable=True),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('case_id')
    )
    op.create_table('escalation_escalations',
    sa.Column('case_id', sa.String(length=16), nullable=False),
    sa.Column('escalation_id', sa.String(length=16), nullable=False),
    sa.Column('trigger', sa.String(length=32), nullable=False),
    sa.Column('stage', sa.Integer(), nullable=False),
    sa.Column('stage_name', sa.String(length=200), nullable=False),
    sa.Column('holder', sa.String(length=200), nullable=False),
    sa.Column('deadline', sa.Date(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('raised_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('case_id', 'escalation_id')
    )
    op.create_index(op.f('ix_escalation_escalations_deadline'), 'escalation_escalations', ['deadline'], unique=False)
    op.create_index(op.f('ix_escalation_escalations_status'), 'escalation_escalations', ['status'], unique=False)
    op.create_table('escalation_stages',
    sa.Column('case_id', sa.String(length=16), nullable=False),
    sa.Column('escalation_id', sa.String(length=16), nullable=False),
    sa.Column('stage', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('holder', sa.String(length=200), nullable=False),
    sa.Column('deadline', sa.Date(), nullable=False),
    sa.Column('entered_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('case_id', 'escalation_id', 'stage')
    )


def downgrade() -> None:
    op.drop_table('escalation_stages')
    op.drop_index(op.f('ix_escalation_escalations_status'), table_name='escalation_escalations')
    op.drop_index(op.f('ix_escalation_escalations_deadline'), table_name='escalation_escalations')
    op.drop_table('escalation_escalations')
    op.drop_table('escalation_cases')
    op.drop_table('checkpoint')
