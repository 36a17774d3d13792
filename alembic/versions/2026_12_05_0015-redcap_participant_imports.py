"""redcap_participant_imports: an enrolment from REDCap, run as a job

Participant import from REDCap no longer calls REDCap inside the request's transaction: the
request stores the import's settings here and an outbox row (redcap.import_participants); the
task fetches from REDCap with no transaction open, then writes the participants and the report
here in one transaction. The job's status stays on the outbox row.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 16:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = '0015'
down_revision: str | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('redcap_participant_imports',
    sa.Column('connection_id', sa.Uuid(), nullable=False),
    sa.Column('requested_by', sa.Uuid(), nullable=True),
    sa.Column('settings', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('report', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('problem', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['connection_id'], ['redcap_connections.id'], name=op.f('fk_redcap_participant_imports_connection_id_redcap_connections'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['requested_by'], ['users.id'], name=op.f('fk_redcap_participant_imports_requested_by_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_redcap_participant_imports'))
    )
    op.create_index(op.f('ix_redcap_participant_imports_connection_id'), 'redcap_participant_imports', ['connection_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_redcap_participant_imports_connection_id'), table_name='redcap_participant_imports')
    op.drop_table('redcap_participant_imports')
