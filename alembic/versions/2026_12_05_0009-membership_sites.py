"""study_membership_sites: a study membership limited to some of the study's sites

A membership with no rows here covers the whole study, as every membership did before, so
existing members keep what they see. site_id is RESTRICT: deleting a site that still limits a
membership must not silently widen that membership to the whole study.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('study_membership_sites',
    sa.Column('membership_id', sa.Uuid(), nullable=False),
    sa.Column('site_id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['membership_id'], ['study_memberships.id'], name=op.f('fk_study_membership_sites_membership_id_study_memberships'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_study_membership_sites_site_id_sites'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('membership_id', 'site_id', name=op.f('pk_study_membership_sites'))
    )
    op.create_index(op.f('ix_study_membership_sites_site_id'), 'study_membership_sites', ['site_id'], unique=False)


def downgrade() -> None:
    # Dropping the limits would widen every site-scoped member to the whole study: refuse
    # while any exist, rather than hand another site's participants to their coordinators.
    scoped = op.get_bind().execute(sa.text('SELECT count(*) FROM study_membership_sites')).scalar()
    if scoped:
        raise RuntimeError(
            f'{scoped} membership site limit(s) exist; downgrading past 0009 would widen those '
            'members to their whole study. Remove the memberships (or their limits) first.'
        )
    op.drop_index(op.f('ix_study_membership_sites_site_id'), table_name='study_membership_sites')
    op.drop_table('study_membership_sites')
