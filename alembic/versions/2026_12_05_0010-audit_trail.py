"""audit trail: append-only, hash-chained entries of staff actions and data access; auditors

users.is_auditor: a read-only role that may read the audit trail and nothing else.

audit_entries holds the entries, audit_chain_head the chain's last link (one row, seq 0 and
32 zero bytes to start). A trigger refuses UPDATE, DELETE and TRUNCATE of audit_entries for
every role, the owner included (the owner can still disable it: tamper evidence is the hash
chain, `python -m server audit verify`). Where the application connects as a role of its own
(DATABASE_APP_ROLE, set when this migration runs; deploy/README.md), that role gets only
SELECT and INSERT on the entries, and SELECT and UPDATE on the head.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 08:00:00
"""

import os
import re
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = """
CREATE FUNCTION audit_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_entries is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""


def _app_role() -> str | None:
    role = os.environ.get('DATABASE_APP_ROLE', '').strip()
    if not role:
        return None
    if not re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]{0,62}', role):
        raise ValueError(f'DATABASE_APP_ROLE is not a plain role name: {role!r}')
    return role


def upgrade() -> None:
    op.add_column('users', sa.Column('is_auditor', sa.Boolean(), server_default='false', nullable=False))
    op.create_table('audit_entries',
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor_id', sa.Uuid(), nullable=True),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('object_type', sa.String(length=64), nullable=False),
    sa.Column('object_id', sa.String(length=64), nullable=True),
    sa.Column('study_id', sa.Uuid(), nullable=True),
    sa.Column('site_id', sa.Uuid(), nullable=True),
    sa.Column('request_id', sa.String(length=128), nullable=True),
    sa.Column('client_ip', sa.String(length=64), nullable=True),
    sa.Column('summary', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('hash', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_audit_entries'))
    )
    op.create_index('ix_audit_entries_study_seq', 'audit_entries', ['study_id', 'seq'], unique=False)
    op.create_index('ix_audit_entries_actor_seq', 'audit_entries', ['actor_id', 'seq'], unique=False)
    op.create_index('ix_audit_entries_object_seq', 'audit_entries', ['object_id', 'seq'], unique=False)
    op.create_index('ix_audit_entries_occurred_at', 'audit_entries', ['occurred_at'], unique=False)
    op.create_table('audit_chain_head',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('hash', sa.LargeBinary(), nullable=False),
    sa.CheckConstraint('id = 1', name=op.f('ck_audit_chain_head_single_row')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_chain_head'))
    )
    op.execute("INSERT INTO audit_chain_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'))")
    op.execute(APPEND_ONLY)
    op.execute(
        'CREATE TRIGGER audit_entries_no_update_delete BEFORE UPDATE OR DELETE ON audit_entries '
        'FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only()'
    )
    op.execute(
        'CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries '
        'FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_append_only()'
    )
    role = _app_role()
    if role is not None:
        op.execute(f'REVOKE ALL ON audit_entries, audit_chain_head FROM "{role}"')
        op.execute(f'GRANT SELECT, INSERT ON audit_entries TO "{role}"')
        op.execute(f'GRANT SELECT, UPDATE ON audit_chain_head TO "{role}"')


def downgrade() -> None:
    op.drop_table('audit_chain_head')
    op.execute('DROP TRIGGER audit_entries_no_truncate ON audit_entries')
    op.execute('DROP TRIGGER audit_entries_no_update_delete ON audit_entries')
    op.execute('DROP FUNCTION audit_entries_append_only()')
    op.drop_index('ix_audit_entries_occurred_at', table_name='audit_entries')
    op.drop_index('ix_audit_entries_object_seq', table_name='audit_entries')
    op.drop_index('ix_audit_entries_actor_seq', table_name='audit_entries')
    op.drop_index('ix_audit_entries_study_seq', table_name='audit_entries')
    op.drop_table('audit_entries')
    op.drop_column('users', 'is_auditor')
