"""jobs.seed: a job's own seed (the OpenAI API's `seed`); NULL keeps the server's (42)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 09:30:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('seed', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('seed')
