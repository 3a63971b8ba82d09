"""openai_files and openai_fine_tuning_jobs (the OpenAI API's files and fine-tuning jobs); jobs.pause_requested (pause and resume)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 08:14:13.604368
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('openai_files',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('tenancy_id', sa.String(length=255), nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_details', sa.Text(), nullable=True),
    sa.Column('examples', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('openai_files', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_openai_files_tenancy_id'), ['tenancy_id'], unique=False)

    op.create_table('openai_fine_tuning_jobs',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('tenancy_id', sa.String(length=255), nullable=False),
    sa.Column('model_id', sa.String(length=255), nullable=False),
    sa.Column('base_model', sa.String(length=255), nullable=False),
    sa.Column('fine_tuned_model', sa.String(length=512), nullable=False),
    sa.Column('training_file', sa.String(length=64), nullable=False),
    sa.Column('validation_file', sa.String(length=64), nullable=True),
    sa.Column('suffix', sa.String(length=64), nullable=True),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('job_metadata', sa.JSON(), nullable=True),
    sa.Column('method', sa.JSON(), nullable=False),
    sa.Column('resolution', sa.JSON(), nullable=False),
    sa.Column('cancelled', sa.Boolean(), nullable=False),
    sa.Column('result_file', sa.String(length=64), nullable=True),
    sa.Column('trained_tokens', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('openai_fine_tuning_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_openai_fine_tuning_jobs_fine_tuned_model'), ['fine_tuned_model'], unique=False)
        batch_op.create_index(batch_op.f('ix_openai_fine_tuning_jobs_model_id'), ['model_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_openai_fine_tuning_jobs_tenancy_id'), ['tenancy_id'], unique=False)

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pause_requested', sa.Boolean(), server_default=sa.false(), nullable=False))



def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('pause_requested')

    with op.batch_alter_table('openai_fine_tuning_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_openai_fine_tuning_jobs_tenancy_id'))
        batch_op.drop_index(batch_op.f('ix_openai_fine_tuning_jobs_model_id'))
        batch_op.drop_index(batch_op.f('ix_openai_fine_tuning_jobs_fine_tuned_model'))

    op.drop_table('openai_fine_tuning_jobs')
    with op.batch_alter_table('openai_files', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_openai_files_tenancy_id'))

    op.drop_table('openai_files')
