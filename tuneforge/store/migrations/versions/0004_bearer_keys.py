"""bearer keys

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 08:49:48.207717
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('bearer_keys',
    sa.Column('key_id', sa.String(length=32), nullable=False),
    sa.Column('tenancy_id', sa.String(length=255), nullable=False),
    sa.Column('user_id', sa.String(length=255), nullable=False),
    sa.Column('secret_sha256', sa.String(length=64), nullable=False),
    sa.Column('time_created', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key_id')
    )
    with op.batch_alter_table('bearer_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bearer_keys_tenancy_id'), ['tenancy_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('bearer_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bearer_keys_tenancy_id'))

    op.drop_table('bearer_keys')
