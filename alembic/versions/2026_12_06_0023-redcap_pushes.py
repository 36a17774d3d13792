"""REDCap pushes: a filtered set of sessions sent through the mapping again, as one job

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = '0023'
down_revision: str | None = '0022'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'redcap_pushes',
        sa.Column('study_id', sa.Uuid(), nullable=False),
        sa.Column('requested_by', sa.Uuid(), nullable=True),
        sa.Column('filters', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('job_id', sa.Uuid(), nullable=True),
        sa.Column('excluded', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('chosen_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('total', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(['requested_by'], ['users.id'],
                                name=op.f('fk_redcap_pushes_requested_by_users'),
                                ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'],
                                name=op.f('fk_redcap_pushes_study_id_studies'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_redcap_pushes')),
    )
    op.create_index(op.f('ix_redcap_pushes_study_id'), 'redcap_pushes', ['study_id'])
    op.create_table(
        'redcap_push_submissions',
        sa.Column('push_id', sa.Uuid(), nullable=False),
        sa.Column('submission_id', sa.Uuid(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=True),
        sa.Column('record_id', sa.String(length=100), nullable=True),
        sa.Column('event', sa.String(length=100), nullable=True),
        sa.Column('instrument', sa.String(length=100), nullable=True),
        sa.Column('instance', sa.Integer(), nullable=True),
        sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('error_field', sa.String(length=100), nullable=True),
        sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('synced_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['push_id'], ['redcap_pushes.id'],
                                name=op.f('fk_redcap_push_submissions_push_id_redcap_pushes'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'],
                                name=op.f('fk_redcap_push_submissions_submission_id_submissions'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('push_id', 'submission_id',
                                name=op.f('pk_redcap_push_submissions')),
    )


def downgrade() -> None:
    op.drop_table('redcap_push_submissions')
    op.drop_index(op.f('ix_redcap_pushes_study_id'), table_name='redcap_pushes')
    op.drop_table('redcap_pushes')
