"""schedules: visit protocols, each participant's visit occurrences, sessions' visits

visit_occurrences is written in bulk by the schedule sweep (hundreds of thousands of rows at
once): no foreign keys (participants and studies are never deleted), two indexes beside the
key. "What is due now" reads
the partial index on window_start over pending rows (status upcoming or open).

Revision ID: 0016
Revises: 0014
Create Date: 2026-12-05 16:26:26
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0016'
down_revision: str | None = '0015'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('schedule_protocols',
    sa.Column('study_id', sa.Uuid(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('status', sa.Enum('draft', 'published', name='publication_status', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('applies_to', sa.Enum('new_enrolments', 'everyone_from', name='protocol_applies_to', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('effective_from', sa.DateTime(timezone=True), nullable=True),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_schedule_protocols_study_id_studies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_schedule_protocols')),
    sa.UniqueConstraint('study_id', 'version', name=op.f('uq_schedule_protocols_study_id_version'))
    )
    op.create_index(op.f('ix_schedule_protocols_study_id'), 'schedule_protocols', ['study_id'], unique=False)
    op.create_table('schedule_visits',
    sa.Column('protocol_id', sa.Uuid(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=False),
    sa.Column('anchor_visit_key', sa.String(length=64), nullable=True),
    sa.Column('offset_days', sa.Integer(), nullable=False),
    sa.Column('time_of_day', sa.Time(), nullable=False),
    sa.Column('window_before_minutes', sa.Integer(), nullable=False),
    sa.Column('window_after_minutes', sa.Integer(), nullable=False),
    sa.Column('battery_id', sa.Uuid(), nullable=False),
    sa.Column('repeat', sa.Enum('none', 'daily', 'weekly', name='visit_repeat', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('repeat_count', sa.Integer(), nullable=False),
    sa.Column('required', sa.Boolean(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['battery_id'], ['batteries.id'], name=op.f('fk_schedule_visits_battery_id_batteries'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['protocol_id'], ['schedule_protocols.id'], name=op.f('fk_schedule_visits_protocol_id_schedule_protocols'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_schedule_visits')),
    sa.UniqueConstraint('protocol_id', 'key', name=op.f('uq_schedule_visits_protocol_id_key'))
    )
    op.create_table('schedule_assignments',
    sa.Column('participant_id', sa.Uuid(), nullable=False),
    sa.Column('study_id', sa.Uuid(), nullable=False),
    sa.Column('protocol_id', sa.Uuid(), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('anchor_date', sa.Date(), nullable=False),
    sa.Column('assigned_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('participant_id', name=op.f('pk_schedule_assignments'))
    )
    op.create_index(op.f('ix_schedule_assignments_study_id'), 'schedule_assignments', ['study_id'], unique=False)
    op.create_table('visit_occurrences',
    sa.Column('id', sa.Uuid(), server_default=sa.text('gen_random_uuid()'), nullable=False),
    sa.Column('participant_id', sa.Uuid(), nullable=False),
    sa.Column('study_id', sa.Uuid(), nullable=False),
    sa.Column('site_id', sa.Uuid(), nullable=False),
    sa.Column('protocol_id', sa.Uuid(), nullable=False),
    sa.Column('visit_id', sa.Uuid(), nullable=False),
    sa.Column('occurrence', sa.SmallInteger(), nullable=False),
    sa.Column('window_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('window_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.Enum('upcoming', 'open', 'completed', 'missed', 'skipped', 'cancelled', name='visit_status', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('session_id', sa.Uuid(), nullable=True),
    sa.Column('status_reason', sa.String(length=500), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_visit_occurrences'))
    )
    op.create_index('ix_visit_occurrences_participant', 'visit_occurrences', ['participant_id'], unique=False)
    op.create_index('ix_visit_occurrences_due', 'visit_occurrences', ['window_start'], unique=False, postgresql_where=sa.text("status IN ('upcoming', 'open')"))
    op.add_column('assessment_sessions', sa.Column('visit_occurrence_id', sa.Uuid(), nullable=True))
    op.create_foreign_key(op.f('fk_assessment_sessions_visit_occurrence_id_visit_occurrences'), 'assessment_sessions', 'visit_occurrences', ['visit_occurrence_id'], ['id'], ondelete='SET NULL')


def downgrade() -> None:
    op.drop_constraint(op.f('fk_assessment_sessions_visit_occurrence_id_visit_occurrences'), 'assessment_sessions', type_='foreignkey')
    op.drop_column('assessment_sessions', 'visit_occurrence_id')
    op.drop_index('ix_visit_occurrences_due', table_name='visit_occurrences', postgresql_where=sa.text("status IN ('upcoming', 'open')"))
    op.drop_index('ix_visit_occurrences_participant', table_name='visit_occurrences')
    op.drop_table('visit_occurrences')
    op.drop_index(op.f('ix_schedule_assignments_study_id'), table_name='schedule_assignments')
    op.drop_table('schedule_assignments')
    op.drop_table('schedule_visits')
    op.drop_index(op.f('ix_schedule_protocols_study_id'), table_name='schedule_protocols')
    op.drop_table('schedule_protocols')
