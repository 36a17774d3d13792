"""refresh token reuse

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 19:32:26.863651
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('user_sessions', sa.Column('previous_refresh_token_hash', sa.String(length=64), nullable=True))
    op.create_index(op.f('ix_user_sessions_previous_refresh_token_hash'), 'user_sessions', ['previous_refresh_token_hash'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_user_sessions_previous_refresh_token_hash'), table_name='user_sessions')
    op.drop_column('user_sessions', 'previous_refresh_token_hash')
