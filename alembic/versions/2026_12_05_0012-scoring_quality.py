"""scoring and quality: task_scores, quality_checks, study_quality_settings

Server-side scores per task and scorer version (unique, so re-scoring with a new version adds
rows and keeps the old), each session's data-quality checks, and a study's thresholds.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 08:05:03
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op
from sqlalchemy.dialects import postgresql
revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('study_quality_settings',
    sa.Column('study_id', sa.Uuid(), nullable=False),
    sa.Column('thresholds', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_study_quality_settings_study_id_studies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('study_id', name=op.f('pk_study_quality_settings'))
    )
    op.create_table('quality_checks',
    sa.Column('session_id', sa.Uuid(), nullable=False),
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.Column('submission_id', sa.Uuid(), nullable=True),
    sa.Column('position', sa.Integer(), nullable=True),
    sa.Column('module_key', sa.String(length=64), nullable=True),
    sa.Column('rule', sa.String(length=64), nullable=False),
    sa.Column('rule_version', sa.String(length=16), nullable=False),
    sa.Column('threshold', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('observed', sa.Double(), nullable=True),
    sa.Column('fired', sa.Boolean(), nullable=False),
    sa.Column('detail', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('computed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['session_id'], ['assessment_sessions.id'], name=op.f('fk_quality_checks_session_id_assessment_sessions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], name=op.f('fk_quality_checks_submission_id_submissions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_quality_checks'))
    )
    op.create_index(op.f('ix_quality_checks_session_id'), 'quality_checks', ['session_id'], unique=False)
    op.create_table('task_scores',
    sa.Column('submission_id', sa.Uuid(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.Uuid(), nullable=False),
    sa.Column('module_id', sa.Uuid(), nullable=False),
    sa.Column('module_key', sa.String(length=64), nullable=False),
    sa.Column('module_version', sa.Integer(), nullable=False),
    sa.Column('scorer_key', sa.String(length=64), nullable=False),
    sa.Column('scorer_version', sa.String(length=32), nullable=False),
    sa.Column('raw_checksum', sa.String(length=64), nullable=False),
    sa.Column('client_summary', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('server_summary', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('comparison', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('n_mismatches', sa.Integer(), nullable=False),
    sa.Column('problems', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('computed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['module_id'], ['modules.id'], name=op.f('fk_task_scores_module_id_modules'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['session_id'], ['assessment_sessions.id'], name=op.f('fk_task_scores_session_id_assessment_sessions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], name=op.f('fk_task_scores_submission_id_submissions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_task_scores')),
    sa.UniqueConstraint('submission_id', 'position', 'scorer_key', 'scorer_version', name=op.f('uq_task_scores_submission_id_position_scorer_key_scorer_version'))
    )
    op.create_index(op.f('ix_task_scores_session_id'), 'task_scores', ['session_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_task_scores_session_id'), table_name='task_scores')
    op.drop_table('task_scores')
    op.drop_index(op.f('ix_quality_checks_session_id'), table_name='quality_checks')
    op.drop_table('quality_checks')
    op.drop_table('study_quality_settings')
