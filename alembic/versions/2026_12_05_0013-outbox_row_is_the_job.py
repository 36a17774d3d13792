"""outbox: the row is the job (status, attempts, progress, error, result); jobs and dead letters go

One record per piece of work. Each outbox row takes its Job's status, attempts, progress,
error, result location, study and times, and a failed row is its own dead letter (an admin
re-run puts it back to queued; rerun_at says when). due_at replaces the lease and the publish
count: the relay publishes an unfinished row once due_at has passed. Downgrade rebuilds a Job
per row and a dead letter per failed row.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 08:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = ('queued', 'running', 'succeeded', 'failed', 'retrying')
PENDING_OLD = 'completed_at IS NULL'
UNPUBLISHED_OLD = 'completed_at IS NULL AND published_at IS NULL'
LEASED_OLD = 'completed_at IS NULL AND published_at IS NOT NULL'
PENDING = 'finished_at IS NULL'
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    op.drop_index('ix_outbox_events_unpublished', table_name='outbox_events', postgresql_where=sa.text(UNPUBLISHED_OLD))
    op.drop_index('ix_outbox_events_leased', table_name='outbox_events', postgresql_where=sa.text(LEASED_OLD))
    op.drop_index('ix_outbox_events_pending_by_topic', table_name='outbox_events', postgresql_where=sa.text(PENDING_OLD))
    op.alter_column('outbox_events', 'completed_at', new_column_name='finished_at')
    op.alter_column('outbox_events', 'last_error', new_column_name='error', type_=sa.Text())
    op.add_column('outbox_events', sa.Column('study_id', sa.Uuid(), nullable=True))
    op.add_column('outbox_events', sa.Column('status', sa.Enum(*STATUSES, name='job_status', native_enum=False, create_constraint=True, length=32), server_default='queued', nullable=False))
    op.add_column('outbox_events', sa.Column('attempts', sa.Integer(), server_default='0', nullable=False))
    op.add_column('outbox_events', sa.Column('progress', sa.Integer(), server_default='0', nullable=False))
    op.add_column('outbox_events', sa.Column('result_location', sa.String(length=1024), nullable=True))
    op.add_column('outbox_events', sa.Column('due_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False))
    op.add_column('outbox_events', sa.Column('started_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('outbox_events', sa.Column('rerun_at', sa.DateTime(timezone=True), nullable=True))
    # What the Jobs knew, onto their rows; rows never published are due from their creation.
    op.execute("""
        UPDATE outbox_events o SET study_id = j.study_id, status = j.status, attempts = j.attempts,
               progress = j.progress, error = coalesce(j.error, o.error),
               result_location = j.result_location, started_at = j.started_at
        FROM jobs j WHERE j.outbox_event_id = o.id
    """)
    op.execute("""
        UPDATE outbox_events o SET study_id = s.study_id FROM submissions s
        WHERE o.study_id IS NULL AND s.id = o.subject_id
    """)
    op.execute("UPDATE outbox_events SET due_at = coalesce(lease_until, created_at)")
    op.execute("""
        UPDATE outbox_events SET status = 'succeeded'
        WHERE finished_at IS NOT NULL AND status NOT IN ('succeeded', 'failed')
    """)
    op.drop_column('outbox_events', 'lease_until')
    op.drop_column('outbox_events', 'publish_attempts')
    op.create_foreign_key(op.f('fk_outbox_events_study_id_studies'), 'outbox_events', 'studies', ['study_id'], ['id'], ondelete='CASCADE')
    op.create_index(op.f('ix_outbox_events_study_id'), 'outbox_events', ['study_id'], unique=False)
    op.create_index('ix_outbox_events_status_created', 'outbox_events', ['status', 'created_at'], unique=False)
    op.create_index('ix_outbox_events_due', 'outbox_events', ['due_at'], unique=False, postgresql_where=sa.text(PENDING))
    op.create_index('ix_outbox_events_pending_by_topic', 'outbox_events', ['topic', 'created_at', 'id'], unique=False, postgresql_where=sa.text(PENDING))
    op.drop_index(op.f('ix_dead_letters_job_id'), table_name='dead_letters')
    op.drop_table('dead_letters')
    op.drop_index(op.f('ix_jobs_subject_id'), table_name='jobs')
    op.drop_index(op.f('ix_jobs_study_id'), table_name='jobs')
    op.drop_index('ix_jobs_status_created', table_name='jobs')
    op.drop_table('jobs')


def downgrade() -> None:
    op.create_table('jobs',
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('status', sa.Enum(*STATUSES, name='job_status', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('study_id', sa.Uuid(), nullable=True),
    sa.Column('subject_id', sa.Uuid(), nullable=True),
    sa.Column('outbox_event_id', sa.Uuid(), nullable=True),
    sa.Column('params', JSON, nullable=False),
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
    sa.Column('args', JSON, nullable=False),
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
    op.add_column('outbox_events', sa.Column('publish_attempts', sa.Integer(), server_default='0', nullable=False))
    op.add_column('outbox_events', sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))
    op.execute("""
        UPDATE outbox_events SET lease_until = due_at,
               publish_attempts = CASE WHEN published_at IS NULL THEN 0 ELSE 1 END
    """)
    op.execute("""
        INSERT INTO jobs (id, kind, status, study_id, subject_id, outbox_event_id, params, progress,
                          attempts, error, result_location, created_at, started_at, finished_at)
        SELECT gen_random_uuid(), topic, status, study_id, subject_id, id, payload, progress,
               attempts, error, result_location, created_at, started_at, finished_at
        FROM outbox_events WHERE published_at IS NOT NULL OR finished_at IS NOT NULL
    """)
    op.execute("""
        INSERT INTO dead_letters (id, job_id, task_name, args, error, attempts, failed_at)
        SELECT gen_random_uuid(), j.id, o.topic,
               jsonb_build_object('event_id', o.id::text, 'topic', o.topic, 'payload', o.payload),
               coalesce(o.error, 'failed'), o.attempts, coalesce(o.finished_at, now())
        FROM outbox_events o JOIN jobs j ON j.outbox_event_id = o.id WHERE o.status = 'failed'
    """)
    op.drop_index('ix_outbox_events_pending_by_topic', table_name='outbox_events', postgresql_where=sa.text(PENDING))
    op.drop_index('ix_outbox_events_due', table_name='outbox_events', postgresql_where=sa.text(PENDING))
    op.drop_index('ix_outbox_events_status_created', table_name='outbox_events')
    op.drop_index(op.f('ix_outbox_events_study_id'), table_name='outbox_events')
    op.drop_constraint(op.f('fk_outbox_events_study_id_studies'), 'outbox_events', type_='foreignkey')
    for column in ('rerun_at', 'started_at', 'due_at', 'result_location', 'progress', 'attempts', 'status', 'study_id'):
        op.drop_column('outbox_events', column)
    op.alter_column('outbox_events', 'error', new_column_name='last_error', type_=sa.String(length=2000))
    op.alter_column('outbox_events', 'finished_at', new_column_name='completed_at')
    op.create_index('ix_outbox_events_pending_by_topic', 'outbox_events', ['topic', 'created_at', 'id'], unique=False, postgresql_where=sa.text(PENDING_OLD))
    op.create_index('ix_outbox_events_leased', 'outbox_events', ['lease_until'], unique=False, postgresql_where=sa.text(LEASED_OLD))
    op.create_index('ix_outbox_events_unpublished', 'outbox_events', ['topic', 'created_at', 'id'], unique=False, postgresql_where=sa.text(UNPUBLISHED_OLD))
