"""jobs: the units a running job holds; the executor's ref of its attempt (a pid, a Ray job id) replaces child_pid

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 09:30:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('executor_ref', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('units', sa.Integer(), server_default='1', nullable=False))
        batch_op.drop_column('child_pid')


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('child_pid', sa.Integer(), nullable=True))
        batch_op.drop_column('units')
        batch_op.drop_column('executor_ref')
