"""sync states: an index for the claim's instance numbering

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 20:35:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_redcap_sync_states_numbering', 'redcap_sync_states', ['connection_id', 'instrument', 'record_id', 'event', 'instance'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_redcap_sync_states_numbering', table_name='redcap_sync_states')
