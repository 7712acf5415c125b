"""fences: the newest leadership epoch per singleton duty

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 05:45:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('fences',
    sa.Column('duty', sa.String(length=64), nullable=False),
    sa.Column('epoch', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('duty')
    )


def downgrade() -> None:
    op.drop_table('fences')
