"""reports: built PDF reports, keyed by a hash of their inputs and of the data they read

Revision ID: 0019
Revises: 0014
Create Date: 2026-12-05 16:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = '0019'
down_revision: str | None = '0018'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'reports',
        sa.Column('study_id', sa.Uuid(), nullable=False),
        sa.Column('kind', sa.Enum('participant', 'session', 'study_progress', name='report_kind', native_enum=False, create_constraint=True, length=32), nullable=False),
        sa.Column('subject_id', sa.Uuid(), nullable=False),
        sa.Column('site_ids', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column('options', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('job_id', sa.Uuid(), nullable=True),
        sa.Column('requested_by', sa.Uuid(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('built_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('pages', sa.Integer(), nullable=True),
        sa.Column('size_bytes', sa.Integer(), nullable=True),
        sa.Column('pdf', sa.LargeBinary(), nullable=True),
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(['requested_by'], ['users.id'], name=op.f('fk_reports_requested_by_users'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_reports_study_id_studies'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_reports')),
        sa.UniqueConstraint('study_id', 'key', name=op.f('uq_reports_study_id_key')),
    )


def downgrade() -> None:
    op.drop_table('reports')
