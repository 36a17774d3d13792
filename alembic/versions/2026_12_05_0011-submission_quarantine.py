"""submissions: quarantine status, its problems, and who reprocessed it when

A submission whose tasks do not fit their modules is stored quarantined (with its problems)
instead of being refused; a coordinator reprocesses it later. Existing rows were all accepted
(anything else was refused), hence the server default. The partial index serves the
coordinators' quarantine list of a study without indexing the accepted rows.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 08:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUARANTINED = "status = 'quarantined'"


def upgrade() -> None:
    op.add_column('submissions', sa.Column('status', sa.Enum('accepted', 'quarantined', name='submission_status', native_enum=False, create_constraint=True, length=32), server_default='accepted', nullable=False))
    op.add_column('submissions', sa.Column('problems', postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column('submissions', sa.Column('reprocessed_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('submissions', sa.Column('reprocessed_by', sa.Uuid(), nullable=True))
    op.create_foreign_key(op.f('fk_submissions_reprocessed_by_users'), 'submissions', 'users', ['reprocessed_by'], ['id'], ondelete='SET NULL')
    op.create_index('ix_submissions_quarantined', 'submissions', ['study_id', 'received_at', 'id'], unique=False, postgresql_where=sa.text(QUARANTINED))


def downgrade() -> None:
    op.drop_index('ix_submissions_quarantined', table_name='submissions', postgresql_where=sa.text(QUARANTINED))
    op.drop_constraint(op.f('fk_submissions_reprocessed_by_users'), 'submissions', type_='foreignkey')
    op.drop_column('submissions', 'reprocessed_by')
    op.drop_column('submissions', 'reprocessed_at')
    op.drop_column('submissions', 'problems')
    op.drop_column('submissions', 'status')
