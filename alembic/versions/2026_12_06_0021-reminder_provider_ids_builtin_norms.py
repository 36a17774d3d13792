"""reminder messages found by their provider's id (delivery callbacks); psychometrics added to
built-in module rows written before the built-ins declared them

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 02:50:00
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0021'
down_revision: str | None = '0020'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        'ix_reminder_messages_provider_message_id', 'reminder_messages',
        ['provider', 'provider_message_id'],
        postgresql_where=sa.text('provider_message_id IS NOT NULL'),
    )
    from server.modules.builtin_backfill import backfilled

    conn = op.get_bind()
    rows = conn.execute(sa.text('SELECT id, key, version, metrics FROM modules')).all()
    for row in rows:
        metrics = row.metrics if isinstance(row.metrics, list) else json.loads(row.metrics)
        updated = backfilled(row.key, row.version, metrics)
        if updated is not None:
            conn.execute(
                sa.text('UPDATE modules SET metrics = CAST(:m AS jsonb) WHERE id = :id'),
                {'m': json.dumps(updated), 'id': row.id},
            )


def downgrade() -> None:
    # The psychometrics stay: they only add interpretation to the rows, and the code of every
    # revision reads rows with them.
    op.drop_index('ix_reminder_messages_provider_message_id', table_name='reminder_messages')
