"""exports: export requests and the submissions each one read

Revision ID: 0018
Revises: 0014
Create Date: 2026-12-05 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = '0018'
down_revision: str | None = '0017'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'exports',
        sa.Column('study_id', sa.Uuid(), nullable=False),
        sa.Column('requested_by', sa.Uuid(), nullable=True),
        sa.Column('filters', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('formats', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('job_id', sa.Uuid(), nullable=True),
        sa.Column('source_export_id', sa.Uuid(), nullable=True),
        sa.Column('data_as_of', sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            'excluded',
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column('rows_done', sa.BigInteger(), nullable=False),
        sa.Column('rows_total', sa.BigInteger(), nullable=True),
        sa.Column('progress_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('storage_key', sa.String(length=1024), nullable=True),
        sa.Column('sha256', sa.String(length=64), nullable=True),
        sa.Column('size_bytes', sa.BigInteger(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('frozen_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('frozen_by', sa.Uuid(), nullable=True),
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(['frozen_by'], ['users.id'], name=op.f('fk_exports_frozen_by_users'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['requested_by'], ['users.id'], name=op.f('fk_exports_requested_by_users'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['source_export_id'], ['exports.id'], name=op.f('fk_exports_source_export_id_exports'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_exports_study_id_studies'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_exports')),
    )
    op.create_index(op.f('ix_exports_study_id'), 'exports', ['study_id'], unique=False)
    op.create_table(
        'export_submissions',
        sa.Column('export_id', sa.Uuid(), nullable=False),
        sa.Column('submission_id', sa.Uuid(), nullable=False),
        sa.Column('checksum', sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(['export_id'], ['exports.id'], name=op.f('fk_export_submissions_export_id_exports'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('export_id', 'submission_id', name=op.f('pk_export_submissions')),
    )


def downgrade() -> None:
    op.drop_table('export_submissions')
    op.drop_index(op.f('ix_exports_study_id'), table_name='exports')
    op.drop_table('exports')
