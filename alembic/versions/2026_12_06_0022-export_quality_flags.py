"""export_quality_flags: the data-quality flags an export read, so a freeze re-runs to the
same bytes after its sessions' checks are recomputed

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06 04:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0022'
down_revision: str | None = '0021'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'export_quality_flags',
        sa.Column('export_id', sa.Uuid(), nullable=False),
        sa.Column('session_id', sa.Uuid(), nullable=False),
        sa.Column('rule', sa.String(length=64), nullable=False),
        sa.Column('fired', sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(['export_id'], ['exports.id'], name=op.f('fk_export_quality_flags_export_id_exports'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('export_id', 'session_id', 'rule', name=op.f('pk_export_quality_flags')),
    )
    # Exports built before this read the checks of the day; their freezes' re-runs now read
    # the flags recorded here, so record what those checks hold now (the best there is).
    op.execute(
        """
        INSERT INTO export_quality_flags (export_id, session_id, rule, fired)
        SELECT e.export_id, q.session_id, q.rule, bool_or(q.fired)
        FROM (SELECT DISTINCT es.export_id, s.session_id FROM export_submissions es
              JOIN submissions s ON s.id = es.submission_id) e
        JOIN quality_checks q ON q.session_id = e.session_id
        GROUP BY e.export_id, q.session_id, q.rule
        """
    )


def downgrade() -> None:
    op.drop_table('export_quality_flags')
