"""multipart uploads

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 08:07:47.519789
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('multipart_uploads',
    sa.Column('upload_id', sa.String(length=64), nullable=False),
    sa.Column('tenancy_id', sa.String(length=255), nullable=False),
    sa.Column('namespace', sa.String(length=255), nullable=False),
    sa.Column('bucket', sa.String(length=256), nullable=False),
    sa.Column('name', sa.String(length=1024), nullable=False),
    sa.Column('content_type', sa.String(length=255), nullable=True),
    sa.Column('if_match', sa.String(length=512), nullable=True),
    sa.Column('if_none_match', sa.String(length=16), nullable=True),
    sa.Column('time_created', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('upload_id')
    )
    with op.batch_alter_table('multipart_uploads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_multipart_uploads_tenancy_id'), ['tenancy_id'], unique=False)

    op.create_table('multipart_upload_parts',
    sa.Column('upload_id', sa.String(length=64), nullable=False),
    sa.Column('part_num', sa.Integer(), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('md5', sa.String(length=64), nullable=False),
    sa.Column('etag', sa.String(length=64), nullable=False),
    sa.Column('storage_key', sa.String(length=64), nullable=False),
    sa.Column('time_created', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['upload_id'], ['multipart_uploads.upload_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('upload_id', 'part_num')
    )


def downgrade() -> None:
    op.drop_table('multipart_upload_parts')
    with op.batch_alter_table('multipart_uploads', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_multipart_uploads_tenancy_id'))

    op.drop_table('multipart_uploads')
