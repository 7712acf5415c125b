"""votes: one vote per post and voter; the score and vote counts on the post row

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 07:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

POST_COUNTERS = ('score', 'upvotes', 'downvotes', 'score_version')


def upgrade() -> None:
    with op.batch_alter_table('posts') as batch:
        for name in POST_COUNTERS:
            batch.add_column(sa.Column(name, sa.Integer(), server_default='0', nullable=False))
    op.create_table('votes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('post_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('voter', sa.String(length=100), nullable=False),
    sa.Column('value', sa.SmallInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['post_id'], ['posts.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('post_id', 'voter')
    )


def downgrade() -> None:
    op.drop_table('votes')
    with op.batch_alter_table('posts') as batch:
        for name in reversed(POST_COUNTERS):
            batch.drop_column(name)
