"""intake projection: the tables as first released

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
    op.create_table('intake_requests',
    sa.Column('case_id', sa.String(length=16), nullable=False),
    sa.Column('agency', sa.String(length=120), nullable=False),
    sa.Column('request_id', sa.String(length=100), nullable=True),
    sa.Column('case_reference', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=20), nullable=False),
    sa.Column('agencies', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('missing_checks', sa.Text(), nullable=False),
    sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('confirmed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('case_id')
    )


def downgrade() -> None:
    op.drop_table('intake_requests')
    op.drop_table('checkpoint')
