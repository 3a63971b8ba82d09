"""initial schema: models, clusters, work requests, jobs, metrics, retry tokens, API keys, objects

Revision ID: 0001
Revises: 
Create Date: 2026-11-28 15:23:49.559082
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('key_id', sa.String(length=512), nullable=False),
    sa.Column('tenancy_id', sa.String(length=255), nullable=False),
    sa.Column('user_id', sa.String(length=255), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('public_key_pem', sa.Text(), nullable=False),
    sa.Column('time_created', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key_id')
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_keys_tenancy_id'), ['tenancy_id'], unique=False)

    op.create_table('buckets',
    sa.Column('namespace', sa.String(length=255), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('tenancy_id', sa.String(length=255), nullable=False),
    sa.Column('compartment_id', sa.String(length=255), nullable=False),
    sa.Column('created_by', sa.String(length=255), nullable=False),
    sa.Column('time_created', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('namespace', 'name')
    )
    with op.batch_alter_table('buckets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_buckets_tenancy_id'), ['tenancy_id'], unique=False)

    op.create_table('dedicated_ai_clusters',
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('tenancy_id', sa.String(length=255), nullable=False),
    sa.Column('compartment_id', sa.String(length=255), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('unit_count', sa.Integer(), nullable=False),
    sa.Column('unit_shape', sa.String(length=64), nullable=False),
    sa.Column('display_name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('capacity_reservation_id', sa.String(length=255), nullable=True),
    sa.Column('lifecycle_state', sa.String(length=32), nullable=False),
    sa.Column('lifecycle_details', sa.Text(), nullable=True),
    sa.Column('freeform_tags', sa.JSON(), nullable=False),
    sa.Column('defined_tags', sa.JSON(), nullable=False),
    sa.Column('time_created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('time_updated', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('dedicated_ai_clusters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dedicated_ai_clusters_compartment_id'), ['compartment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_dedicated_ai_clusters_tenancy_id'), ['tenancy_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_dedicated_ai_clusters_lifecycle_state'), ['lifecycle_state'], unique=False)

    op.create_table('models',
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('tenancy_id', sa.String(length=255), nullable=False),
    sa.Column('compartment_id', sa.String(length=255), nullable=False),
    sa.Column('display_name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('vendor', sa.String(length=255), nullable=True),
    sa.Column('version', sa.String(length=255), nullable=True),
    sa.Column('base_model_id', sa.String(length=255), nullable=False),
    sa.Column('lifecycle_state', sa.String(length=32), nullable=False),
    sa.Column('lifecycle_details', sa.Text(), nullable=True),
    sa.Column('fine_tune_details', sa.JSON(), nullable=False),
    sa.Column('model_metrics', sa.JSON(), nullable=True),
    sa.Column('freeform_tags', sa.JSON(), nullable=False),
    sa.Column('defined_tags', sa.JSON(), nullable=False),
    sa.Column('system_tags', sa.JSON(), nullable=False),
    sa.Column('time_created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('time_updated', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_models_compartment_id'), ['compartment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_models_lifecycle_state'), ['lifecycle_state'], unique=False)
        batch_op.create_index(batch_op.f('ix_models_tenancy_id'), ['tenancy_id'], unique=False)

    op.create_table('objects',
    sa.Column('namespace', sa.String(length=255), nullable=False),
    sa.Column('bucket', sa.String(length=256), nullable=False),
    sa.Column('name', sa.String(length=1024), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('md5', sa.String(length=64), nullable=False),
    sa.Column('etag', sa.String(length=64), nullable=False),
    sa.Column('content_type', sa.String(length=255), nullable=False),
    sa.Column('storage_key', sa.String(length=64), nullable=False),
    sa.Column('time_created', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('namespace', 'bucket', 'name')
    )
    op.create_table('retry_tokens',
    sa.Column('tenancy_id', sa.String(length=255), nullable=False),
    sa.Column('token', sa.String(length=255), nullable=False),
    sa.Column('operation', sa.String(length=64), nullable=False),
    sa.Column('body_hash', sa.String(length=64), nullable=False),
    sa.Column('resource_id', sa.String(length=255), nullable=False),
    sa.Column('work_request_id', sa.String(length=255), nullable=True),
    sa.Column('time_created', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('tenancy_id', 'token', 'operation')
    )
    op.create_table('work_requests',
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('tenancy_id', sa.String(length=255), nullable=False),
    sa.Column('compartment_id', sa.String(length=255), nullable=False),
    sa.Column('operation_type', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('percent_complete', sa.Float(), nullable=False),
    sa.Column('entity_type', sa.String(length=64), nullable=False),
    sa.Column('resource_id', sa.String(length=255), nullable=False),
    sa.Column('action_type', sa.String(length=32), nullable=False),
    sa.Column('entity_uri', sa.String(length=512), nullable=False),
    sa.Column('time_accepted', sa.DateTime(timezone=True), nullable=False),
    sa.Column('time_started', sa.DateTime(timezone=True), nullable=True),
    sa.Column('time_finished', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('work_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_work_requests_compartment_id'), ['compartment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_work_requests_resource_id'), ['resource_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_work_requests_tenancy_id'), ['tenancy_id'], unique=False)

    op.create_table('jobs',
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('model_id', sa.String(length=255), nullable=False),
    sa.Column('cluster_id', sa.String(length=255), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('job_dir', sa.Text(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('owner', sa.String(length=255), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('child_pid', sa.Integer(), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('metrics_offset', sa.BigInteger(), nullable=False),
    sa.Column('metrics_lines', sa.Integer(), nullable=False),
    sa.Column('progress', sa.JSON(), nullable=True),
    sa.Column('time_created', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['id'], ['work_requests.id'], ),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jobs_cluster_id'), ['cluster_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_model_id'), ['model_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_state'), ['state'], unique=False)

    op.create_table('metric_records',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('model_id', sa.String(length=255), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('record', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('model_id', 'seq')
    )
    with op.batch_alter_table('metric_records', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_metric_records_model_id'), ['model_id'], unique=False)

    op.create_table('work_request_entries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('work_request_id', sa.String(length=255), nullable=False),
    sa.Column('is_error', sa.Boolean(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['work_request_id'], ['work_requests.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('work_request_entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_work_request_entries_work_request_id'), ['work_request_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('work_request_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_work_request_entries_work_request_id'))

    op.drop_table('work_request_entries')
    with op.batch_alter_table('metric_records', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_metric_records_model_id'))

    op.drop_table('metric_records')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_state'))
        batch_op.drop_index(batch_op.f('ix_jobs_model_id'))
        batch_op.drop_index(batch_op.f('ix_jobs_cluster_id'))

    op.drop_table('jobs')
    with op.batch_alter_table('work_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_work_requests_tenancy_id'))
        batch_op.drop_index(batch_op.f('ix_work_requests_resource_id'))
        batch_op.drop_index(batch_op.f('ix_work_requests_compartment_id'))

    op.drop_table('work_requests')
    op.drop_table('retry_tokens')
    op.drop_table('objects')
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_models_tenancy_id'))
        batch_op.drop_index(batch_op.f('ix_models_lifecycle_state'))
        batch_op.drop_index(batch_op.f('ix_models_compartment_id'))

    op.drop_table('models')
    with op.batch_alter_table('dedicated_ai_clusters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dedicated_ai_clusters_lifecycle_state'))
        batch_op.drop_index(batch_op.f('ix_dedicated_ai_clusters_tenancy_id'))
        batch_op.drop_index(batch_op.f('ix_dedicated_ai_clusters_compartment_id'))

    op.drop_table('dedicated_ai_clusters')
    with op.batch_alter_table('buckets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_buckets_tenancy_id'))

    op.drop_table('buckets')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_keys_tenancy_id'))

    op.drop_table('api_keys')
