"""sweeps: hyperparameter sweeps coordinated by one server at a time; jobs.stop_reason (stop training, keep the model);
the `optuna` schema that holds Optuna's own tables on PostgreSQL

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 10:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sweeps',
    sa.Column('base_model_id', sa.String(length=255), nullable=False),
    sa.Column('cluster_id', sa.String(length=255), nullable=False),
    sa.Column('training_dataset', sa.JSON(), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('results', sa.JSON(), nullable=True),
    sa.Column('learning_curve', sa.JSON(), nullable=True),
    sa.Column('kept_model_id', sa.String(length=255), nullable=True),
    sa.Column('work_request_id', sa.String(length=255), nullable=False),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('owner', sa.String(length=255), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
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
    with op.batch_alter_table('sweeps', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sweeps_cluster_id'), ['cluster_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sweeps_compartment_id'), ['compartment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sweeps_lifecycle_state'), ['lifecycle_state'], unique=False)
        batch_op.create_index(batch_op.f('ix_sweeps_tenancy_id'), ['tenancy_id'], unique=False)
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stop_reason', sa.Text(), nullable=True))
    # Optuna's tables (studies, trials, its own alembic_version) live beside the service's in the same
    # database, in a schema of their own so that the two Alembic histories never meet. SQLite has no
    # schemas: there Optuna gets a file beside the service's (services/sweeps.py, study_storage_url).
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('CREATE SCHEMA IF NOT EXISTS optuna')


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('stop_reason')
    with op.batch_alter_table('sweeps', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sweeps_tenancy_id'))
        batch_op.drop_index(batch_op.f('ix_sweeps_lifecycle_state'))
        batch_op.drop_index(batch_op.f('ix_sweeps_compartment_id'))
        batch_op.drop_index(batch_op.f('ix_sweeps_cluster_id'))

    op.drop_table('sweeps')
    # The optuna schema is left: it may hold the studies of sweeps someone still wants to read.
