"""lz4 for submission payload columns

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 19:20:00

PostgreSQL compresses large values with pglz by default; lz4 costs a fraction of the CPU on
every acknowledged submission for a similar ratio on JSON. PostgreSQL only (14+, built with
lz4, as Debian's and the official images are). A server built without it (the embedded
PostgreSQL of `make run` and the tests) keeps pglz: same data, more CPU.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = [("submissions", "raw_payload"), ("submission_tasks", "trials")]


def _has_lz4() -> bool:
    found = op.get_bind().scalar(
        sa.text(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
            "WHERE name = 'default_toast_compression'"
        )
    )
    return bool(found)


def upgrade() -> None:
    if not _has_lz4():
        return
    for table, column in COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION lz4")


def downgrade() -> None:
    if not _has_lz4():
        return
    for table, column in COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION pglz")
