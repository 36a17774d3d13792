"""consent: documents, signatures, withdrawals; participants' language; a session's consent

A consent document is one version of a study's consent text, on a track (study, site or
none, language or none); drafts have no version, publication gives the next one of the track
(the partial unique index, NULLs not distinct so that "no site" and "no language" are one
track). Signatures and withdrawals are history: a trigger refuses to update them. A session
names the signature it started under.

Revision ID: 0017
Revises: 0014
Create Date: 2026-12-05 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0017'
down_revision: str | None = '0016'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PUBLISHED = "version IS NOT NULL"
APPEND_ONLY = """
CREATE FUNCTION consent_history_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'consent history is never changed (% on %)', TG_OP, TG_TABLE_NAME;
END $$
"""


def upgrade() -> None:
    op.add_column('participants', sa.Column('language', sa.String(length=16), nullable=True))
    op.create_table(
        'consent_documents',
        sa.Column('study_id', sa.Uuid(), nullable=False),
        sa.Column('site_id', sa.Uuid(), nullable=True),
        sa.Column('language', sa.String(length=16), nullable=True),
        sa.Column('version', sa.Integer(), nullable=True),
        sa.Column('title', sa.String(length=200), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('requires_reconsent', sa.Boolean(), nullable=False),
        sa.Column('status', sa.Enum('draft', 'published', name='publication_status', native_enum=False, create_constraint=True, length=32), nullable=False),
        sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_by', sa.Uuid(), nullable=True),
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_consent_documents_created_by_users'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_consent_documents_site_id_sites'), ondelete='RESTRICT'),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_consent_documents_study_id_studies'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_consent_documents')),
    )
    op.create_index(op.f('ix_consent_documents_study_id'), 'consent_documents', ['study_id'], unique=False)
    op.create_index('uq_consent_documents_track_version', 'consent_documents', ['study_id', 'site_id', 'language', 'version'], unique=True, postgresql_nulls_not_distinct=True, postgresql_where=sa.text(PUBLISHED))
    op.create_table(
        'consent_records',
        sa.Column('participant_id', sa.Uuid(), nullable=False),
        sa.Column('study_id', sa.Uuid(), nullable=False),
        sa.Column('document_id', sa.Uuid(), nullable=False),
        sa.Column('document_version', sa.Integer(), nullable=False),
        sa.Column('signed_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('attestation_kind', sa.Enum('typed_name', 'checkbox', name='attestation_kind', native_enum=False, create_constraint=True, length=32), nullable=False),
        sa.Column('attestation', sa.String(length=200), nullable=False),
        sa.Column('ip_address', sa.String(length=64), nullable=True),
        sa.Column('app_version', sa.String(length=64), nullable=False),
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(['document_id'], ['consent_documents.id'], name=op.f('fk_consent_records_document_id_consent_documents')),
        sa.ForeignKeyConstraint(['participant_id'], ['participants.id'], name=op.f('fk_consent_records_participant_id_participants'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_consent_records_study_id_studies'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_consent_records')),
    )
    op.create_index('ix_consent_records_participant_signed', 'consent_records', ['participant_id', 'signed_at'], unique=False)
    op.create_table(
        'consent_withdrawals',
        sa.Column('participant_id', sa.Uuid(), nullable=False),
        sa.Column('study_id', sa.Uuid(), nullable=False),
        sa.Column('withdrawn_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('withdrawn_by', sa.Uuid(), nullable=True),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('data_use', sa.Enum('all_data', 'until_withdrawal', 'none', name='consent_data_use', native_enum=False, create_constraint=True, length=32), nullable=False),
        sa.Column('previous_status', sa.String(length=32), nullable=False),
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(['participant_id'], ['participants.id'], name=op.f('fk_consent_withdrawals_participant_id_participants'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_consent_withdrawals_study_id_studies'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['withdrawn_by'], ['users.id'], name=op.f('fk_consent_withdrawals_withdrawn_by_users'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_consent_withdrawals')),
    )
    op.create_index('ix_consent_withdrawals_participant_at', 'consent_withdrawals', ['participant_id', 'withdrawn_at'], unique=False)
    op.add_column('assessment_sessions', sa.Column('consent_record_id', sa.Uuid(), nullable=True))
    op.create_foreign_key(op.f('fk_assessment_sessions_consent_record_id_consent_records'), 'assessment_sessions', 'consent_records', ['consent_record_id'], ['id'])
    # History: a row is added, never changed. (Deleting stays possible: a participant's or a
    # study's deletion cascades to it. withdrawn_by is SET NULL when a user is deleted, so
    # withdrawals only refuse edits of their own columns through the WHEN clause.)
    op.execute(APPEND_ONLY)
    op.execute(
        "CREATE TRIGGER consent_records_append_only BEFORE UPDATE ON consent_records "
        "FOR EACH ROW EXECUTE FUNCTION consent_history_is_append_only()"
    )
    op.execute(
        "CREATE TRIGGER consent_withdrawals_append_only BEFORE UPDATE ON consent_withdrawals "
        "FOR EACH ROW WHEN (OLD.withdrawn_by IS NOT DISTINCT FROM NEW.withdrawn_by) "
        "EXECUTE FUNCTION consent_history_is_append_only()"
    )


def downgrade() -> None:
    op.drop_constraint(op.f('fk_assessment_sessions_consent_record_id_consent_records'), 'assessment_sessions', type_='foreignkey')
    op.drop_column('assessment_sessions', 'consent_record_id')
    op.drop_index('ix_consent_withdrawals_participant_at', table_name='consent_withdrawals')
    op.drop_table('consent_withdrawals')
    op.drop_index('ix_consent_records_participant_signed', table_name='consent_records')
    op.drop_table('consent_records')
    op.drop_index('uq_consent_documents_track_version', table_name='consent_documents', postgresql_nulls_not_distinct=True, postgresql_where=sa.text(PUBLISHED))
    op.drop_index(op.f('ix_consent_documents_study_id'), table_name='consent_documents')
    op.drop_table('consent_documents')
    op.execute("DROP FUNCTION consent_history_is_append_only()")
    op.drop_column('participants', 'language')
