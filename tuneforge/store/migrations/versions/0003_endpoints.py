"""endpoints

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 08:37:35.386757
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('endpoints',
    sa.Column('model_id', sa.String(length=255), nullable=False),
    sa.Column('base_model_id', sa.String(length=255), nullable=False),
    sa.Column('cluster_id', sa.String(length=255), nullable=False),
    sa.Column('private_endpoint_id', sa.String(length=255), nullable=True),
    sa.Column('guardrails', sa.JSON(), nullable=False),
    sa.Column('system_tags', sa.JSON(), nullable=False),
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('tenancy_id', sa.String(length=255), nullable=False),
    sa.Column('compartment_id', sa.String(length=255), nullable=False),
    sa.Column('display_name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('lifecycle_state', sa.String(length=32), nullable=False),
    sa.Column('lifecycle_details', sa.Text(), nullable=True),
    sa.Column('freeform_tags', sa.JSON(), nullable=False),
    sa.Column('defined_tags', sa.JSON(), nullable=False),
    sa.Column('time_created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('time_updated', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('endpoints', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_endpoints_cluster_id'), ['cluster_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_endpoints_compartment_id'), ['compartment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_endpoints_lifecycle_state'), ['lifecycle_state'], unique=False)
        batch_op.create_index(batch_op.f('ix_endpoints_model_id'), ['model_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_endpoints_tenancy_id'), ['tenancy_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('endpoints', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_endpoints_tenancy_id'))
        batch_op.drop_index(batch_op.f('ix_endpoints_model_id'))
        batch_op.drop_index(batch_op.f('ix_endpoints_lifecycle_state'))
        batch_op.drop_index(batch_op.f('ix_endpoints_compartment_id'))
        batch_op.drop_index(batch_op.f('ix_endpoints_cluster_id'))

    op.drop_table('endpoints')
