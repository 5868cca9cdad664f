"""which case each email is about, so erasure reaches it

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 00:40:16.541987
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('outbox_cases',
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('case_id', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('outbox_cases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbox_cases_case_id'), ['case_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('outbox_cases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_cases_case_id'))

    op.drop_table('outbox_cases')
