"""erased cases: no more reminders after a case's personal data is erased

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 00:40:13.697635
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('scheduling_erased_cases',
    sa.Column('case_id', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('case_id')
    )


def downgrade() -> None:
    op.drop_table('scheduling_erased_cases')
