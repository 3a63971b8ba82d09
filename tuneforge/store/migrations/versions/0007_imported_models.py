"""imported_models: OCI's imported models (a Hugging Face model or an Object Storage folder brought as a base model)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 08:15:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('imported_models',
    sa.Column('vendor', sa.String(length=255), nullable=True),
    sa.Column('version', sa.String(length=255), nullable=True),
    sa.Column('capabilities', sa.JSON(), nullable=False),
    sa.Column('source', sa.JSON(), nullable=False),
    sa.Column('architecture', sa.String(length=255), nullable=True),
    sa.Column('weights_dir', sa.Text(), nullable=True),
    sa.Column('config', sa.JSON(), nullable=True),
    sa.Column('size_bytes', sa.BigInteger(), nullable=True),
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
    with op.batch_alter_table('imported_models', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_imported_models_compartment_id'), ['compartment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_imported_models_lifecycle_state'), ['lifecycle_state'], unique=False)
        batch_op.create_index(batch_op.f('ix_imported_models_tenancy_id'), ['tenancy_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('imported_models', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_imported_models_tenancy_id'))
        batch_op.drop_index(batch_op.f('ix_imported_models_lifecycle_state'))
        batch_op.drop_index(batch_op.f('ix_imported_models_compartment_id'))

    op.drop_table('imported_models')
