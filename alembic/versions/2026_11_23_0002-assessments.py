"""assessments

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 18:49:36.323843
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op
from sqlalchemy.dialects import postgresql
revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('item_banks',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('items', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('status', sa.Enum('draft', 'published', name='publication_status', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_item_banks')),
    sa.UniqueConstraint('key', 'version', name=op.f('uq_item_banks_key_version'))
    )
    op.create_table('outbox_events',
    sa.Column('topic', sa.String(length=64), nullable=False),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('publish_attempts', sa.Integer(), nullable=False),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(length=2000), nullable=True),
    sa.Column('subject_id', sa.Uuid(), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox_events'))
    )
    op.create_index('ix_outbox_events_pending', 'outbox_events', ['created_at'], unique=False, postgresql_where=sa.text('completed_at IS NULL'), sqlite_where=sa.text('completed_at IS NULL'))
    op.create_index(op.f('ix_outbox_events_subject_id'), 'outbox_events', ['subject_id'], unique=False)
    op.create_table('batteries',
    sa.Column('study_id', sa.Uuid(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('status', sa.Enum('draft', 'published', name='publication_status', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_batteries_study_id_studies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batteries')),
    sa.UniqueConstraint('study_id', 'key', 'version', name=op.f('uq_batteries_study_id_key_version'))
    )
    op.create_index(op.f('ix_batteries_study_id'), 'batteries', ['study_id'], unique=False)
    op.create_table('modules',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('cognitive', 'questionnaire', name='module_kind', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('trial_schema', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('summary_schema', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('metrics', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('item_bank_id', sa.Uuid(), nullable=True),
    sa.Column('status', sa.Enum('draft', 'published', name='publication_status', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['item_bank_id'], ['item_banks.id'], name=op.f('fk_modules_item_bank_id_item_banks'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_modules')),
    sa.UniqueConstraint('key', 'version', name=op.f('uq_modules_key_version'))
    )
    op.create_table('battery_modules',
    sa.Column('battery_id', sa.Uuid(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('module_id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['battery_id'], ['batteries.id'], name=op.f('fk_battery_modules_battery_id_batteries'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['module_id'], ['modules.id'], name=op.f('fk_battery_modules_module_id_modules'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('battery_id', 'position', name=op.f('pk_battery_modules'))
    )
    op.create_table('assessment_sessions',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('participant_id', sa.Uuid(), nullable=False),
    sa.Column('study_id', sa.Uuid(), nullable=False),
    sa.Column('battery_id', sa.Uuid(), nullable=False),
    sa.Column('status', sa.Enum('in_progress', 'completed', 'abandoned', name='session_status', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('device', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('app_version', sa.String(length=64), nullable=False),
    sa.Column('client_started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('client_ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['battery_id'], ['batteries.id'], name=op.f('fk_assessment_sessions_battery_id_batteries'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['participant_id'], ['participants.id'], name=op.f('fk_assessment_sessions_participant_id_participants'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_assessment_sessions_study_id_studies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_assessment_sessions'))
    )
    op.create_index('ix_assessment_sessions_participant_started', 'assessment_sessions', ['participant_id', 'started_at'], unique=False)
    op.create_index(op.f('ix_assessment_sessions_study_id'), 'assessment_sessions', ['study_id'], unique=False)
    op.create_table('participant_access_codes',
    sa.Column('participant_id', sa.Uuid(), nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['participant_id'], ['participants.id'], name=op.f('fk_participant_access_codes_participant_id_participants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_participant_access_codes')),
    sa.UniqueConstraint('code_hash', name=op.f('uq_participant_access_codes_code_hash'))
    )
    op.create_index(op.f('ix_participant_access_codes_participant_id'), 'participant_access_codes', ['participant_id'], unique=False)
    op.create_table('participant_logins',
    sa.Column('participant_id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['participant_id'], ['participants.id'], name=op.f('fk_participant_logins_participant_id_participants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_participant_logins'))
    )
    op.create_index(op.f('ix_participant_logins_participant_id'), 'participant_logins', ['participant_id'], unique=False)
    op.create_table('submissions',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('client_submission_id', sa.String(length=128), nullable=False),
    sa.Column('participant_id', sa.Uuid(), nullable=False),
    sa.Column('study_id', sa.Uuid(), nullable=False),
    sa.Column('session_id', sa.Uuid(), nullable=False),
    sa.Column('checksum', sa.String(length=64), nullable=False),
    sa.Column('raw_payload', sa.LargeBinary(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['participant_id'], ['participants.id'], name=op.f('fk_submissions_participant_id_participants'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['session_id'], ['assessment_sessions.id'], name=op.f('fk_submissions_session_id_assessment_sessions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_submissions_study_id_studies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_submissions')),
    sa.UniqueConstraint('participant_id', 'client_submission_id', name=op.f('uq_submissions_participant_id_client_submission_id'))
    )
    op.create_index(op.f('ix_submissions_session_id'), 'submissions', ['session_id'], unique=False)
    op.create_index(op.f('ix_submissions_study_id'), 'submissions', ['study_id'], unique=False)
    op.create_table('submission_tasks',
    sa.Column('submission_id', sa.Uuid(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('module_id', sa.Uuid(), nullable=False),
    sa.Column('module_key', sa.String(length=64), nullable=False),
    sa.Column('module_version', sa.Integer(), nullable=False),
    sa.Column('summary', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('trials', sa.JSON(), nullable=False),
    sa.Column('n_trials', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['module_id'], ['modules.id'], name=op.f('fk_submission_tasks_module_id_modules'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], name=op.f('fk_submission_tasks_submission_id_submissions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('submission_id', 'position', name=op.f('pk_submission_tasks'))
    )


def downgrade() -> None:
    op.drop_table('submission_tasks')
    op.drop_index(op.f('ix_submissions_study_id'), table_name='submissions')
    op.drop_index(op.f('ix_submissions_session_id'), table_name='submissions')
    op.drop_table('submissions')
    op.drop_index(op.f('ix_participant_logins_participant_id'), table_name='participant_logins')
    op.drop_table('participant_logins')
    op.drop_index(op.f('ix_participant_access_codes_participant_id'), table_name='participant_access_codes')
    op.drop_table('participant_access_codes')
    op.drop_index(op.f('ix_assessment_sessions_study_id'), table_name='assessment_sessions')
    op.drop_index('ix_assessment_sessions_participant_started', table_name='assessment_sessions')
    op.drop_table('assessment_sessions')
    op.drop_table('battery_modules')
    op.drop_table('modules')
    op.drop_index(op.f('ix_batteries_study_id'), table_name='batteries')
    op.drop_table('batteries')
    op.drop_index(op.f('ix_outbox_events_subject_id'), table_name='outbox_events')
    op.drop_index('ix_outbox_events_pending', table_name='outbox_events', postgresql_where=sa.text('completed_at IS NULL'), sqlite_where=sa.text('completed_at IS NULL'))
    op.drop_table('outbox_events')
    op.drop_table('item_banks')
