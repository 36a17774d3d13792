"""reminders: rules, messages, dispatch watermark, coordinator tasks, message templates;
contact details encrypted at rest with opt-outs per channel

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 02:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = '0020'
down_revision: str | None = '0019'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=32)


def _box():  # type: ignore[no-untyped-def]
    # The running settings' key: the same one the app decrypts with.
    from server.core.config import load_settings
    from server.core.crypto import token_box

    return token_box(load_settings())


def upgrade() -> None:
    op.create_table(
        'reminder_rules',
        sa.Column('study_id', sa.Uuid(), nullable=False),
        sa.Column('visit_id', sa.Uuid(), nullable=False),
        sa.Column('trigger', _enum('reminder_trigger', 'window_open', 'before_close', 'missed'), nullable=False),
        sa.Column('hours_before_close', sa.SmallInteger(), nullable=False),
        sa.Column('channels', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('quiet_start', sa.Time(), nullable=False),
        sa.Column('quiet_end', sa.Time(), nullable=False),
        sa.Column('stale_after_minutes', sa.Integer(), nullable=False),
        sa.Column('escalate_to_sms_after_hours', sa.Integer(), nullable=True),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_reminder_rules_study_id_studies'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['visit_id'], ['schedule_visits.id'], name=op.f('fk_reminder_rules_visit_id_schedule_visits'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_reminder_rules')),
        sa.UniqueConstraint('visit_id', 'trigger', 'hours_before_close', name=op.f('uq_reminder_rules_visit_id_trigger_hours_before_close')),
    )
    op.create_index(op.f('ix_reminder_rules_study_id'), 'reminder_rules', ['study_id'])
    op.create_table(
        'reminder_messages',
        sa.Column('id', sa.Uuid(), server_default=sa.text('gen_random_uuid()'), nullable=False),
        sa.Column('study_id', sa.Uuid(), nullable=False),
        sa.Column('site_id', sa.Uuid(), nullable=False),
        sa.Column('participant_id', sa.Uuid(), nullable=False),
        sa.Column('occurrence_id', sa.Uuid(), nullable=False),
        sa.Column('rule_id', sa.Uuid(), nullable=False),
        sa.Column('channel', _enum('reminder_channel', 'email', 'sms', 'push'), nullable=False),
        sa.Column('kind', _enum('reminder_message_kind', 'reminder', 'missed_visit', 'escalation'), nullable=False),
        sa.Column('moment', sa.DateTime(timezone=True), nullable=False),
        sa.Column('send_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('escalate_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('status', _enum('reminder_message_status', 'queued', 'sending', 'retrying', 'sent', 'delivered', 'failed', 'skipped', 'cancelled'), nullable=False),
        sa.Column('attempts', sa.SmallInteger(), nullable=False),
        sa.Column('provider', sa.String(length=32), nullable=True),
        sa.Column('provider_message_id', sa.String(length=255), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('job_id', sa.Uuid(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_reminder_messages')),
        sa.UniqueConstraint('occurrence_id', 'rule_id', 'channel', name=op.f('uq_reminder_messages_occurrence_id_rule_id_channel')),
    )
    op.create_index('ix_reminder_messages_participant', 'reminder_messages', ['participant_id'])
    op.create_index('ix_reminder_messages_study_created', 'reminder_messages', ['study_id', 'created_at'])
    op.create_index('ix_reminder_messages_escalation', 'reminder_messages', ['escalate_at'], postgresql_where=sa.text('escalate_at IS NOT NULL'))
    op.create_table(
        'reminder_dispatch',
        sa.Column('id', sa.SmallInteger(), nullable=False),
        sa.Column('through', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_reminder_dispatch')),
    )
    op.create_table(
        'coordinator_tasks',
        sa.Column('study_id', sa.Uuid(), nullable=False),
        sa.Column('site_id', sa.Uuid(), nullable=False),
        sa.Column('participant_id', sa.Uuid(), nullable=False),
        sa.Column('occurrence_id', sa.Uuid(), nullable=False),
        sa.Column('kind', _enum('coordinator_task_kind', 'missed_visit'), nullable=False),
        sa.Column('title', sa.String(length=300), nullable=False),
        sa.Column('status', _enum('coordinator_task_status', 'open', 'closed'), nullable=False),
        sa.Column('note', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('closed_by', sa.Uuid(), nullable=True),
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(['closed_by'], ['users.id'], name=op.f('fk_coordinator_tasks_closed_by_users'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['participant_id'], ['participants.id'], name=op.f('fk_coordinator_tasks_participant_id_participants'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_coordinator_tasks_site_id_sites'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_coordinator_tasks_study_id_studies'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_coordinator_tasks')),
        sa.UniqueConstraint('occurrence_id', 'kind', name=op.f('uq_coordinator_tasks_occurrence_id_kind')),
    )
    op.create_index('ix_coordinator_tasks_study_status', 'coordinator_tasks', ['study_id', 'status', 'created_at'])
    op.create_table(
        'message_templates',
        sa.Column('study_id', sa.Uuid(), nullable=False),
        sa.Column('kind', _enum('template_kind', 'invitation', 'reminder', 'missed_visit', 'consent_update'), nullable=False),
        sa.Column('language', sa.String(length=16), nullable=False),
        sa.Column('subject', sa.String(length=200), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_message_templates_study_id_studies'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_message_templates')),
        sa.UniqueConstraint('study_id', 'kind', 'language', name=op.f('uq_message_templates_study_id_kind_language')),
    )
    op.create_index('ix_visit_occurrences_closing', 'visit_occurrences', ['window_end'], postgresql_where=sa.text("status IN ('upcoming', 'open', 'missed')"))

    # Contacts: encrypted columns and opt-outs; the plain values are sealed, then dropped.
    op.add_column('participant_contacts', sa.Column('email_enc', sa.LargeBinary(), nullable=True))
    op.add_column('participant_contacts', sa.Column('phone_enc', sa.LargeBinary(), nullable=True))
    op.add_column('participant_contacts', sa.Column('push_enc', sa.LargeBinary(), nullable=True))
    for column in ('email_opt_out', 'sms_opt_out', 'push_opt_out'):
        op.add_column('participant_contacts', sa.Column(column, sa.Boolean(), nullable=False, server_default=sa.false()))
        op.alter_column('participant_contacts', column, server_default=None)
    conn = op.get_bind()
    rows = conn.execute(sa.text('SELECT participant_id, email, phone FROM participant_contacts')).all()
    if rows:
        box = _box()
        conn.execute(
            sa.text('UPDATE participant_contacts SET email_enc = :e, phone_enc = :p WHERE participant_id = :id'),
            [
                {'id': r.participant_id,
                 'e': None if r.email is None else box.encrypt(r.email),
                 'p': None if r.phone is None else box.encrypt(r.phone)}
                for r in rows
            ],
        )
    op.drop_column('participant_contacts', 'email')
    op.drop_column('participant_contacts', 'phone')


def downgrade() -> None:
    op.add_column('participant_contacts', sa.Column('email', sa.String(length=320), nullable=True))
    op.add_column('participant_contacts', sa.Column('phone', sa.String(length=32), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(sa.text('SELECT participant_id, email_enc, phone_enc FROM participant_contacts')).all()
    if rows:
        box = _box()
        conn.execute(
            sa.text('UPDATE participant_contacts SET email = :e, phone = :p WHERE participant_id = :id'),
            [
                {'id': r.participant_id,
                 'e': None if r.email_enc is None else box.decrypt(r.email_enc),
                 'p': None if r.phone_enc is None else box.decrypt(r.phone_enc)}
                for r in rows
            ],
        )
    for column in ('email_enc', 'phone_enc', 'push_enc', 'email_opt_out', 'sms_opt_out', 'push_opt_out'):
        op.drop_column('participant_contacts', column)
    op.drop_index('ix_visit_occurrences_closing', table_name='visit_occurrences')
    op.drop_table('message_templates')
    op.drop_index('ix_coordinator_tasks_study_status', table_name='coordinator_tasks')
    op.drop_table('coordinator_tasks')
    op.drop_table('reminder_dispatch')
    op.drop_index('ix_reminder_messages_escalation', table_name='reminder_messages')
    op.drop_index('ix_reminder_messages_study_created', table_name='reminder_messages')
    op.drop_index('ix_reminder_messages_participant', table_name='reminder_messages')
    op.drop_table('reminder_messages')
    op.drop_index(op.f('ix_reminder_rules_study_id'), table_name='reminder_rules')
    op.drop_table('reminder_rules')
