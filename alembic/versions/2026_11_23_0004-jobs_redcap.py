"""jobs, dead letters, outbox lease, redcap

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 19:26:51.907113
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op
from sqlalchemy.dialects import postgresql
revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('jobs',
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('status', sa.Enum('queued', 'running', 'succeeded', 'failed', 'retrying', name='job_status', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('study_id', sa.Uuid(), nullable=True),
    sa.Column('subject_id', sa.Uuid(), nullable=True),
    sa.Column('outbox_event_id', sa.Uuid(), nullable=True),
    sa.Column('params', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('progress', sa.Integer(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('result_location', sa.String(length=1024), nullable=True),
    sa.Column('celery_task_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['outbox_event_id'], ['outbox_events.id'], name=op.f('fk_jobs_outbox_event_id_outbox_events'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_jobs_study_id_studies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs')),
    sa.UniqueConstraint('outbox_event_id', name=op.f('uq_jobs_outbox_event_id'))
    )
    op.create_index('ix_jobs_status_created', 'jobs', ['status', 'created_at'], unique=False)
    op.create_index(op.f('ix_jobs_study_id'), 'jobs', ['study_id'], unique=False)
    op.create_index(op.f('ix_jobs_subject_id'), 'jobs', ['subject_id'], unique=False)
    op.create_table('dead_letters',
    sa.Column('job_id', sa.Uuid(), nullable=True),
    sa.Column('task_name', sa.String(length=200), nullable=False),
    sa.Column('args', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('failed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('rerun_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('rerun_job_id', sa.Uuid(), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_dead_letters_job_id_jobs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dead_letters'))
    )
    op.create_index(op.f('ix_dead_letters_job_id'), 'dead_letters', ['job_id'], unique=False)
    op.create_table('redcap_connections',
    sa.Column('study_id', sa.Uuid(), nullable=False),
    sa.Column('site_id', sa.Uuid(), nullable=True),
    sa.Column('api_url', sa.String(length=500), nullable=False),
    sa.Column('token_encrypted', sa.LargeBinary(), nullable=False),
    sa.Column('token_last4', sa.String(length=4), nullable=False),
    sa.Column('project_title', sa.String(length=500), nullable=True),
    sa.Column('redcap_version', sa.String(length=32), nullable=True),
    sa.Column('is_longitudinal', sa.Boolean(), nullable=True),
    sa.Column('has_repeating', sa.Boolean(), nullable=True),
    sa.Column('last_tested_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('max_calls_per_minute', sa.Integer(), nullable=False),
    sa.Column('batch_size', sa.Integer(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_redcap_connections_site_id_sites'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_redcap_connections_study_id_studies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_redcap_connections')),
    sa.UniqueConstraint('study_id', 'site_id', name=op.f('uq_redcap_connections_study_id_site_id'))
    )
    op.create_index(op.f('ix_redcap_connections_study_id'), 'redcap_connections', ['study_id'], unique=False)
    op.create_table('redcap_mappings',
    sa.Column('connection_id', sa.Uuid(), nullable=False),
    sa.Column('document', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('validated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['connection_id'], ['redcap_connections.id'], name=op.f('fk_redcap_mappings_connection_id_redcap_connections'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('connection_id', name=op.f('pk_redcap_mappings'))
    )
    op.create_table('redcap_sync_states',
    sa.Column('submission_id', sa.Uuid(), nullable=False),
    sa.Column('connection_id', sa.Uuid(), nullable=True),
    sa.Column('study_id', sa.Uuid(), nullable=False),
    sa.Column('status', sa.Enum('pending', 'synced', 'failed', 'skipped', name='redcap_sync_status', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('record_id', sa.String(length=100), nullable=True),
    sa.Column('event', sa.String(length=100), nullable=True),
    sa.Column('instrument', sa.String(length=100), nullable=True),
    sa.Column('instance', sa.Integer(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('error_field', sa.String(length=100), nullable=True),
    sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('synced_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['connection_id'], ['redcap_connections.id'], name=op.f('fk_redcap_sync_states_connection_id_redcap_connections'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_redcap_sync_states_study_id_studies'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], name=op.f('fk_redcap_sync_states_submission_id_submissions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('submission_id', name=op.f('pk_redcap_sync_states'))
    )
    op.create_index('ix_redcap_sync_states_connection_status', 'redcap_sync_states', ['connection_id', 'status'], unique=False)
    op.create_index(op.f('ix_redcap_sync_states_study_id'), 'redcap_sync_states', ['study_id'], unique=False)
    op.add_column('outbox_events', sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column('outbox_events', 'lease_until')
    op.drop_index(op.f('ix_redcap_sync_states_study_id'), table_name='redcap_sync_states')
    op.drop_index('ix_redcap_sync_states_connection_status', table_name='redcap_sync_states')
    op.drop_table('redcap_sync_states')
    op.drop_table('redcap_mappings')
    op.drop_index(op.f('ix_redcap_connections_study_id'), table_name='redcap_connections')
    op.drop_table('redcap_connections')
    op.drop_index(op.f('ix_dead_letters_job_id'), table_name='dead_letters')
    op.drop_table('dead_letters')
    op.drop_index(op.f('ix_jobs_subject_id'), table_name='jobs')
    op.drop_index(op.f('ix_jobs_study_id'), table_name='jobs')
    op.drop_index('ix_jobs_status_created', table_name='jobs')
    op.drop_table('jobs')
